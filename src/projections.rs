//! Read-side projections for auditors, rebuilt from the log at start and extended after
//! each durable commit:
//! - [`AuditIndex`]: per-seq metadata (time, type, stream, actor) and per-stream and
//!   per-actor seq lists, so `/v1/audit/events` filters without reading entries it will not
//!   return and a key's history is one list lookup;
//! - [`DailyActivity`]: per principal, counts per (day, method, route, outcome) and the
//!   latest use, summed from `credential.activity` events.
//!
//! Both are replayable: `apply` takes one entry in seq order and ignores entries it has
//! already seen.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::events::EVENT_TYPES;
use crate::domain::{Entry, EventData, Stream, Timestamp};

/// Everything the audit API reads besides the entries themselves.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Projections {
    pub audit: AuditIndex,
    pub activity: DailyActivity,
}

impl Projections {
    /// Folds one committed entry in.
    pub fn apply(&mut self, entry: &Entry) {
        if entry.seq < self.audit.len() {
            return;
        }
        self.audit.apply(entry);
        self.activity.apply(entry);
    }
}

/// Metadata of every entry, indexed by seq.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct AuditIndex {
    at: Vec<i64>,
    kind: Vec<u8>,
    stream: Vec<u32>,
    actor: Vec<u32>,
    streams: Interner<Stream>,
    actors: Interner<String>,
    by_stream: Vec<Vec<u64>>,
    by_actor: Vec<Vec<u64>>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(bound(
    serialize = "T: Serialize + std::hash::Hash + Eq",
    deserialize = "T: Deserialize<'de> + std::hash::Hash + Eq"
))]
struct Interner<T> {
    ids: HashMap<T, u32>,
}

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Interner {
            ids: HashMap::new(),
        }
    }
}

impl<T: std::hash::Hash + Eq + Clone> Interner<T> {
    fn intern(&mut self, value: &T) -> u32 {
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        let next = self.ids.len() as u32;
        self.ids.insert(value.clone(), next);
        next
    }

    fn get(&self, value: &T) -> Option<u32> {
        self.ids.get(value).copied()
    }
}

/// A query over the log's metadata.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    /// Only seqs greater than this.
    pub after: Option<u64>,
    /// Only seqs smaller than this.
    pub before: Option<u64>,
    /// Newest first (the page ends where `next_after` says the next one starts, going
    /// down).
    pub descending: bool,
    pub event_type: Option<String>,
    pub stream: Option<Stream>,
    pub actor: Option<String>,
    /// `at >= since`.
    pub since: Option<Timestamp>,
    /// `at < until`.
    pub until: Option<Timestamp>,
}

/// One page of matching seqs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// In the order asked for.
    pub seqs: Vec<u64>,
    /// Where the next page starts (exclusive: the last seq of this page), `None` when the
    /// log holds no more matches.
    pub next_after: Option<u64>,
}

