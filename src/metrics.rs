//! Counters for `/metrics`, in the Prometheus text format. Plain atomics: counting costs a
//! relaxed add on the hot path and nothing else.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::access::VerifyCode;

const CODES: [VerifyCode; 7] = [
    VerifyCode::Valid,
    VerifyCode::Malformed,
    VerifyCode::NotFound,
    VerifyCode::Disabled,
    VerifyCode::Expired,
    VerifyCode::Revoked,
    VerifyCode::Forbidden,
];

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    verify: [AtomicU64; 7],
    /// Group commits written.
    pub commits: AtomicU64,
    /// Entries written.
    pub entries: AtomicU64,
}

impl Metrics {
    /// Counts one `/v1/verify` answer.
    pub fn count_verify(&self, code: VerifyCode) {
        if let Some(i) = CODES.iter().position(|c| *c == code) {
            self.verify[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one durable batch of `entries` entries.
    pub fn count_commit(&self, entries: u64) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.entries.fetch_add(entries, Ordering::Relaxed);
    }

    /// Appends the counters in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP keyledger_verify_total Answers of /v1/verify by code."
        );
        let _ = writeln!(out, "# TYPE keyledger_verify_total counter");
        for (code, count) in CODES.iter().zip(&self.verify) {
            let _ = writeln!(
                out,
                "keyledger_verify_total{{code=\"{}\"}} {}",
                code.as_str(),
                count.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP keyledger_commits_total Group commits made durable."
        );
        let _ = writeln!(out, "# TYPE keyledger_commits_total counter");
        let _ = writeln!(
            out,
            "keyledger_commits_total {}",
            self.commits.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP keyledger_committed_entries_total Entries made durable by this process."
        );
        let _ = writeln!(out, "# TYPE keyledger_committed_entries_total counter");
        let _ = writeln!(
            out,
            "keyledger_committed_entries_total {}",
            self.entries.load(Ordering::Relaxed)
        );
    }
}
