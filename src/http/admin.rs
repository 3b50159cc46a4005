//! `/v1/admin/*`: API keys, users and their tokens. Admin role only (see `Caller<AdminOnly>`
//! in every signature). Each command is answered once its events are durable, with the
//! state after them.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::auth::{AdminOnly, Caller, etag, if_match};
use super::extract::{AppPath, AppQuery};
use super::listing::{self, ListRequest, SortBy, SortKey};
use super::{ApiError, AppJson, AppState, OptionalJson, views};
use crate::access::Principal;
use crate::access::PrincipalKind;
use crate::crypto::secret::{PlainSecret, SecretKind};
use crate::domain::{
    Actor, ActorKind, ApiKey, Command, DomainError, Email, KeyChanges, KeyName, Pat, Role,
    Timestamp, User,
};

/// Default lifetime of a personal access token, in days.
pub const DEFAULT_TOKEN_DAYS: u64 = 90;
/// Longest lifetime of a personal access token, in days.
pub const MAX_TOKEN_DAYS: u64 = 365;

/// The actor recorded in events for a caller.
pub fn actor(principal: &Principal) -> Actor {
    Actor {
        kind: match principal.kind {
            PrincipalKind::ServiceAccount => ActorKind::ServiceAccount,
            PrincipalKind::User => ActorKind::User,
        },
        id: principal.id.to_string(),
        credential: Some(principal.credential_id.to_string()),
    }
}

fn new_secret(kind: SecretKind) -> Result<PlainSecret, ApiError> {
    PlainSecret::generate(kind).map_err(|_| {
        tracing::error!("the OS random number generator failed");
        ApiError::unavailable()
    })
}

fn parse_expiry(raw: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    raw.map(|s| s.parse::<Timestamp>().map_err(ApiError::from))
        .transpose()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyBody {
    name: String,
    role: String,
    #[serde(default)]
    expires_at: Option<String>,
}

pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller<AdminOnly>,
    AppJson(body): AppJson<CreateKeyBody>,
) -> Result<Response, ApiError> {
    let name = KeyName::parse(&body.name)?;
    let role = Role::parse_key_role(&body.role)?;
    let expires_at = parse_expiry(body.expires_at.as_deref())?;
    let secret = new_secret(SecretKind::ApiKey)?;
    let key_id = Uuid::now_v7();
    let command = Command::CreateApiKey {
        key_id,
        name,
        role,
        expires_at,
        secret_sha256: secret.sha256(),
        display: secret.display(),
    };
    state
        .ledger
        .execute(command, actor(&caller.principal))
        .await?;
    let (view, version) = key_view(&state, key_id)?;
    let body = json!({"api_key": view, "secret": secret.expose()});
    Ok((
        StatusCode::CREATED,
        [
            (header::ETAG, etag(version)),
            (
                header::LOCATION,
                location(&format!("/v1/admin/api-keys/{key_id}")),
            ),
        ],
        axum::Json(body),
    )
        .into_response())
}

/// A `Location` header value for a path made of ASCII.
fn location(path: &str) -> HeaderValue {
    HeaderValue::from_str(path).unwrap_or(HeaderValue::from_static("/"))
}

/// The query of a paged admin list.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    sort: Option<String>,
}

impl ListQuery {
    fn request(&self, sorts: &[SortBy]) -> Result<ListRequest, ApiError> {
        ListRequest::parse(
            self.limit,
            self.after.as_deref(),
            self.q.as_deref(),
            self.sort.as_deref(),
            sorts,
        )
    }
}

/// `{"<name>": [...], "next_after": id or null}`.
fn list_response(name: &str, items: Vec<serde_json::Value>, next_after: Option<Uuid>) -> Response {
    axum::Json(json!({ name: items, "next_after": next_after })).into_response()
}

