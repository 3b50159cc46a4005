//! The writer thread: the only code of a node that appends to the log.
//!
//! Each turn it takes the first waiting message and everything else already queued (up to
//! [`MAX_BATCH`]): while one batch is being committed, the next one gathers, so concurrent
//! commands share one commit (group commit). Per batch: lock the head → catch up with what
//! other nodes appended → decide → sign → extend the tree → sign the checkpoint → commit →
//! publish → answer. Every answer, refusals included, is sent after the batch's commit,
//! because a command's outcome may depend on an earlier command in the same batch; when
//! the commit fails, every command of the batch is refused with the failure, since the
//! decisions were made against entries that never landed.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::open::open_checkpoint;
use super::{CheckpointState, LedgerError, MAX_BATCH, Message, Receipt, Shared, WriteRequest};
use crate::crypto::merkle::{self, Frontier, Hash};
use crate::crypto::note::{Checkpoint, NoteSigner};
use crate::crypto::seal;
use crate::domain::{self, Clock, Entry, State, chain};
use crate::store::{CommitBatch, HeadLock, StoreError};

/// How long a commit whose outcome is unknown is looked into before giving up.
const SETTLE_FOR: Duration = Duration::from_secs(10);

type Reply = (
    oneshot::Sender<Result<Receipt, LedgerError>>,
    Result<Receipt, LedgerError>,
);

pub(super) struct Writer {
    shared: Arc<Shared>,
    signer: NoteSigner,
    clock: Arc<dyn Clock>,
    /// The write model: the log as last seen under the head lock, plus the current batch's
    /// entries before they are durable.
    state: State,
    frontier: Frontier,
    /// False after a failed commit: the write model may hold entries that never landed, so
    /// it is rebuilt from the read side (and caught up under the lock) before the next batch.
    trusted: bool,
    /// Set for good when the store can no longer be written (sled after a failed fsync).
    failed: bool,
}

/// What other nodes appended since this writer last looked, checked against the head's
/// signed checkpoint.
#[derive(Default)]
struct CaughtUp {
    entries: Vec<(Arc<Entry>, Hash)>,
    /// The head's checkpoint, when there was anything to catch up with.
    checkpoint: Option<CheckpointState>,
}

/// How a commit whose connection failed turned out.
enum Settled {
    Committed,
    NotCommitted,
    Unknown,
}

