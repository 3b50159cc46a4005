//! The projection snapshot: a node-local cache of the read side (state and projections) at
//! some tree size, so start-up can skip parsing and applying the entries it covers.
//!
//! It is never a source of truth: it carries the tree root at its size, and start-up uses
//! it only if that root equals the one recomputed from the log, so a snapshot of another
//! log, of a rolled-back log or of another build is ignored and the log replayed instead.
//! The file is written aside, fsynced and renamed over the old one, so a crash leaves the
//! old snapshot or the new one, never half of one; it is mode 0600, like everything in the
//! data dir.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::crypto::merkle::Hash;
use crate::domain::State;
use crate::projections::Projections;

/// File name of the snapshot inside its directory.
pub const SNAPSHOT_FILE: &str = "keyledger-projections.bin";

/// A snapshot of the read side at some tree size.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    pub size: u64,
    pub root: Hash,
    pub state: State,
    pub projections: Projections,
}

/// The same layout, borrowed, for writing.
#[derive(serde::Serialize)]
pub struct SnapshotRef<'a> {
    pub size: u64,
    pub root: Hash,
    pub state: &'a State,
    pub projections: &'a Projections,
}

/// Where a node keeps its snapshot.
#[derive(Clone, Debug)]
pub struct SnapshotFile {
    path: PathBuf,
}

impl SnapshotFile {
    /// The snapshot file inside `dir` (which must exist).
    pub fn in_dir(dir: &Path) -> SnapshotFile {
        SnapshotFile {
            path: dir.join(SNAPSHOT_FILE),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The snapshot, if one was saved and decodes; a damaged or foreign-format one is
    /// logged and ignored.
    pub fn load(&self) -> Option<Snapshot> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the projection snapshot; replaying the log");
                return None;
            }
        };
        match crate::codec::decode::<Snapshot>(&bytes) {
            Ok(snapshot) if snapshot.state.size == snapshot.size => Some(snapshot),
            Ok(_) => {
                tracing::warn!("the projection snapshot is inconsistent; replaying the log");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "the projection snapshot does not decode; replaying the log");
                None
            }
        }
    }

    /// Replaces the snapshot durably (all or nothing).
    pub fn save(&self, snapshot: &SnapshotRef<'_>) -> std::io::Result<()> {
        let bytes = crate::codec::encode(snapshot).map_err(std::io::Error::other)?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let tmp = self.path.with_extension("bin.tmp");
        {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        File::open(dir)?.sync_all()
    }
}
