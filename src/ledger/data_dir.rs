//! The data dir's permissions: it holds the signing key, names, emails and secret hashes,
//! so it is private to the user running keyledger.
//!
//! Invariants: a data dir keyledger creates is mode 0700 (and every file in it 0600, which
//! the binary ensures with a umask of 077 and the code with explicit modes); a data dir that
//! exists with any group or other permission is refused before anything is read from it,
//! with the `chmod` that fixes it, as PostgreSQL refuses a loose `PGDATA`.

use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, bail};

use crate::store::StoreError;

/// Creates `dir` (and missing parents) as 0700 when it does not exist; refuses one that
/// group or others may use.
pub fn prepare(dir: &Path) -> anyhow::Result<()> {
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => bail!("{} exists and is not a directory", dir.display()),
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                bail!(
                    "{} is accessible by group or others (mode {mode:o}); it holds the signing \
                     key and the log, so keyledger refuses it: run `chmod 700 {}`",
                    dir.display(),
                    dir.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == ErrorKind::NotFound => create_private_dir(dir),
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
    }
}

/// Creates a directory (and its missing parents) with mode 0700.
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// Says why the store in `path` could not be opened, naming the real cause: a running
/// server holds sled's lock, the directory is not writable (sled opens its files
/// read-write even to read), or the file system is read-only.
pub fn explain_open_error(path: &Path, error: &StoreError) -> String {
    let shown = path.display();
    let io_kind = match error {
        StoreError::Io(e) => Some((e.kind(), e.to_string())),
        _ => None,
    };
    match io_kind {
        Some((_, text)) if text.contains("could not acquire lock") => {
            format!("{shown} is in use: a keyledger server is still running on it; stop it first")
        }
        Some((ErrorKind::PermissionDenied, _)) => format!(
            "cannot open {shown} for writing (permission denied): keyledger's store opens its \
             files read-write even to read them; run it as the directory's owner"
        ),
        Some((ErrorKind::ReadOnlyFilesystem, _)) => format!(
            "cannot open {shown}: the file system is read-only, and keyledger's store opens its \
             files read-write even to read them; copy the data dir to a writable place"
        ),
        _ => format!("cannot open {shown}: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_private_and_refuses_loose() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("a/b/data");
        prepare(&dir).expect("create");
        let mode = std::fs::metadata(&dir).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        prepare(&dir).expect("a private dir is accepted");
        for loose in [0o750, 0o705, 0o755, 0o777, 0o740] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(loose)).expect("chmod");
            let err = prepare(&dir).expect_err("loose mode refused").to_string();
            assert!(
                err.contains(&format!("chmod 700 {}", dir.display())),
                "{err}"
            );
            assert!(err.contains(&format!("{loose:o}")), "{err}");
        }
        let file = tmp.path().join("file");
        std::fs::write(&file, b"x").expect("write");
        assert!(prepare(&file).is_err());
    }
}