fn key_sort_key(request: &ListRequest, key: &ApiKey, state: &AppState) -> SortKey {
    let last_used = views::later(key.last_used_at, state.activity.last_used_at(key.id));
    SortKey::of(request.sort, &key.name, last_used, key.created_seq)
}

pub async fn list_keys(
    State(state): State<AppState>,
    _caller: Caller<AdminOnly>,
    AppQuery(query): AppQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let wanted = status_filter(
        query.status.as_deref(),
        &["active", "disabled", "expired", "deleted"],
    )?;
    let request = query.request(&[SortBy::Created, SortBy::Name, SortBy::LastUsed])?;
    let now = state.ledger.clock().now();
    let (items, cursor) = state.ledger.read(|s| {
        let cursor = request
            .after
            .and_then(|id| s.api_keys.get(&id))
            .map(|k| key_sort_key(&request, k, &state));
        let items: Vec<_> = s
            .api_keys
            .values()
            .filter(|k| wanted.is_none_or(|w| k.status(now).as_str() == w))
            .filter(|k| request.matches(&k.name))
            .map(|k| (key_sort_key(&request, k, &state), k.id, k))
            .collect();
        let (page, next) = listing::page(&request, items, cursor)?;
        let views = page
            .into_iter()
            .map(|k| views::api_key(k, now, &state.activity))
            .collect();
        Ok::<_, ApiError>((views, next))
    })?;
    Ok(list_response("api_keys", items, cursor))
}

fn status_filter<'a>(raw: Option<&'a str>, allowed: &[&str]) -> Result<Option<&'a str>, ApiError> {
    match raw {
        None | Some("") => Ok(None),
        Some(s) if allowed.contains(&s) => Ok(Some(s)),
        Some(_) => Err(ApiError::bad_request(
            "invalid_query",
            format!("status must be one of {}", allowed.join(", ")),
        )),
    }
}

fn key_view(state: &AppState, key_id: Uuid) -> Result<(serde_json::Value, u64), ApiError> {
    let now = state.ledger.clock().now();
    state
        .ledger
        .read(|s| {
            s.api_keys
                .get(&key_id)
                .map(|k| (views::api_key(k, now, &state.activity), k.version))
        })
        .ok_or_else(|| DomainError::KeyNotFound.into())
}

fn key_response(state: &AppState, key_id: Uuid) -> Result<Response, ApiError> {
    let (view, version) = key_view(state, key_id)?;
    Ok((
        [(header::ETAG, etag(version))],
        axum::Json(json!({"api_key": view})),
    )
        .into_response())
}

pub async fn get_key(
    State(state): State<AppState>,
    _caller: Caller<AdminOnly>,
    AppPath(key_id): AppPath<Uuid>,
) -> Result<Response, ApiError> {
    key_response(&state, key_id)
}

/// `expires_at` in a PATCH: absent leaves it, `null` removes it, a string sets it.
fn double_option<'de, D>(d: D) -> Result<Option<Option<String>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchKeyBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    expires_at: Option<Option<String>>,
}

