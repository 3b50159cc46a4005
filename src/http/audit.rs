//! `/v1/audit/*`: what auditors and compliance read. Admin and auditor roles only (except
//! the public key). Every answer is bounded by the latest checkpoint, so what an auditor
//! sees is always covered by a signed tree head.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body::Frame;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::auth::{AuditReader, Caller};
use super::extract::{AppPath, AppQuery};
use super::{ApiError, AppState};
use crate::crypto::merkle;
use crate::domain::{Stream, Timestamp};
use crate::projections::EventFilter;
use crate::store::StoreNodes;

/// Most events one page of `/v1/audit/events` returns.
pub const MAX_PAGE: usize = 1000;
/// Default page size.
pub const DEFAULT_PAGE: usize = 100;

fn parse_time(raw: Option<&str>, name: &str) -> Result<Option<Timestamp>, ApiError> {
    raw.map(|s| {
        Timestamp::parse(s).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                format!("{name} must be an RFC 3339 timestamp"),
            )
        })
    })
    .transpose()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    after: Option<u64>,
    before: Option<u64>,
    order: Option<String>,
    limit: Option<usize>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    stream: Option<String>,
    actor: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

/// Joins entry bytes into a JSON array without re-serialising them: what is returned is
/// exactly what was signed.
fn json_array(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.iter().map(|e| e.len() + 1).sum::<usize>() + 2);
    out.push(b'[');
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(e);
    }
    out.push(b']');
    out
}

/// The bytes of the entries at `seqs`, read on a blocking thread (the store may be a
/// remote database) in one store call.
async fn read_entries(state: &AppState, seqs: Vec<u64>) -> Result<Vec<Vec<u8>>, ApiError> {
    let store = state.ledger.store().clone();
    let unavailable = if state.ledger.is_shared() {
        ApiError::ledger_unavailable
    } else {
        ApiError::unavailable
    };
    let found = tokio::task::spawn_blocking(move || {
        let found = store.entries_at(&seqs)?;
        Ok::<_, crate::store::StoreError>(seqs.into_iter().zip(found).collect::<Vec<_>>())
    })
    .await
    .map_err(|_| unavailable())?
    .map_err(|e| {
        tracing::error!(error = %e, "reading entries failed");
        unavailable()
    })?;
    found
        .into_iter()
        .map(|(seq, bytes)| {
            bytes.ok_or_else(|| {
                tracing::error!(seq, "indexed entry missing from the store");
                unavailable()
            })
        })
        .collect()
}

fn json_response(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

pub async fn events(
    State(state): State<AppState>,
    _caller: Caller<AuditReader>,
    AppQuery(q): AppQuery<EventsQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and {MAX_PAGE}"),
        ));
    }
    let stream = match q.stream.as_deref() {
        Some(s) => Some(Stream::parse(s).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                "stream must look like api_key/<uuid>, user/<uuid>, pat/<uuid>, activity/<uuid> or ledger",
            )
        })?),
        None => None,
    };
    let descending = match q.order.as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "order must be asc or desc",
            ));
        }
    };
    let filter = EventFilter {
        after: q.after,
        before: q.before,
        descending,
        event_type: q.event_type,
        stream,
        actor: q.actor,
        since: parse_time(q.since.as_deref(), "since")?,
        until: parse_time(q.until.as_deref(), "until")?,
    };
    let size = state.ledger.checkpoint().checkpoint.size;
    let page = state
        .ledger
        .read_projections(|p| p.audit.query(&filter, limit, size));
    let entries = read_entries(&state, page.seqs.clone()).await?;
    let mut body = b"{\"events\":".to_vec();
    body.extend_from_slice(&json_array(&entries));
    body.extend_from_slice(if descending {
        b",\"next_before\":".as_slice()
    } else {
        b",\"next_after\":".as_slice()
    });
    match page.next_after {
        Some(n) => body.extend_from_slice(n.to_string().as_bytes()),
        None => body.extend_from_slice(b"null"),
    }
    body.push(b'}');
    Ok(json_response(body))
}

