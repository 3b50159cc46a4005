//! The signing key file: `signing.key` in the data dir, in Go's `note` private-key form
//! (`PRIVATE+KEY+<origin>+<hex8>+<base64>`), so the file also records the log's origin.
//!
//! Invariants: the file is created with mode 0600 and never rewritten; a key file readable
//! by group or others is refused at start, as ssh refuses a world-readable private key.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, bail};
use ed25519_dalek::SigningKey;
use rand::TryRng;
use zeroize::Zeroizing;

use crate::crypto::note::NoteSigner;

/// File name of the signing key inside the data dir.
pub const KEY_FILE: &str = "signing.key";

/// Loads the signing key, or creates it (mode 0600) when the data dir has none yet.
/// `origin` is the requested origin: required to match an existing key's, used for a new one.
pub fn load_or_create(
    data_dir: &Path,
    origin: Option<&str>,
    default_origin: &str,
) -> anyhow::Result<(NoteSigner, bool)> {
    let path = data_dir.join(KEY_FILE);
    if path.exists() {
        return Ok((load_signer(&path, origin)?, false));
    }
    let signer = generate(origin.unwrap_or(default_origin))?;
    super::data_dir::create_private_dir(data_dir)?;
    write_new_key(&path, &signer)?;
    Ok((signer, true))
}

/// Loads a signing key file, refusing one that group or others may read. With `origin`,
/// the key must be that log's.
pub fn load_signer(path: &Path, origin: Option<&str>) -> anyhow::Result<NoteSigner> {
    let mode = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "{} is readable by group or others (mode {:o}); run `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            path.display()
        );
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
    );
    let signer = NoteSigner::from_private_key_string(text.trim())
        .with_context(|| format!("{} is not a valid signing key", path.display()))?;
    if let Some(origin) = origin {
        if origin != signer.name() {
            bail!(
                "--origin {origin:?} differs from this log's origin {:?}; the origin is fixed when the log is created",
                signer.name()
            );
        }
    }
    Ok(signer)
}

/// A new signing key for a log named `origin`, from the OS CSPRNG (not yet on disk).
pub fn generate(origin: &str) -> anyhow::Result<NoteSigner> {
    let mut seed = Zeroizing::new([0u8; 32]);
    rand::rngs::SysRng
        .try_fill_bytes(seed.as_mut())
        .context("the operating system's random number generator failed")?;
    NoteSigner::new(origin, SigningKey::from_bytes(&seed))
        .with_context(|| format!("{origin:?} is not a valid origin (no spaces or '+')"))
}

/// Writes a new key file: created exclusively (never over an existing one), mode 0600,
/// fsynced with its directory.
pub fn write_new_key(path: &Path, signer: &NoteSigner) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let text = Zeroizing::new(signer.to_private_key_string() + "\n");
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))?;
    Ok(())
}