pub async fn patch_key(
    State(state): State<AppState>,
    caller: Caller<AdminOnly>,
    AppPath(key_id): AppPath<Uuid>,
    headers: HeaderMap,
    AppJson(body): AppJson<PatchKeyBody>,
) -> Result<Response, ApiError> {
    let if_match = if_match(&headers)?;
    let changes = KeyChanges {
        name: body.name.as_deref().map(KeyName::parse).transpose()?,
        role: body.role.as_deref().map(Role::parse_key_role).transpose()?,
        expires_at: match body.expires_at {
            None => None,
            Some(raw) => Some(parse_expiry(raw.as_deref())?),
        },
    };
    let command = Command::UpdateApiKey {
        key_id,
        changes,
        if_match,
    };
    state
        .ledger
        .execute(command, actor(&caller.principal))
        .await?;
    key_response(&state, key_id)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RegenerateBody {
    #[serde(default)]
    grace_seconds: Option<u64>,
}

pub async fn regenerate_key(
    State(state): State<AppState>,
    caller: Caller<AdminOnly>,
    AppPath(key_id): AppPath<Uuid>,
    headers: HeaderMap,
    OptionalJson(body): OptionalJson<RegenerateBody>,
) -> Result<Response, ApiError> {
    let secret = new_secret(SecretKind::ApiKey)?;
    let command = Command::RegenerateApiKey {
        key_id,
        secret_sha256: secret.sha256(),
        display: secret.display(),
        grace_seconds: body.grace_seconds.unwrap_or(0),
        if_match: if_match(&headers)?,
    };
    state
        .ledger
        .execute(command, actor(&caller.principal))
        .await?;
    let (view, version) = key_view(&state, key_id)?;
    let body = json!({"api_key": view, "secret": secret.expose()});
    Ok(([(header::ETAG, etag(version))], axum::Json(body)).into_response())
}

/// Runs a status change (disable, enable, delete) on a key, honouring `If-Match`.
async fn change_status(
    state: &AppState,
    caller: &Caller<AdminOnly>,
    headers: &HeaderMap,
    command: impl FnOnce(Option<u64>) -> Command,
) -> Result<(), ApiError> {
    let command = command(if_match(headers)?);
    state
        .ledger
        .execute(command, actor(&caller.principal))
        .await?;
    Ok(())
}

pub async fn disable_key(
    State(state): State<AppState>,
    caller: Caller<AdminOnly>,
    AppPath(key_id): AppPath<Uuid>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    change_status(&state, &caller, &headers, |if_match| {
        Command::DisableApiKey { key_id, if_match }
    })
    .await?;
    key_response(&state, key_id)
}

pub async fn enable_key(
    State(state): State<AppState>,
    caller: Caller<AdminOnly>,
    AppPath(key_id): AppPath<Uuid>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    change_status(&state, &caller, &headers, |if_match| {
        Command::EnableApiKey { key_id, if_match }
    })
    .await?;
    key_response(&state, key_id)
}

pub async fn delete_key(
    State(state): State<AppState>,
    caller: Caller<AdminOnly>,
    AppPath(key_id): AppPath<Uuid>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    change_status(&state, &caller, &headers, |if_match| {
        Command::DeleteApiKey { key_id, if_match }
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterUserBody {
    email: String,
    role: String,
}

fn user_response(
    state: &AppState,
    user_id: Uuid,
    status: StatusCode,
) -> Result<Response, ApiError> {
    let location =
        (status == StatusCode::CREATED).then(|| location(&format!("/v1/admin/users/{user_id}")));
    let found = state.ledger.read(|s| {
        s.users.get(&user_id).map(|u| {
            (
                views::user(u, &s.pats_of(user_id), &state.activity),
                u.version,
            )
        })
    });
    let (view, version) = found.ok_or(ApiError::from(DomainError::UserNotFound))?;
    let mut response = (
        status,
        [(header::ETAG, etag(version))],
        axum::Json(json!({"user": view})),
    )
        .into_response();
    if let Some(location) = location {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

pub async fn get_user(
    State(state): State<AppState>,
    _caller: Caller<AdminOnly>,
    AppPath(user_id): AppPath<Uuid>,
) -> Result<Response, ApiError> {
    user_response(&state, user_id, StatusCode::OK)
}

pub async fn register_user(
    State(state): State<AppState>,
    caller: Caller<AdminOnly>,
    AppJson(body): AppJson<RegisterUserBody>,
) -> Result<Response, ApiError> {
    let email = Email::parse(&body.email)?;
    let role = Role::parse(&body.role)?;
    let user_id = Uuid::now_v7();
    let command = Command::RegisterUser {
        user_id,
        email,
        role,
    };
    state
        .ledger
        .execute(command, actor(&caller.principal))
        .await?;
    user_response(&state, user_id, StatusCode::CREATED)
}

fn user_sort_key(
    request: &ListRequest,
    s: &crate::domain::State,
    user: &User,
    state: &AppState,
) -> SortKey {
    let last_used = s
        .pats_of(user.id)
        .iter()
        .filter_map(|p| state.activity.last_used_at(p.id))
        .max();
    let last_used = views::later(user.last_used_at, last_used);
    SortKey::of(request.sort, &user.email, last_used, user.created_seq)
}

pub async fn list_users(
    State(state): State<AppState>,
    _caller: Caller<AdminOnly>,
    AppQuery(query): AppQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let wanted = status_filter(query.status.as_deref(), &["active", "deactivated"])?;
    let request = query.request(&[SortBy::Created, SortBy::Name, SortBy::LastUsed])?;
    let (items, cursor) = state.ledger.read(|s| {
        let cursor = request
            .after
            .and_then(|id| s.users.get(&id))
            .map(|u| user_sort_key(&request, s, u, &state));
        let items: Vec<_> = s
            .users
            .values()
            .filter(|u| wanted.is_none_or(|w| u.status.as_str() == w))
            .filter(|u| request.matches(&u.email))
            .map(|u| (user_sort_key(&request, s, u, &state), u.id, u))
            .collect();
        let (page, next) = listing::page(&request, items, cursor)?;
        let views = page
            .into_iter()
            .map(|u| views::user(u, &s.pats_of(u.id), &state.activity))
            .collect();
        Ok::<_, ApiError>((views, next))
    })?;
    Ok(list_response("users", items, cursor))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchUserBody {
    role: String,
}

pub async fn patch_user(
    State(state): State<AppState>,
    caller: Caller<AdminOnly>,
    AppPath(user_id): AppPath<Uuid>,
    headers: HeaderMap,
    AppJson(body): AppJson<PatchUserBody>,
) -> Result<Response, ApiError> {
    let role = Role::parse(&body.role)?;
    let command = Command::ChangeUserRole {
        user_id,
        role,
        if_match: if_match(&headers)?,
    };
    state
        .ledger
        .execute(command, actor(&caller.principal))
        .await?;
    user_response(&state, user_id, StatusCode::OK)
}

pub async fn deactivate_user(
    State(state): State<AppState>,
    caller: Caller<AdminOnly>,
    AppPath(user_id): AppPath<Uuid>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let command = Command::DeactivateUser {
        user_id,
        if_match: if_match(&headers)?,
    };
    state
        .ledger
        .execute(command, actor(&caller.principal))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenBody {
    name: String,
    #[serde(default)]
    expires_in_days: Option<u64>,
}

/// Issues a PAT for `user_id`, on behalf of `by`. Shared by the admin and `/v1/me` routes.
pub async fn issue_token(
    state: &AppState,
    by: &Principal,
    user_id: Uuid,
    body: CreateTokenBody,
) -> Result<Response, ApiError> {
    let name = KeyName::parse(&body.name)?;
    let days = body.expires_in_days.unwrap_or(DEFAULT_TOKEN_DAYS);
    if !(1..=MAX_TOKEN_DAYS).contains(&days) {
        return Err(DomainError::InvalidLifetime.into());
    }
    let now = state.ledger.clock().now();
    // At most 365 days, so the product fits easily in an i64.
    let expires_at = Some(now.plus_seconds((days * 86_400) as i64));
    let secret = new_secret(SecretKind::Pat)?;
    let token_id = Uuid::now_v7();
    let command = Command::CreatePat {
        token_id,
        user_id,
        name,
        expires_at,
        secret_sha256: secret.sha256(),
        display: secret.display(),
    };
    state.ledger.execute(command, actor(by)).await?;
    let (view, version) = token_view(state, token_id, None)?;
    let body = json!({"token": view, "secret": secret.expose()});
    let path = if by.id == user_id {
        format!("/v1/me/tokens/{token_id}")
    } else {
        format!("/v1/admin/tokens/{token_id}")
    };
    Ok((
        StatusCode::CREATED,
        [
            (header::ETAG, etag(version)),
            (header::LOCATION, location(&path)),
        ],
        axum::Json(body),
    )
        .into_response())
}

/// A token's view and version; with `owner`, only a token of that user (another user's
/// token is indistinguishable from no token).
fn token_view(
    state: &AppState,
    token_id: Uuid,
    owner: Option<Uuid>,
) -> Result<(serde_json::Value, u64), ApiError> {
    let now = state.ledger.clock().now();
    state
        .ledger
        .read(|s| {
            s.pats
                .get(&token_id)
                .filter(|p| owner.is_none_or(|o| o == p.user_id))
                .map(|p| (views::token(p, now, &state.activity), p.version))
        })
        .ok_or(ApiError::from(DomainError::TokenNotFound))
}

/// One token, with its `ETag`.
pub fn token_response(
    state: &AppState,
    token_id: Uuid,
    owner: Option<Uuid>,
) -> Result<Response, ApiError> {
    let (view, version) = token_view(state, token_id, owner)?;
    Ok((
        [(header::ETAG, etag(version))],
        axum::Json(json!({"token": view})),
    )
        .into_response())
}

pub async fn get_token(
    State(state): State<AppState>,
    _caller: Caller<AdminOnly>,
    AppPath(token_id): AppPath<Uuid>,
) -> Result<Response, ApiError> {
    token_response(&state, token_id, None)
}

/// Lists a user's tokens, paged (see [`listing`]).
pub fn list_tokens_of(
    state: &AppState,
    user_id: Uuid,
    query: &ListQuery,
) -> Result<Response, ApiError> {
    let wanted = status_filter(query.status.as_deref(), &["active", "expired", "revoked"])?;
    let request = query.request(&[SortBy::Created, SortBy::Name, SortBy::LastUsed])?;
    let now = state.ledger.clock().now();
    let sort_key = |p: &Pat| {
        let last_used = views::later(p.last_used_at, state.activity.last_used_at(p.id));
        SortKey::of(request.sort, &p.name, last_used, p.created_seq)
    };
    let (items, cursor) = state.ledger.read(|s| {
        if !s.users.contains_key(&user_id) {
            return Err(ApiError::from(DomainError::UserNotFound));
        }
        let tokens = s.pats_of(user_id);
        let cursor = request
            .after
            .and_then(|id| tokens.iter().find(|p| p.id == id))
            .map(|p| sort_key(p));
        let items: Vec<_> = tokens
            .iter()
            .filter(|p| wanted.is_none_or(|w| p.status(now).as_str() == w))
            .filter(|p| request.matches(&p.name))
            .map(|p| (sort_key(p), p.id, *p))
            .collect();
        let (page, next) = listing::page(&request, items, cursor)?;
        let views = page
            .into_iter()
            .map(|p| views::token(p, now, &state.activity))
            .collect();
        Ok((views, next))
    })?;
    Ok(list_response("tokens", items, cursor))
}

pub async fn create_user_token(
    State(state): State<AppState>,
    caller: Caller<AdminOnly>,
    AppPath(user_id): AppPath<Uuid>,
    AppJson(body): AppJson<CreateTokenBody>,
) -> Result<Response, ApiError> {
    issue_token(&state, &caller.principal, user_id, body).await
}

pub async fn list_user_tokens(
    State(state): State<AppState>,
    _caller: Caller<AdminOnly>,
    AppPath(user_id): AppPath<Uuid>,
    AppQuery(query): AppQuery<ListQuery>,
) -> Result<Response, ApiError> {
    list_tokens_of(&state, user_id, &query)
}

pub async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller<AdminOnly>,
    AppPath(token_id): AppPath<Uuid>,
) -> Result<Response, ApiError> {
    let command = Command::RevokePat {
        token_id,
        owner: None,
    };
    state
        .ledger
        .execute(command, actor(&caller.principal))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