pub async fn key_history(
    State(state): State<AppState>,
    _caller: Caller<AuditReader>,
    AppPath(key_id): AppPath<Uuid>,
) -> Result<Response, ApiError> {
    if state.ledger.read(|s| !s.api_keys.contains_key(&key_id)) {
        return Err(ApiError::not_found(
            "api_key_not_found",
            "no API key with this id",
        ));
    }
    let size = state.ledger.checkpoint().checkpoint.size;
    let seqs: Vec<u64> = state.ledger.read_projections(|p| {
        p.audit
            .stream_seqs(&Stream::ApiKey(key_id))
            .iter()
            .copied()
            .filter(|&s| s < size)
            .collect()
    });
    let entries = read_entries(&state, seqs).await?;
    let mut body = format!("{{\"key_id\":\"{key_id}\",\"events\":").into_bytes();
    body.extend_from_slice(&json_array(&entries));
    body.push(b'}');
    Ok(json_response(body))
}

/// Who a principal id names, for auditors reading actors in the log: a service account
/// (`name`: its key's name) or a user (`name`: its email), with role and status. Names are not secrets, and
/// auditors see them in every lifecycle event anyway.
pub async fn principal(
    State(state): State<AppState>,
    _caller: Caller<AuditReader>,
    AppPath(principal_id): AppPath<Uuid>,
) -> Result<Response, ApiError> {
    let now = state.ledger.clock().now();
    let found = state.ledger.read(|s| {
        if let Some(k) = s.api_keys.get(&principal_id) {
            Some(json!({
                "id": k.id, "kind": "service_account", "name": k.name, "role": k.role,
                "status": k.status(now).as_str(),
            }))
        } else {
            s.users.get(&principal_id).map(|u| {
                json!({
                    "id": u.id, "kind": "user", "name": u.email, "role": u.role,
                    "status": u.status.as_str(),
                })
            })
        }
    });
    match found {
        Some(principal) => Ok(axum::Json(json!({ "principal": principal })).into_response()),
        None => Err(ApiError::not_found(
            "principal_not_found",
            "no service account or user with this id",
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivityQuery {
    since: Option<String>,
    until: Option<String>,
}

pub async fn principal_activity(
    State(state): State<AppState>,
    _caller: Caller<AuditReader>,
    AppPath(principal_id): AppPath<Uuid>,
    AppQuery(q): AppQuery<ActivityQuery>,
) -> Result<Response, ApiError> {
    let since = parse_time(q.since.as_deref(), "since")?.map(|t| t.day());
    let until = parse_time(q.until.as_deref(), "until")?.map(|t| t.day());
    let known = state
        .ledger
        .read(|s| s.api_keys.contains_key(&principal_id) || s.users.contains_key(&principal_id));
    if !known {
        return Err(ApiError::not_found(
            "principal_not_found",
            "no service account or user with this id",
        ));
    }
    let (last_used_at, counts) = state.ledger.read_projections(|p| match p.activity.of(principal_id) {
        None => (None, Vec::new()),
        Some(a) => {
            let counts: Vec<_> = a
                .counts
                .iter()
                .filter(|((day, ..), _)| {
                    since.as_ref().is_none_or(|s| day >= s) && until.as_ref().is_none_or(|u| day <= u)
                })
                .map(|((day, method, route, outcome), count)| {
                    json!({"day": day, "method": method, "route": route, "outcome": outcome, "count": count})
                })
                .collect();
            (a.last_used_at, counts)
        }
    });
    Ok(axum::Json(json!({
        "principal_id": principal_id,
        "last_used_at": last_used_at,
        "counts": counts,
    }))
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    after: Option<u64>,
    until: Option<u64>,
}

/// Entries read per store pass while exporting.
const EXPORT_CHUNK: u64 = 512;

/// A response body fed by a channel: the export streams in constant memory.
struct ChannelBody(mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|item| item.map(|r| r.map(Frame::data)))
    }
}

pub async fn export(
    State(state): State<AppState>,
    _caller: Caller<AuditReader>,
    AppQuery(q): AppQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    let size = state.ledger.checkpoint().checkpoint.size;
    let from = q.after.map_or(0, |a| a.saturating_add(1));
    // `until` is inclusive; never past the checkpoint.
    let to = q.until.map_or(size, |u| u.saturating_add(1).min(size));
    let store = state.ledger.store().clone();
    let (tx, rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let mut next = from;
        while next < to {
            let end = (next + EXPORT_CHUNK).min(to);
            let mut chunk = Vec::with_capacity(64 * 1024);
            for item in store.entries(next, end) {
                match item {
                    Ok((_, bytes)) => {
                        chunk.extend_from_slice(&bytes);
                        chunk.push(b'\n');
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "export: reading the log failed");
                        let _ =
                            tx.blocking_send(Err(std::io::Error::other("reading the log failed")));
                        return;
                    }
                }
            }
            if tx.blocking_send(Ok(Bytes::from(chunk))).is_err() {
                return; // the client went away
            }
            next = end;
        }
    });
    let filename = if to > from {
        format!("keyledger-{}-{}.ndjson", from, to - 1)
    } else {
        "keyledger-empty.ndjson".to_string()
    };
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        Body::new(ChannelBody(rx)),
    )
        .into_response())
}

