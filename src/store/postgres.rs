//! The PostgreSQL implementation of [`Store`]: one log shared by several keyledger nodes.
//!
//! Layout, in the schema `keyledger` (so it sits beside an application's own tables):
//! - `entries (seq bigint primary key, bytes bytea)`: the entry bytes, exactly as signed;
//! - `nodes (level smallint, idx bigint, hash bytea, primary key (level, idx))`: the complete
//!   Merkle subtrees;
//! - `head (id boolean primary key, size bigint, checkpoint text)`: one row, the latest
//!   signed checkpoint and the tree size it covers;
//! - `migrations (version, description, applied_at)`: the schema's history.
//!
//! Appends follow Tessera's gap-free pattern: a transaction takes the head row
//! `FOR UPDATE` (so appends from every node are serialised by the database), inserts the
//! entries and the nodes they complete, moves the head, `NOTIFY`s followers and commits.
//! Every session runs with `synchronous_commit = on`, so `COMMIT` returning means the
//! batch is durable (on the primary, and on synchronous standbys when
//! `synchronous_standby_names` says so). A connection lost while `COMMIT` is in flight
//! leaves the outcome unknown: that is [`StoreError::Ambiguous`], which the ledger settles
//! by taking the head lock again and looking.
//!
//! The client is the blocking `postgres` crate: the ledger calls its store from its own
//! threads, never from an async task. Connections come from a small pool; a connection
//! that failed is dropped, and a new one is made on the next use, through the libpq-style
//! URI given (several hosts and `target_session_attrs=read-write` included, so a node
//! follows a failover to whichever host is the primary).

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator;
use std::collections::HashMap;

use postgres::types::ToSql;
use postgres::{Client, Config, NoTls, Row, Statement};

use super::{
    CommitBatch, CommitTimes, EntryIter, Head, HeadLock, LeafIter, Store, StoreError,
    checkpoint_size,
};
use crate::crypto::merkle::Hash;

/// The schema keyledger's tables live in.
pub const SCHEMA: &str = "keyledger";
/// The channel appends are announced on (the payload is the new size); the append
/// statement in [`PgHeadLock::commit`] names it too.
pub const CHANNEL: &str = "keyledger_log";
/// Rows fetched per query when streaming entries or leaves.
const CHUNK: i64 = 10_000;
/// Idle connections kept for reuse.
const POOL_IDLE: usize = 8;

/// The schema's migrations, in order. Each runs once, in one transaction with its record,
/// under an advisory lock, so nodes starting together on an empty database agree.
const MIGRATIONS: &[(i32, &str, &str)] = &[(
    1,
    "entries, Merkle nodes and the head row",
    "CREATE TABLE keyledger.entries (
         seq bigint PRIMARY KEY CHECK (seq >= 0),
         bytes bytea NOT NULL
     );
     CREATE TABLE keyledger.nodes (
         level smallint NOT NULL CHECK (level >= 0 AND level < 64),
         idx bigint NOT NULL CHECK (idx >= 0),
         hash bytea NOT NULL CHECK (octet_length(hash) = 32),
         PRIMARY KEY (level, idx)
     );
     CREATE TABLE keyledger.head (
         id boolean PRIMARY KEY DEFAULT true CHECK (id),
         size bigint NOT NULL CHECK (size >= 0),
         checkpoint text
     );
     INSERT INTO keyledger.head (id, size, checkpoint) VALUES (true, 0, NULL);",
)];

/// Session settings of every connection: durability first, and bounds on how long a
/// statement, a lock wait or an abandoned transaction may hold anything up.
const SESSION: &str = "SET synchronous_commit = on;
     SET statement_timeout = '30s';
     SET lock_timeout = '10s';
     SET idle_in_transaction_session_timeout = '15s'";

/// A connection and the statements prepared on it: each statement is parsed and planned
/// once per connection, not once per call (which would double the round trips).
struct Conn {
    client: Client,
    prepared: HashMap<&'static str, Statement>,
}