impl Writer {
    pub(super) fn new(
        shared: Arc<Shared>,
        signer: NoteSigner,
        clock: Arc<dyn Clock>,
        state: State,
        frontier: Frontier,
    ) -> Writer {
        Writer {
            shared,
            signer,
            clock,
            state,
            frontier,
            trusted: true,
            failed: false,
        }
    }

    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Message>) {
        while let Some(first) = rx.blocking_recv() {
            let mut batch = Vec::new();
            let mut shutdown = None;
            match first {
                Message::Write(request) => batch.push(request),
                Message::Shutdown(done) => shutdown = Some(done),
            }
            while shutdown.is_none() && batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(Message::Write(request)) => batch.push(request),
                    Ok(Message::Shutdown(done)) => shutdown = Some(done),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                self.commit(batch, &mut rx, &mut shutdown);
            }
            if let Some(done) = shutdown {
                rx.close();
                // Commands queued behind the shutdown are refused, not dropped silently.
                while let Ok(message) = rx.try_recv() {
                    if let Message::Write(request) = message {
                        let _ = request.reply.send(Err(LedgerError::Unavailable));
                    }
                }
                let _ = done.send(());
                return;
            }
        }
    }

    /// Rebuilds the write model from the read side, after a failed commit.
    fn reset(&mut self) {
        let read = &self.shared.read;
        let frontier = read.frontier.lock().unwrap_or_else(|p| p.into_inner());
        let state = read.state.read().unwrap_or_else(|p| p.into_inner());
        self.state = state.clone();
        self.frontier = frontier.clone();
        self.trusted = true;
    }

    fn refuse_all(requests: Vec<WriteRequest>, error: LedgerError) {
        for request in requests {
            let _ = request.reply.send(Err(error.clone()));
        }
    }

    /// What a store failure means for this batch's callers and for the writer.
    fn store_failed(&mut self, error: &StoreError) -> LedgerError {
        if !self.shared.shared_store || matches!(error, StoreError::Poisoned) {
            tracing::error!(error = %error, "commit failed; refusing further writes until restart");
            self.failed = true;
            self.shared.available.store(false, Ordering::SeqCst);
            self.shared.metrics.count_commit_failure();
            return LedgerError::Unavailable;
        }
        tracing::warn!(error = %error, store = %self.shared.store.describe(), "the store refused an append; will retry with the next command");
        self.shared.metrics.count_commit_failure();
        LedgerError::Unreachable
    }

    fn commit(
        &mut self,
        mut requests: Vec<WriteRequest>,
        rx: &mut mpsc::Receiver<Message>,
        shutdown: &mut Option<oneshot::Sender<()>>,
    ) {
        if self.failed {
            return Writer::refuse_all(requests, LedgerError::Unavailable);
        }
        if !self.trusted {
            self.reset();
        }
        let store = self.shared.store.clone();
        let mut lock = match store.lock_head() {
            Ok(lock) => lock,
            Err(e) => {
                let error = self.store_failed(&e);
                return Writer::refuse_all(requests, error);
            }
        };
        let locked_at = Instant::now();
        // While this node waited for the lock (another node held it), more commands
        // arrived: they join this batch, so that contention makes batches larger rather
        // than the lock busier.
        while shutdown.is_none() && requests.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Message::Write(request)) => requests.push(request),
                Ok(Message::Shutdown(done)) => *shutdown = Some(done),
                Err(_) => break,
            }
        }
        let caught_up = match self.catch_up(lock.as_mut()) {
            Ok(caught_up) => caught_up,
            Err(e) => {
                self.trusted = false;
                let error = self.store_failed(&e);
                return Writer::refuse_all(requests, error);
            }
        };
        let started = Instant::now();
        let commands = requests.len();
        let (replies, batch) = match self.decide(requests) {
            Ok(decided) => decided,
            Err(()) => return,
        };
        if batch.entries.is_empty() {
            // Nothing to write (only refusals and no-ops): the lock is released unused.
            drop(lock);
            self.finish(caught_up, &[], None, locked_at);
            for (reply, outcome) in replies {
                let _ = reply.send(outcome);
            }
            return;
        }
        let checkpoint = match self.sign_checkpoint() {
            Ok(checkpoint) => checkpoint,
            Err(()) => {
                self.trusted = false;
                self.fail_replies(replies, LedgerError::Unavailable);
                return;
            }
        };
        let mut batch = batch;
        batch.checkpoint = checkpoint.note.clone();
        let committed = match lock.commit(&batch) {
            Ok(times) => {
                let entries = replies
                    .iter()
                    .filter_map(|(_, outcome)| outcome.as_ref().ok())
                    .map(|receipt| receipt.entries.len())
                    .sum();
                self.shared
                    .metrics
                    .count_commit(commands, entries, started.elapsed(), times.sync);
                Ok(())
            }
            Err(StoreError::Ambiguous(why)) => {
                tracing::warn!(error = %why, "the connection failed during COMMIT; settling the outcome");
                match self.settle(&batch) {
                    Settled::Committed => Ok(()),
                    Settled::NotCommitted => Err(LedgerError::Unreachable),
                    Settled::Unknown => Err(LedgerError::Unknown),
                }
            }
            Err(e) => Err(self.store_failed(&e)),
        };
        match committed {
            Ok(()) => {
                let own: Vec<&Entry> = replies
                    .iter()
                    .filter_map(|(_, outcome)| outcome.as_ref().ok())
                    .flat_map(|receipt| &receipt.entries)
                    .collect();
                // The leaves were hashed when the tree was extended: they are the batch's
                // level-0 nodes, in seq order.
                let own_leaves: Vec<Hash> = batch
                    .nodes
                    .iter()
                    .filter(|(level, _, _)| *level == 0)
                    .map(|(_, _, leaf)| *leaf)
                    .collect();
                self.finish(caught_up, &own, Some((own_leaves, checkpoint)), locked_at);
                for (reply, outcome) in replies {
                    let _ = reply.send(outcome);
                }
            }
            Err(error) => {
                self.trusted = false;
                self.fail_replies(replies, error);
            }
        }
    }

    fn fail_replies(&self, replies: Vec<Reply>, error: LedgerError) {
        for (reply, _) in replies {
            let _ = reply.send(Err(error.clone()));
        }
    }

    /// Reads, under the lock, what other nodes appended since this writer last looked,
    /// checks it against the head's signed checkpoint, and applies it to the write model.
    fn catch_up(&mut self, lock: &mut dyn HeadLock) -> Result<CaughtUp, StoreError> {
        let head = lock.head().clone();
        let mine = self.frontier.size();
        if head.size < mine {
            return Err(StoreError::Corrupt(format!(
                "the log went backwards: the store's head is at {} but this node has seen {mine} entries",
                head.size
            )));
        }
        if head.size == mine {
            return Ok(CaughtUp::default());
        }
        let note = head.checkpoint.as_deref().unwrap_or("");
        // The follower has usually checked this very note already.
        let published = self
            .shared
            .read
            .checkpoint
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let checkpoint = if published.note == note {
            (*published).clone()
        } else {
            open_checkpoint(note, &self.shared.verifier)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?
        };
        let fetched = match self.recent(mine, head.size) {
            Some(entries) => entries,
            None => lock
                .entries(mine, head.size)?
                .into_iter()
                .map(|(seq, bytes)| {
                    let entry = seal::parse_authenticated(&bytes)
                        .map_err(|e| StoreError::Corrupt(format!("entry {seq}: {e}")))?;
                    Ok((Arc::new(entry), merkle::leaf_hash(&bytes)))
                })
                .collect::<Result<Vec<_>, StoreError>>()?,
        };
        let mut frontier = self.frontier.clone();
        let mut last_at = self.state.last_at;
        let mut versions = std::collections::HashMap::new();
        for (i, (entry, leaf)) in fetched.iter().enumerate() {
            let expected = mine + i as u64;
            let version = *versions
                .entry(entry.stream)
                .or_insert_with(|| self.state.version(&entry.stream));
            chain::check_next(entry, expected, version, last_at)
                .map_err(|e| StoreError::Corrupt(format!("entry {expected}: {e}")))?;
            versions.insert(entry.stream, entry.version);
            last_at = Some(entry.at);
            frontier.push(*leaf);
        }
        if frontier.size() != head.size || frontier.root() != checkpoint.checkpoint.root {
            return Err(StoreError::Corrupt(format!(
                "entries {mine}..{} do not reach the signed checkpoint's root",
                head.size
            )));
        }
        for (entry, _) in &fetched {
            self.state.apply(entry);
        }
        self.frontier = frontier;
        Ok(CaughtUp {
            entries: fetched,
            checkpoint: Some(checkpoint),
        })
    }

    /// Entries `[from, to)` from those the read side published last, if it holds them all.
    fn recent(&self, from: u64, to: u64) -> Option<Vec<(Arc<Entry>, Hash)>> {
        let recent = self
            .shared
            .read
            .recent
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let first = recent.front()?.0.seq;
        let last = recent.back()?.0.seq;
        if from < first || to > last + 1 {
            return None;
        }
        let start = (from - first) as usize;
        Some(
            recent
                .range(start..start + (to - from) as usize)
                .cloned()
                .collect(),
        )
    }

    /// Decides every command against the write model, signs the entries and extends the
    /// tree. `Err` when an entry cannot be encoded (the writer then stops).
    fn decide(&mut self, requests: Vec<WriteRequest>) -> Result<(Vec<Reply>, CommitBatch), ()> {
        // `at` never goes backwards, even if the system clock (or another node's) does.
        let now = match self.state.last_at {
            Some(last) => self.clock.now().max(last),
            None => self.clock.now(),
        };
        let mut replies: Vec<Reply> = Vec::with_capacity(requests.len());
        let mut batch = CommitBatch::default();
        let mut requests = requests.into_iter();
        while let Some(request) = requests.next() {
            let outcome = match domain::decide(&self.state, &request.command, now) {
                Err(e) => Err(LedgerError::Domain(e)),
                Ok(events) => {
                    let mut entries = Vec::with_capacity(events.len());
                    for data in events {
                        let stream = data.stream();
                        let unsigned = Entry {
                            seq: self.frontier.size(),
                            id: Uuid::now_v7(),
                            stream,
                            version: self.state.version(&stream) + 1,
                            at: now,
                            actor: request.actor.clone(),
                            signer: String::new(),
                            data,
                            sig: String::new(),
                        };
                        match seal::seal(unsigned, &self.signer) {
                            Ok((entry, bytes)) => {
                                batch
                                    .nodes
                                    .extend(self.frontier.push(merkle::leaf_hash(&bytes)));
                                batch.entries.push((entry.seq, bytes));
                                self.state.apply(&entry);
                                entries.push(entry);
                            }
                            Err(e) => {
                                // Cannot happen with the event types we have; if it does, the
                                // write model may hold half a command, so stop writing.
                                tracing::error!(error = %e, "cannot encode an entry; refusing further writes");
                                self.failed = true;
                                self.shared.available.store(false, Ordering::SeqCst);
                                let _ = request.reply.send(Err(LedgerError::Unavailable));
                                for (reply, _) in replies {
                                    let _ = reply.send(Err(LedgerError::Unavailable));
                                }
                                Writer::refuse_all(requests.collect(), LedgerError::Unavailable);
                                return Err(());
                            }
                        }
                    }
                    Ok(Receipt { entries })
                }
            };
            replies.push((request.reply, outcome));
        }
        Ok((replies, batch))
    }

    /// Signs the checkpoint for the write model's new size.
    fn sign_checkpoint(&self) -> Result<CheckpointState, ()> {
        let checkpoint = Checkpoint {
            origin: self.signer.name().to_string(),
            size: self.frontier.size(),
            root: self.frontier.root(),
        };
        let note = checkpoint.sign(&self.signer).map_err(|e| {
            tracing::error!(error = %e, "cannot sign the checkpoint");
        })?;
        Ok(CheckpointState { note, checkpoint })
    }

    /// Publishes what the batch caught up with and what it committed, and records that at
    /// `locked_at` this node saw the whole log.
    fn finish(
        &mut self,
        caught_up: CaughtUp,
        own: &[&Entry],
        committed: Option<(Vec<Hash>, CheckpointState)>,
        locked_at: Instant,
    ) {
        let mut entries = caught_up.entries;
        let checkpoint = match (committed, caught_up.checkpoint) {
            (Some((own_leaves, checkpoint)), _) => {
                entries.extend(own.iter().map(|e| Arc::new((*e).clone())).zip(own_leaves));
                checkpoint
            }
            (None, Some(checkpoint)) => checkpoint,
            (None, None) => {
                self.shared.confirm_current(locked_at);
                return;
            }
        };
        match self.shared.publish(&entries, checkpoint) {
            Ok(()) => self.shared.confirm_current(locked_at),
            Err(why) => {
                tracing::error!(error = %why, "could not publish committed entries");
                self.trusted = false;
            }
        }
    }

    /// Settles a commit whose connection failed during `COMMIT`: taking the head lock again
    /// waits for that transaction to end, after which the log says whether it landed.
    fn settle(&self, batch: &CommitBatch) -> Settled {
        let (Some((first, bytes)), Some(new_size)) = (batch.entries.first(), batch.new_size())
        else {
            return Settled::NotCommitted;
        };
        let deadline = Instant::now() + SETTLE_FOR;
        let mut pause = Duration::from_millis(50);
        loop {
            let looked = self.shared.store.lock_head().and_then(|mut lock| {
                if lock.head().size < new_size {
                    return Ok(false);
                }
                let found = lock.entries(*first, first + 1)?;
                Ok(found.first().is_some_and(|(_, stored)| stored == bytes))
            });
            match looked {
                Ok(true) => return Settled::Committed,
                Ok(false) => return Settled::NotCommitted,
                Err(e) if e.is_transient() && Instant::now() < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not settle whether a commit landed");
                    return Settled::Unknown;
                }
            }
        }
    }
}
