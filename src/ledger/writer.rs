//! The writer thread: the only code that appends to the log.
//!
//! Each turn it takes the first waiting message and everything else already queued (up to
//! [`MAX_BATCH`]): while one batch is being fsynced, the next one gathers, so concurrent
//! commands share one flush (group commit). Signatures and hashes are all computed before
//! the store's transaction starts. Every answer, refusals included, is sent after the
//! batch's commit, because a command's outcome may depend on an earlier command in the
//! same batch.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::open::Opened;
use super::{CheckpointState, LedgerError, MAX_BATCH, Message, Receipt, Shared, WriteRequest};
use crate::crypto::merkle::{self, Frontier};
use crate::crypto::note::{Checkpoint, NoteSigner};
use crate::crypto::seal;
use crate::domain::{self, Clock, Entry, State};
use crate::store::{CommitBatch, CommitTimes};

type Reply = (
    oneshot::Sender<Result<Receipt, LedgerError>>,
    Result<Receipt, LedgerError>,
);

pub(super) struct Writer {
    shared: Arc<Shared>,
    signer: NoteSigner,
    clock: Arc<dyn Clock>,
    /// The write model: includes the current batch's entries before they are durable.
    state: State,
    frontier: Frontier,
    failed: bool,
}

impl Writer {
    pub(super) fn new(
        shared: Arc<Shared>,
        signer: NoteSigner,
        clock: Arc<dyn Clock>,
        opened: Opened,
    ) -> Writer {
        Writer {
            shared,
            signer,
            clock,
            state: opened.state,
            frontier: opened.frontier,
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
                self.commit(batch);
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

    fn commit(&mut self, requests: Vec<WriteRequest>) {
        if self.failed {
            for request in requests {
                let _ = request.reply.send(Err(LedgerError::Unavailable));
            }
            return;
        }
        // `at` never goes backwards, even if the system clock does.
        let now = match self.state.last_at {
            Some(last) => self.clock.now().max(last),
            None => self.clock.now(),
        };
        let mut replies: Vec<Reply> = Vec::with_capacity(requests.len());
        let mut batch = CommitBatch::default();
        for request in requests {
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
                                self.fail();
                                return self.refuse(replies, request.reply);
                            }
                        }
                    }
                    Ok(Receipt { entries })
                }
            };
            replies.push((request.reply, outcome));
        }
        if !batch.entries.is_empty() {
            let started = std::time::Instant::now();
            let commands = replies.len();
            match self.persist(batch) {
                Ok((checkpoint, times)) => {
                    // The receipts hold the batch's entries in seq order: publish from them.
                    let committed: Vec<&Entry> = replies
                        .iter()
                        .filter_map(|(_, outcome)| outcome.as_ref().ok())
                        .flat_map(|receipt| &receipt.entries)
                        .collect();
                    self.shared.metrics.count_commit(
                        commands,
                        committed.len(),
                        started.elapsed(),
                        times.sync,
                    );
                    self.publish(&committed, checkpoint);
                }
                Err(()) => {
                    self.shared.metrics.count_commit_failure();
                    self.fail();
                    for (reply, outcome) in replies {
                        let refused = match outcome {
                            Ok(_) => Err(LedgerError::Unavailable),
                            Err(e) => Err(e),
                        };
                        let _ = reply.send(refused);
                    }
                    return;
                }
            }
        }
        for (reply, outcome) in replies {
            let _ = reply.send(outcome);
        }
    }

    /// Signs the checkpoint for the new size and commits the batch durably.
    fn persist(&self, mut batch: CommitBatch) -> Result<(CheckpointState, CommitTimes), ()> {
        let checkpoint = Checkpoint {
            origin: self.signer.name().to_string(),
            size: self.frontier.size(),
            root: self.frontier.root(),
        };
        let note = checkpoint.sign(&self.signer).map_err(|e| {
            tracing::error!(error = %e, "cannot sign the checkpoint");
        })?;
        batch.checkpoint = note.clone();
        let times = self.shared.store.commit(&batch).map_err(|e| {
            tracing::error!(error = %e, "commit failed; refusing further writes until restart");
        })?;
        Ok((CheckpointState { note, checkpoint }, times))
    }

    /// Makes a durable batch visible to readers.
    fn publish(&self, committed: &[&Entry], checkpoint: CheckpointState) {
        {
            let mut read_model = self
                .shared
                .read_model
                .write()
                .unwrap_or_else(|p| p.into_inner());
            for entry in committed {
                read_model.apply(entry);
            }
        }
        {
            let mut projections = self
                .shared
                .projections
                .write()
                .unwrap_or_else(|p| p.into_inner());
            for entry in committed {
                projections.apply(entry);
            }
        }
        *self
            .shared
            .checkpoint
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(checkpoint);
    }

    fn fail(&mut self) {
        self.failed = true;
        self.shared.available.store(false, Ordering::SeqCst);
    }

    fn refuse(&self, replies: Vec<Reply>, current: oneshot::Sender<Result<Receipt, LedgerError>>) {
        let _ = current.send(Err(LedgerError::Unavailable));
        for (reply, _) in replies {
            let _ = reply.send(Err(LedgerError::Unavailable));
        }
    }
}