impl Conn {
    fn statement(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        if let Some(statement) = self.prepared.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql)?;
        self.prepared.insert(sql, statement.clone());
        Ok(statement)
    }

    fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, postgres::Error> {
        let statement = self.statement(sql)?;
        self.client.query(&statement, params)
    }

    fn query_one(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, postgres::Error> {
        let statement = self.statement(sql)?;
        self.client.query_one(&statement, params)
    }

    fn query_opt(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, postgres::Error> {
        let statement = self.statement(sql)?;
        self.client.query_opt(&statement, params)
    }
}

/// A log in PostgreSQL.
pub struct PgStore {
    config: Config,
    /// `host:port` list and database, for messages (never the password).
    described: String,
    idle: Mutex<Vec<Conn>>,
    /// The connection that `LISTEN`s for appends, made on first use.
    listener: Mutex<Option<Client>>,
}

/// Maps a client error to the store's: connection trouble and a database that is shutting
/// down, restarting, read-only (a standby) or slow are transient; the rest is not.
fn classify(e: postgres::Error) -> StoreError {
    let transient = e.is_closed()
        || e.code().is_some_and(|code| {
            [
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
                SqlState::READ_ONLY_SQL_TRANSACTION,
                SqlState::LOCK_NOT_AVAILABLE,
                SqlState::QUERY_CANCELED,
                SqlState::T_R_SERIALIZATION_FAILURE,
                SqlState::T_R_DEADLOCK_DETECTED,
                SqlState::TOO_MANY_CONNECTIONS,
                SqlState::CONNECTION_EXCEPTION,
                SqlState::CONNECTION_FAILURE,
                SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT,
            ]
            .contains(code)
        })
        || e.code().is_none();
    let text = describe_error(&e);
    if transient {
        StoreError::Unavailable(text)
    } else {
        StoreError::Backend(format!("PostgreSQL: {text}"))
    }
}

/// A client error with the server's message and SQLSTATE when there is one (the plain
/// `Display` of a server error is just "db error").
fn describe_error(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

impl PgStore {
    /// Connects to `uri` (libpq URI or key=value form), creates and migrates keyledger's
    /// schema if needed, and checks that it is the primary.
    pub fn connect(uri: &str) -> Result<PgStore, StoreError> {
        let mut config: Config = uri
            .parse()
            .map_err(|e| StoreError::Backend(format!("not a PostgreSQL URI: {e}")))?;
        if config.get_ssl_mode() == postgres::config::SslMode::Require {
            return Err(StoreError::Backend(
                "sslmode=require is not supported by this build; connect over a trusted network or a local socket"
                    .into(),
            ));
        }
        if config.get_application_name().is_none() {
            config.application_name("keyledger");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        // A database that stops answering (a partition, a frozen host) must surface as an
        // error, not as a thread blocked forever.
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .keepalives_interval(Duration::from_secs(1))
            .keepalives_retries(3)
            .tcp_user_timeout(Duration::from_secs(10));
        let described = describe(&config);
        let store = PgStore {
            config,
            described,
            idle: Mutex::new(Vec::new()),
            listener: Mutex::new(None),
        };
        store.migrate()?;
        Ok(store)
    }

    fn new_client(&self) -> Result<Client, StoreError> {
        let mut client = self.config.connect(NoTls).map_err(classify)?;
        client.batch_execute(SESSION).map_err(classify)?;
        Ok(client)
    }

    fn new_conn(&self) -> Result<Conn, StoreError> {
        Ok(Conn {
            client: self.new_client()?,
            prepared: HashMap::new(),
        })
    }

    /// A pooled connection, returned to the pool when dropped unless it failed.
    fn client(&self) -> Result<Pooled<'_>, StoreError> {
        let reused = self.lock_idle().pop();
        let conn = match reused {
            Some(conn) if !conn.client.is_closed() => conn,
            _ => self.new_conn()?,
        };
        Ok(Pooled {
            store: self,
            conn: Some(conn),
        })
    }

    fn lock_idle(&self) -> MutexGuard<'_, Vec<Conn>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates the schema and applies missing migrations, one node at a time.
    fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client()?;
        let mut tx = client.get().client.transaction().map_err(classify)?;
        // Serialises concurrent first starts; released with the transaction.
        tx.execute("SELECT pg_advisory_xact_lock(8154923017)", &[])
            .map_err(classify)?;
        tx.batch_execute(
            "CREATE SCHEMA IF NOT EXISTS keyledger;
             CREATE TABLE IF NOT EXISTS keyledger.migrations (
                 version integer PRIMARY KEY,
                 description text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .map_err(classify)?;
        let applied: Vec<i32> = tx
            .query(
                "SELECT version FROM keyledger.migrations ORDER BY version",
                &[],
            )
            .map_err(classify)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        if let Some(&newest) = applied.last() {
            let known = MIGRATIONS.last().map_or(0, |m| m.0);
            if newest > known {
                return Err(StoreError::Backend(format!(
                    "the database's keyledger schema is at version {newest}, newer than this build knows ({known}); upgrade keyledger"
                )));
            }
        }
        for (version, description, sql) in MIGRATIONS {
            if applied.contains(version) {
                continue;
            }
            tx.batch_execute(sql).map_err(classify)?;
            tx.execute(
                "INSERT INTO keyledger.migrations (version, description) VALUES ($1, $2)",
                &[version, description],
            )
            .map_err(classify)?;
            tracing::info!(version, description, "applied a schema migration");
        }
        tx.commit().map_err(classify)?;
        Ok(())
    }

    /// Reads up to [`CHUNK`] rows of `(key, bytes)` from a `SELECT ... WHERE key >= $1 AND
    /// key < $2 ORDER BY key LIMIT $3`.
    fn chunk(
        &self,
        sql: &'static str,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let (from, to) = (to_i64(from), to_i64(to));
        let mut client = self.client()?;
        let rows = client
            .get()
            .query(sql, &[&from, &to, &CHUNK])
            .map_err(classify)?;
        rows.iter()
            .map(|row| Ok((from_i64(row.get(0))?, row.get::<_, Vec<u8>>(1))))
            .collect()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        let idle = std::mem::take(&mut *self.lock_idle());
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if idle.is_empty() && listener.is_none() {
            return;
        }
        // A client closes its connection with a blocking call, which must not run on an
        // async worker thread, where the last handle to the store may well be dropped.
        let _ = std::thread::Builder::new()
            .name("keyledger-pg-close".into())
            .spawn(move || {
                drop(idle);
                drop(listener);
            });
    }
}

/// `host:port` list and database, for messages.
fn describe(config: &Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let name = match host {
                postgres::config::Host::Tcp(name) => name.clone(),
                postgres::config::Host::Unix(path) => path.display().to_string(),
            };
            let port = config
                .get_ports()
                .get(i)
                .or_else(|| config.get_ports().first())
                .copied()
                .unwrap_or(5432);
            format!("{name}:{port}")
        })
        .collect();
    format!(
        "PostgreSQL at {}/{}",
        hosts.join(","),
        config.get_dbname().unwrap_or("")
    )
}

/// seq and indexes are u64 in keyledger and bigint in PostgreSQL; beyond 2^63 would be a
/// log of nine quintillion entries, so saturating is only a guard.
fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn from_i64(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative seq or index {v}")))
}

fn to_hash(bytes: &[u8]) -> Result<Hash, StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("a node hash of {} bytes", bytes.len())))
}

