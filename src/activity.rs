//! Per-credential activity: `last_used_at` and counts per (method, route, outcome).
//!
//! Counting happens in memory on the request path (one short mutex section, no I/O); a
//! background task closes the window every `--activity-window` seconds and appends one
//! `credential.activity` event per credential that was used, so the log grows with
//! keys × windows, not with requests. A clean shutdown closes the open window before the
//! writer stops; a crash loses at most that window.
//!
//! `last_used_at` is served live: readers take the later of the projected value (from
//! committed activity events) and the one counted in the open window.

use std::collections::HashMap;
use std::sync::Mutex;

use uuid::Uuid;

use crate::access::VerifyCode;
use crate::domain::events::{ActivityCount, CredentialActivity};
use crate::domain::{Actor, Command, Timestamp};
use crate::ledger::{Ledger, LedgerError};

#[derive(Default)]
struct Usage {
    principal_id: Uuid,
    last_used_at: Option<Timestamp>,
    /// `(method, route, outcome, count)`; few per credential and window, so a linear
    /// search that allocates nothing on a hit beats a map keyed by owned strings.
    counts: Vec<(String, String, VerifyCode, u64)>,
}

#[derive(Default)]
struct Window {
    start: Option<Timestamp>,
    usage: HashMap<Uuid, Usage>,
}

/// Activity counted since the last window closed.
#[derive(Default)]
pub struct ActivityTracker {
    window: Mutex<Window>,
}

impl ActivityTracker {
    /// An empty tracker.
    pub fn new() -> ActivityTracker {
        ActivityTracker::default()
    }

    /// Counts one use of `credential_id` (acting for `principal_id`).
    pub fn record(
        &self,
        credential_id: Uuid,
        principal_id: Uuid,
        method: &str,
        route: &str,
        outcome: VerifyCode,
        now: Timestamp,
    ) {
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        window.start.get_or_insert(now);
        let usage = window.usage.entry(credential_id).or_default();
        usage.principal_id = principal_id;
        if usage.last_used_at.is_none_or(|t| t < now) {
            usage.last_used_at = Some(now);
        }
        match usage
            .counts
            .iter_mut()
            .find(|(m, r, o, _)| *o == outcome && m == method && r == route)
        {
            Some((.., count)) => *count += 1,
            None => usage
                .counts
                .push((method.to_string(), route.to_string(), outcome, 1)),
        }
    }

    /// `last_used_at` counted in the open window, if any.
    pub fn last_used_at(&self, credential_id: Uuid) -> Option<Timestamp> {
        let window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        window
            .usage
            .get(&credential_id)
            .and_then(|u| u.last_used_at)
    }

    /// Closes the open window and appends its summaries. On failure the window's counts
    /// are lost (and said so in the log), never retried into a second window.
    pub async fn flush(&self, ledger: &Ledger, now: Timestamp) -> Result<usize, LedgerError> {
        let window = {
            let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut *window)
        };
        let Some(start) = window.start else {
            return Ok(0);
        };
        let mut credentials: Vec<(Uuid, Usage)> = window.usage.into_iter().collect();
        credentials.sort_by_key(|(id, _)| *id);
        let count = credentials.len();
        let end = now.max(start);
        let mut appends = tokio::task::JoinSet::new();
        for (credential_id, usage) in credentials {
            let Some(last_used_at) = usage.last_used_at else {
                continue;
            };
            let mut counts = usage.counts;
            counts.sort();
            let counts = counts
                .into_iter()
                .map(|(method, route, outcome, count)| ActivityCount {
                    method,
                    route,
                    outcome: outcome.as_str().to_string(),
                    count,
                })
                .collect();
            let command = Command::RecordActivity(CredentialActivity {
                credential_id,
                principal_id: usage.principal_id,
                window_start: start,
                window_end: end,
                last_used_at,
                counts,
            });
            // Spawned together, the summaries reach the writer together and share one
            // group commit.
            let ledger = ledger.clone();
            appends.spawn(async move { ledger.execute(command, Actor::system()).await });
        }
        let mut outcome = Ok(count);
        while let Some(joined) = appends.join_next().await {
            match joined {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => outcome = Err(e),
                Err(_) => outcome = Err(LedgerError::Unavailable),
            }
        }
        outcome
    }
}
