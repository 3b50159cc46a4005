//! The JSON shapes of API keys, users and tokens as the API shows them. No secret and no
//! secret hash ever appears here; only the masked `display`.

use serde_json::{Value, json};

use crate::activity::ActivityTracker;
use crate::domain::{ApiKey, Pat, Timestamp, User};

/// The later of two optional instants.
pub fn later(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// An API key (its service account). `previous_valid_until` is when the secret replaced by
/// the latest regenerate stops (or stopped) working; `null` for a key never regenerated.
pub fn api_key(key: &ApiKey, now: Timestamp, activity: &ActivityTracker) -> Value {
    json!({
        "id": key.id,
        "name": key.name,
        "role": key.role,
        "status": key.status(now).as_str(),
        "display": key.display,
        "created_at": key.created_at,
        "created_by": key.created_by,
        "updated_at": key.updated_at,
        "expires_at": key.expires_at,
        "last_used_at": later(key.last_used_at, activity.last_used_at(key.id)),
        "previous_valid_until": key.superseded.last().map(|(_, until)| *until),
        "version": key.version,
    })
}

/// A user. Users have no secret of their own, so `display` and `expires_at` are null.
pub fn user(user: &User, pats: &[&Pat], activity: &ActivityTracker) -> Value {
    let live = pats
        .iter()
        .filter_map(|p| activity.last_used_at(p.id))
        .max();
    json!({
        "id": user.id,
        "email": user.email,
        "role": user.role,
        "status": user.status.as_str(),
        "display": null,
        "created_at": user.created_at,
        "created_by": user.created_by,
        "expires_at": null,
        "last_used_at": later(user.last_used_at, live),
        "version": user.version,
    })
}

/// A personal access token.
pub fn token(pat: &Pat, now: Timestamp, activity: &ActivityTracker) -> Value {
    json!({
        "id": pat.id,
        "user_id": pat.user_id,
        "name": pat.name,
        "status": pat.status(now).as_str(),
        "display": pat.display,
        "created_at": pat.created_at,
        "created_by": pat.created_by,
        "expires_at": pat.expires_at,
        "last_used_at": later(pat.last_used_at, activity.last_used_at(pat.id)),
        "version": pat.version,
    })
}