/// A pooled connection.
struct Pooled<'a> {
    store: &'a PgStore,
    conn: Option<Conn>,
}

impl Pooled<'_> {
    fn get(&mut self) -> &mut Conn {
        match &mut self.conn {
            Some(conn) => conn,
            // `conn` is only taken by `drop`.
            None => unreachable!("a pooled connection is held until it is dropped"),
        }
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if !conn.client.is_closed() {
                let mut idle = self.store.lock_idle();
                if idle.len() < POOL_IDLE {
                    idle.push(conn);
                }
            }
        }
    }
}

/// The head row, locked `FOR UPDATE` inside an open transaction on one connection.
struct PgHeadLock<'a> {
    client: Pooled<'a>,
    head: Head,
    open: bool,
}

impl HeadLock for PgHeadLock<'_> {
    fn head(&self) -> &Head {
        &self.head
    }

    fn entries(&mut self, from: u64, to: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let rows = self
            .client
            .get()
            .query(
                "SELECT seq, bytes FROM keyledger.entries WHERE seq >= $1 AND seq < $2 ORDER BY seq",
                &[&to_i64(from), &to_i64(to)],
            )
            .map_err(classify)?;
        rows.iter()
            .map(|row| Ok((from_i64(row.get(0))?, row.get::<_, Vec<u8>>(1))))
            .collect()
    }

    fn commit(mut self: Box<Self>, batch: &CommitBatch) -> Result<CommitTimes, StoreError> {
        let Some(new_size) = batch.new_size() else {
            return Ok(CommitTimes::default());
        };
        let first = batch.entries.first().map_or(0, |(seq, _)| *seq);
        if first != self.head.size {
            return Err(StoreError::Conflict {
                expected: self.head.size,
                found: first,
            });
        }
        let seqs: Vec<i64> = batch.entries.iter().map(|(s, _)| to_i64(*s)).collect();
        let bytes: Vec<&[u8]> = batch.entries.iter().map(|(_, b)| b.as_slice()).collect();
        let levels: Vec<i16> = batch.nodes.iter().map(|(l, _, _)| i16::from(*l)).collect();
        let indexes: Vec<i64> = batch.nodes.iter().map(|(_, i, _)| to_i64(*i)).collect();
        let hashes: Vec<&[u8]> = batch.nodes.iter().map(|(_, _, h)| h.as_slice()).collect();
        let size = to_i64(new_size);
        let conn = self.client.get();
        // One statement, one round trip: the entries, their nodes, the head, the notice.
        let written = conn.query(
            "WITH e AS (INSERT INTO keyledger.entries (seq, bytes)
                        SELECT * FROM unnest($1::bigint[], $2::bytea[])),
                  n AS (INSERT INTO keyledger.nodes (level, idx, hash)
                        SELECT * FROM unnest($3::smallint[], $4::bigint[], $5::bytea[])),
                  h AS (UPDATE keyledger.head SET size = $6, checkpoint = $7 WHERE id)
             SELECT pg_notify('keyledger_log', $8)",
            &[
                &seqs,
                &bytes,
                &levels,
                &indexes,
                &hashes,
                &size,
                &batch.checkpoint,
                &size.to_string(),
            ],
        );
        if let Err(e) = written {
            // Not committed: the transaction is rolled back (or the connection is gone).
            let _ = conn.client.batch_execute("ROLLBACK");
            self.open = false;
            return Err(match e.code() {
                Some(&SqlState::UNIQUE_VIOLATION) => StoreError::Conflict {
                    expected: self.head.size,
                    found: self.head.size,
                },
                _ => classify(e),
            });
        }
        let started = Instant::now();
        let committed = conn.client.batch_execute("COMMIT");
        self.open = false;
        match committed {
            Ok(()) => Ok(CommitTimes {
                sync: started.elapsed(),
            }),
            // The server answered: it refused the commit, nothing was written.
            Err(e) if e.code().is_some() && !e.is_closed() => Err(classify(e)),
            // The connection failed while COMMIT was in flight: it may have landed.
            Err(e) => Err(StoreError::Ambiguous(describe_error(&e))),
        }
    }
}