impl AuditIndex {
    /// Entries indexed.
    pub fn len(&self) -> u64 {
        self.at.len() as u64
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    fn apply(&mut self, entry: &Entry) {
        let kind = EVENT_TYPES
            .iter()
            .position(|t| *t == entry.data.event_type())
            .unwrap_or(0) as u8;
        let stream = self.streams.intern(&entry.stream);
        let actor = self.actors.intern(&entry.actor.id);
        self.at.push(entry.at.micros());
        self.kind.push(kind);
        self.stream.push(stream);
        self.actor.push(actor);
        if self.by_stream.len() <= stream as usize {
            self.by_stream.resize(stream as usize + 1, Vec::new());
        }
        self.by_stream[stream as usize].push(entry.seq);
        if self.by_actor.len() <= actor as usize {
            self.by_actor.resize(actor as usize + 1, Vec::new());
        }
        self.by_actor[actor as usize].push(entry.seq);
    }

    /// Seqs of one stream's entries, in order.
    pub fn stream_seqs(&self, stream: &Stream) -> &[u64] {
        self.streams
            .get(stream)
            .and_then(|id| self.by_stream.get(id as usize))
            .map_or(&[], Vec::as_slice)
    }

    /// Up to `limit` seqs matching `filter` among the first `size` entries.
    pub fn query(&self, filter: &EventFilter, limit: usize, size: u64) -> Page {
        let size = size.min(self.len());
        let empty = Page {
            seqs: Vec::new(),
            next_after: None,
        };
        let kind = match &filter.event_type {
            Some(t) => match EVENT_TYPES.iter().position(|k| k == t) {
                Some(k) => Some(k as u8),
                None => return empty,
            },
            None => None,
        };
        let stream = match &filter.stream {
            Some(s) => match self.streams.get(s) {
                Some(id) => Some(id),
                None => return empty,
            },
            None => None,
        };
        let actor = match &filter.actor {
            Some(a) => match self.actors.get(a) {
                Some(id) => Some(id),
                None => return empty,
            },
            None => None,
        };
        // `at` never decreases along seq, so time bounds are binary searches.
        let lo_time = filter
            .since
            .map_or(0, |t| self.at.partition_point(|&a| a < t.micros()) as u64);
        let hi_time = filter.until.map_or(size, |t| {
            (self.at.partition_point(|&a| a < t.micros()) as u64).min(size)
        });
        let start = filter.after.map_or(0, |a| a.saturating_add(1)).max(lo_time);
        let end = filter.before.map_or(hi_time, |b| b.min(hi_time));
        if start >= end {
            return empty;
        }
        let matches = |seq: u64| {
            let i = seq as usize;
            kind.is_none_or(|k| self.kind[i] == k)
                && stream.is_none_or(|s| self.stream[i] == s)
                && actor.is_none_or(|a| self.actor[i] == a)
        };
        // Walk the shortest candidate list, within [start, end).
        let list = match (stream, actor) {
            (Some(s), _) => Some(self.by_stream[s as usize].as_slice()),
            (None, Some(a)) => Some(self.by_actor[a as usize].as_slice()),
            (None, None) => None,
        };
        let candidates: Box<dyn Iterator<Item = u64> + '_> = match (list, filter.descending) {
            (Some(list), false) => Box::new(seqs_between(list, start, end).iter().copied()),
            (Some(list), true) => Box::new(seqs_between(list, start, end).iter().rev().copied()),
            (None, false) => Box::new(start..end),
            (None, true) => Box::new((start..end).rev()),
        };
        let mut seqs = Vec::new();
        let mut next_after = None;
        for seq in candidates {
            if matches(seq) {
                if seqs.len() == limit {
                    next_after = seqs.last().copied();
                    break;
                }
                seqs.push(seq);
            }
        }
        Page { seqs, next_after }
    }
}

/// The part of a sorted seq list within `[start, end)`.
fn seqs_between(list: &[u64], start: u64, end: u64) -> &[u64] {
    let from = list.partition_point(|&s| s < start);
    let to = list.partition_point(|&s| s < end);
    &list[from..to.max(from)]
}

/// One principal's activity counters.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct PrincipalActivity {
    pub last_used_at: Option<Timestamp>,
    /// (day, method, route, outcome) → count.
    pub counts: BTreeMap<(String, String, String, String), u64>,
}

/// Activity per principal per day, from `credential.activity` events.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct DailyActivity {
    principals: HashMap<Uuid, PrincipalActivity>,
}

impl DailyActivity {
    fn apply(&mut self, entry: &Entry) {
        let EventData::CredentialActivity(d) = &entry.data else {
            return;
        };
        let principal = self.principals.entry(d.principal_id).or_default();
        if principal.last_used_at.is_none_or(|t| t < d.last_used_at) {
            principal.last_used_at = Some(d.last_used_at);
        }
        // A window is counted on the day it started.
        let day = d.window_start.day();
        for c in &d.counts {
            let key = (
                day.clone(),
                c.method.clone(),
                c.route.clone(),
                c.outcome.clone(),
            );
            *principal.counts.entry(key).or_insert(0) += c.count;
        }
    }

    /// A principal's activity; `None` when it never did anything.
    pub fn of(&self, principal: Uuid) -> Option<&PrincipalActivity> {
        self.principals.get(&principal)
    }
}