pub async fn checkpoint(State(state): State<AppState>, _caller: Caller<AuditReader>) -> Response {
    let note = state.ledger.checkpoint().note.clone();
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], note).into_response()
}

pub async fn public_key(State(state): State<AppState>) -> Response {
    let ledger = &state.ledger;
    axum::Json(json!({
        "origin": ledger.origin(),
        "vkey": ledger.vkey(),
        "public_key": STANDARD.encode(ledger.public_key()),
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionQuery {
    seq: u64,
    size: Option<u64>,
}

fn proof_error(e: merkle::MerkleError) -> ApiError {
    tracing::error!(error = %e, "building a proof failed");
    ApiError::unavailable()
}

fn b64(hashes: &[merkle::Hash]) -> Vec<String> {
    hashes.iter().map(|h| STANDARD.encode(h)).collect()
}

pub async fn inclusion_proof(
    State(state): State<AppState>,
    _caller: Caller<AuditReader>,
    AppQuery(q): AppQuery<InclusionQuery>,
) -> Result<Response, ApiError> {
    let latest = state.ledger.checkpoint().checkpoint.size;
    let size = q.size.unwrap_or(latest);
    if size > latest || q.seq >= size {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("need seq < size <= {latest} (the latest checkpoint's size)"),
        ));
    }
    let store = state.ledger.store().clone();
    let seq = q.seq;
    let proof = tokio::task::spawn_blocking(move || {
        let nodes = StoreNodes(store.as_ref());
        let root = merkle::root_at(&nodes, size)?;
        let hashes = merkle::inclusion_proof(&nodes, seq, size)?;
        Ok::<_, merkle::MerkleError>((root, hashes))
    })
    .await
    .map_err(|_| ApiError::unavailable())?
    .map_err(proof_error)?;
    Ok(axum::Json(json!({
        "seq": seq,
        "size": size,
        "root": STANDARD.encode(proof.0),
        "hashes": b64(&proof.1),
    }))
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    from: u64,
    to: Option<u64>,
}

pub async fn consistency_proof(
    State(state): State<AppState>,
    _caller: Caller<AuditReader>,
    AppQuery(q): AppQuery<ConsistencyQuery>,
) -> Result<Response, ApiError> {
    let latest = state.ledger.checkpoint().checkpoint.size;
    let to = q.to.unwrap_or(latest);
    if to > latest || q.from > to || q.from == 0 {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("need 0 < from <= to <= {latest} (the latest checkpoint's size)"),
        ));
    }
    let store = state.ledger.store().clone();
    let from = q.from;
    let hashes = tokio::task::spawn_blocking(move || {
        merkle::consistency_proof(&StoreNodes(store.as_ref()), from, to)
    })
    .await
    .map_err(|_| ApiError::unavailable())?
    .map_err(proof_error)?;
    Ok(axum::Json(json!({"from": from, "to": to, "hashes": b64(&hashes)})).into_response())
}