impl Drop for PgHeadLock<'_> {
    fn drop(&mut self) {
        if self.open {
            let _ = self.client.get().client.batch_execute("ROLLBACK");
        }
    }
}

impl Store for PgStore {
    fn describe(&self) -> String {
        self.described.clone()
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn head(&self) -> Result<Head, StoreError> {
        let mut client = self.client()?;
        let row = client
            .get()
            .query_one("SELECT size, checkpoint FROM keyledger.head WHERE id", &[])
            .map_err(classify)?;
        let head = Head {
            size: from_i64(row.get(0))?,
            checkpoint: row.get(1),
        };
        check_head(&head)?;
        Ok(head)
    }

    fn lock_head(&self) -> Result<Box<dyn HeadLock + '_>, StoreError> {
        let mut client = self.client()?;
        // `BEGIN` and the locking read in one round trip (the simple protocol takes several
        // statements): the lock is what every node's appends queue on, so every round trip
        // held under it counts.
        let messages =
            match client.get().client.simple_query(
                "BEGIN; SELECT size, checkpoint FROM keyledger.head WHERE id FOR UPDATE",
            ) {
                Ok(messages) => messages,
                Err(e) => {
                    let _ = client.get().client.batch_execute("ROLLBACK");
                    return Err(classify(e));
                }
            };
        let row = messages.iter().find_map(|m| match m {
            postgres::SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        });
        let parsed = row.and_then(|row| {
            let size = row.get(0)?.parse::<u64>().ok()?;
            Some(Head {
                size,
                checkpoint: row.get(1).map(str::to_string),
            })
        });
        let mut lock = PgHeadLock {
            client,
            head: Head::default(),
            open: true,
        };
        let checked = parsed
            .ok_or_else(|| StoreError::Corrupt("the head row is missing or malformed".into()))
            .and_then(|head| check_head(&head).map(|()| head));
        match checked {
            Ok(head) => {
                lock.head = head;
                Ok(Box::new(lock))
            }
            Err(e) => {
                let _ = lock.client.get().client.batch_execute("ROLLBACK");
                lock.open = false;
                Err(e)
            }
        }
    }

