//! The follower thread of a node on a shared store: it tails the log so that the read side
//! (verify, authentication, audit queries) reflects what every node committed.
//!
//! Each turn it reads the head, fetches the entries past what this node has published,
//! checks that they extend the published tree to the head's signed checkpoint, and
//! publishes them; then it waits for an append notice (PostgreSQL `LISTEN`/`NOTIFY`) or for
//! a poll interval of a quarter of the allowed staleness, whichever comes first. Each turn
//! that reaches the head confirms that the node is current as of the moment it read the
//! head; a node whose follower cannot do that within `max_staleness` stops answering (see
//! [`super::Ledger::is_current`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Shared;
use super::open::open_checkpoint;
use crate::crypto::merkle;
use crate::crypto::seal;
use crate::store::StoreError;

/// Longest pause between turns after a failure.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

pub(super) struct Follower {
    shared: Arc<Shared>,
    poll: Duration,
}

impl Follower {
    pub(super) fn new(shared: Arc<Shared>) -> Follower {
        let poll = (shared.max_staleness / 4).max(Duration::from_millis(10));
        Follower { shared, poll }
    }

    pub(super) fn run(self) {
        let mut backoff = Duration::from_millis(20);
        let mut failing = false;
        while !self.shared.stopping.load(Ordering::SeqCst) {
            match self.turn() {
                Ok(()) => {
                    if failing {
                        tracing::info!(store = %self.shared.store.describe(), "following the log again");
                        failing = false;
                    }
                    backoff = Duration::from_millis(20);
                    let size = self.published();
                    if let Err(e) = self.shared.store.wait_for_change(size, self.poll) {
                        tracing::debug!(error = %e, "waiting for appends failed");
                        std::thread::sleep(self.poll.min(backoff));
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, store = %self.shared.store.describe(), "cannot follow the log; this node answers 503 until it can");
                        failing = true;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    fn published(&self) -> u64 {
        self.shared
            .read
            .checkpoint
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .checkpoint
            .size
    }

    /// One turn: catch the read side up with the head, and confirm currency.
    fn turn(&self) -> Result<(), StoreError> {
        let asked_at = Instant::now();
        // Read what is published before the head: everything published was committed
        // first, so a head below it means the store lost committed entries.
        let published = self.published();
        let head = self.shared.store.head()?;
        if head.size < published {
            return Err(StoreError::Corrupt(format!(
                "the log went backwards: the store's head is at {} but this node published {published} entries",
                head.size
            )));
        }
        if head.size > published {
            let note = head.checkpoint.as_deref().unwrap_or("");
            let checkpoint = open_checkpoint(note, &self.shared.verifier)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let mut entries = Vec::with_capacity((head.size - published) as usize);
            for item in self.shared.store.entries(published, head.size) {
                let (seq, bytes) = item?;
                let entry = seal::parse_authenticated(&bytes)
                    .map_err(|e| StoreError::Corrupt(format!("entry {seq}: {e}")))?;
                if entry.seq != seq {
                    return Err(StoreError::Corrupt(format!(
                        "entry {seq} says it is seq {}",
                        entry.seq
                    )));
                }
                entries.push((Arc::new(entry), merkle::leaf_hash(&bytes)));
            }
            self.shared
                .publish(&entries, checkpoint)
                .map_err(StoreError::Corrupt)?;
        }
        self.shared.confirm_current(asked_at);
        Ok(())
    }
}