    fn entry(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let mut client = self.client()?;
        let row = client
            .get()
            .query_opt(
                "SELECT bytes FROM keyledger.entries WHERE seq = $1",
                &[&to_i64(seq)],
            )
            .map_err(classify)?;
        Ok(row.map(|r| r.get(0)))
    }

    fn entries(&self, from: u64, to: u64) -> EntryIter<'_> {
        Box::new(Chunked {
            next: from,
            to,
            buffer: Vec::new().into_iter(),
            done: from >= to,
            fetch: Box::new(move |from, to| {
                self.chunk(
                    "SELECT seq, bytes FROM keyledger.entries WHERE seq >= $1 AND seq < $2 ORDER BY seq LIMIT $3",
                    from,
                    to,
                )
            }),
        })
    }

    fn entries_at(&self, seqs: &[u64]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let wanted: Vec<i64> = seqs.iter().map(|&s| to_i64(s)).collect();
        let mut client = self.client()?;
        let rows = client
            .get()
            .query(
                "SELECT seq, bytes FROM keyledger.entries WHERE seq = ANY($1)",
                &[&wanted],
            )
            .map_err(classify)?;
        let mut found = std::collections::HashMap::with_capacity(rows.len());
        for row in rows {
            found.insert(from_i64(row.get(0))?, row.get::<_, Vec<u8>>(1));
        }
        Ok(seqs.iter().map(|seq| found.remove(seq)).collect())
    }

    fn end(&self) -> Result<u64, StoreError> {
        let mut client = self.client()?;
        let row = client
            .get()
            .query_one("SELECT max(seq) FROM keyledger.entries", &[])
            .map_err(classify)?;
        match row.get::<_, Option<i64>>(0) {
            Some(max) => Ok(from_i64(max)?.saturating_add(1)),
            None => Ok(0),
        }
    }

    fn node(&self, level: u8, index: u64) -> Result<Option<Hash>, StoreError> {
        Ok(self.nodes(&[(level, index)])?.pop().flatten())
    }

    fn nodes(&self, wanted: &[(u8, u64)]) -> Result<Vec<Option<Hash>>, StoreError> {
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let levels: Vec<i16> = wanted.iter().map(|(l, _)| i16::from(*l)).collect();
        let indexes: Vec<i64> = wanted.iter().map(|(_, i)| to_i64(*i)).collect();
        let mut client = self.client()?;
        let rows = client
            .get()
            .query(
                "SELECT n.level, n.idx, n.hash FROM keyledger.nodes n
                 JOIN unnest($1::smallint[], $2::bigint[]) AS w(level, idx)
                   ON n.level = w.level AND n.idx = w.idx",
                &[&levels, &indexes],
            )
            .map_err(classify)?;
        let mut found = std::collections::HashMap::with_capacity(rows.len());
        for row in &rows {
            let level = u8::try_from(row.get::<_, i16>(0))
                .map_err(|_| StoreError::Corrupt("a node level out of range".into()))?;
            found.insert(
                (level, from_i64(row.get(1))?),
                to_hash(row.get::<_, &[u8]>(2))?,
            );
        }
        Ok(wanted.iter().map(|key| found.get(key).copied()).collect())
    }

    fn leaves(&self, from: u64, to: u64) -> LeafIter<'_> {
        let chunks = Chunked {
            next: from,
            to,
            buffer: Vec::new().into_iter(),
            done: from >= to,
            fetch: Box::new(move |from, to| {
                self.chunk(
                    "SELECT idx, hash FROM keyledger.nodes WHERE level = 0 AND idx >= $1 AND idx < $2 ORDER BY idx LIMIT $3",
                    from,
                    to,
                )
            }),
        };
        Box::new(chunks.map(|item| {
            let (index, bytes) = item?;
            Ok((index, to_hash(&bytes)?))
        }))
    }

    fn wait_for_change(&self, size: u64, timeout: Duration) -> Result<(), StoreError> {
        let mut listener = self.listener.lock().unwrap_or_else(|p| p.into_inner());
        if listener.as_ref().is_none_or(Client::is_closed) {
            let mut client = self.new_client()?;
            client
                .batch_execute(&format!("LISTEN {CHANNEL}"))
                .map_err(classify)?;
            *listener = Some(client);
        }
        let Some(client) = listener.as_mut() else {
            return Ok(());
        };
        let deadline = Instant::now() + timeout;
        let waited = (|| {
            let mut notifications = client.notifications();
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match notifications.timeout_iter(left).next()? {
                    Some(note) if note.payload().parse::<u64>().is_ok_and(|s| s > size) => {
                        return Ok(());
                    }
                    Some(_) if Instant::now() < deadline => {}
                    _ => return Ok(()),
                }
            }
        })();
        waited.map_err(|e: postgres::Error| {
            *listener = None;
            classify(e)
        })
    }
}

/// A head row must hold a checkpoint for any non-empty log, and agree with it.
fn check_head(head: &Head) -> Result<(), StoreError> {
    match &head.checkpoint {
        Some(note) if checkpoint_size(note)? != head.size => Err(StoreError::Corrupt(format!(
            "the head row says size {} but its checkpoint says {}",
            head.size,
            checkpoint_size(note)?
        ))),
        None if head.size > 0 => Err(StoreError::Corrupt(
            "the head row has entries but no checkpoint".into(),
        )),
        _ => Ok(()),
    }
}

type Fetch<'a> = Box<dyn FnMut(u64, u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> + Send + 'a>;

/// Streams rows in chunks of [`CHUNK`], so a full scan holds one chunk in memory.
struct Chunked<'a> {
    next: u64,
    to: u64,
    buffer: std::vec::IntoIter<(u64, Vec<u8>)>,
    done: bool,
    fetch: Fetch<'a>,
}

impl Iterator for Chunked<'_> {
    type Item = Result<(u64, Vec<u8>), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(item) = self.buffer.next() {
            return Some(Ok(item));
        }
        if self.done {
            return None;
        }
        match (self.fetch)(self.next, self.to) {
            Ok(rows) => {
                if (rows.len() as i64) < CHUNK {
                    self.done = true;
                }
                match rows.last() {
                    Some((last, _)) => self.next = last.saturating_add(1),
                    None => self.done = true,
                }
                self.buffer = rows.into_iter();
                self.buffer.next().map(Ok)
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
