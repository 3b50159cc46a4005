//! The domain core: commands, events and the state they build. Pure: no I/O, no clock, no
//! randomness. Secrets and ids are made by the caller and arrive inside commands, `now`
//! arrives as an argument.
//!
//! - [`decide`] turns a command and the current [`State`] into the events to append, or a
//!   typed refusal.
//! - [`State::apply`] folds one committed entry into the state. It is the only way state
//!   changes, so replaying the log rebuilds exactly the state that decided it.

pub mod chain;
pub mod events;
mod state;
pub mod text;
mod types;

pub use events::{Actor, ActorKind, Entry, EventData, Stream};
pub use state::{ApiKey, CredentialRef, KeyStatus, Pat, PatStatus, State, User, UserStatus};
pub use types::{Clock, Email, KeyName, ManualClock, Role, SystemClock, Timestamp};

use uuid::Uuid;

use crate::crypto::secret::SecretSha256;
use events::*;

/// Longest grace period for a regenerated key's previous secret: 7 days.
pub const MAX_GRACE_SECONDS: u64 = 7 * 24 * 3600;

/// A refusal by the domain. Each maps to one HTTP status and error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("{0}")]
    InvalidName(String),
    #[error("role must be one of admin, basic, limited, auditor")]
    UnknownRole,
    #[error("API keys take the roles admin, basic or limited")]
    RoleNotForApiKeys,
    #[error("email must contain '@' with text on both sides")]
    InvalidEmail,
    #[error("email {0}")]
    UnsafeEmail(&'static str),
    #[error("timestamp must be RFC 3339, e.g. 2027-01-31T00:00:00Z")]
    InvalidTimestamp,
    #[error("expiry must be in the future")]
    ExpiryInPast,
    #[error("grace period must be at most 7 days (604800 seconds)")]
    GraceTooLong,
    #[error("token lifetime must be between 1 and 365 days")]
    InvalidLifetime,
    #[error("another live API key already has this name (names compare ignoring case and width)")]
    NameTaken,
    #[error("an active user already has this email")]
    EmailTaken,
    #[error("no API key with this id")]
    KeyNotFound,
    #[error("this API key is deleted; deleted keys cannot change")]
    KeyDeleted,
    #[error("no user with this id")]
    UserNotFound,
    #[error("this user is deactivated; deactivated users cannot change")]
    UserDeactivated,
    #[error("no token with this id")]
    TokenNotFound,
    #[error("this token is already revoked")]
    TokenRevoked,
    #[error("the resource is at version {actual}, not {expected}")]
    VersionMismatch { expected: u64, actual: u64 },
    #[error(
        "this would leave no active admin credential; create another admin key first (a stopped server can be recovered with `keyledger recover-admin`)"
    )]
    LastAdmin,
    #[error("the ledger is already initialized")]
    AlreadyInitialized,
    #[error("the ledger is not initialized")]
    NotInitialized,
}

/// Requested changes to an API key (a `PATCH`); absent fields stay as they are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyChanges {
    pub name: Option<KeyName>,
    pub role: Option<Role>,
    /// `Some(None)` removes the expiry.
    pub expires_at: Option<Option<Timestamp>>,
}

/// A command: what someone asks the ledger to do. Ids, secrets' hashes and display forms
/// are made by the caller (they need randomness); `if_match` is the `If-Match` version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Initialize {
        origin: String,
        public_key: String,
    },
    /// Makes a log usable, once, whichever node gets there first: on an empty log the
    /// genesis and a bootstrap admin key; on a log with a genesis but no key and no user (a
    /// crash right after the genesis) just the key; otherwise nothing.
    Bootstrap {
        origin: String,
        public_key: String,
        key_id: Uuid,
        name: KeyName,
        secret_sha256: SecretSha256,
        display: String,
    },
    CreateApiKey {
        key_id: Uuid,
        name: KeyName,
        role: Role,
        expires_at: Option<Timestamp>,
        secret_sha256: SecretSha256,
        display: String,
    },
    UpdateApiKey {
        key_id: Uuid,
        changes: KeyChanges,
        if_match: Option<u64>,
    },
    RegenerateApiKey {
        key_id: Uuid,
        secret_sha256: SecretSha256,
        display: String,
        grace_seconds: u64,
        if_match: Option<u64>,
    },
    DisableApiKey {
        key_id: Uuid,
        if_match: Option<u64>,
    },
    EnableApiKey {
        key_id: Uuid,
        if_match: Option<u64>,
    },
    DeleteApiKey {
        key_id: Uuid,
        if_match: Option<u64>,
    },
    RegisterUser {
        user_id: Uuid,
        email: Email,
        role: Role,
    },
    ChangeUserRole {
        user_id: Uuid,
        role: Role,
        if_match: Option<u64>,
    },
    DeactivateUser {
        user_id: Uuid,
        if_match: Option<u64>,
    },
    CreatePat {
        token_id: Uuid,
        user_id: Uuid,
        name: KeyName,
        expires_at: Option<Timestamp>,
        secret_sha256: SecretSha256,
        display: String,
    },
    RevokePat {
        token_id: Uuid,
        /// When set, the token must belong to this user (a user revoking their own).
        owner: Option<Uuid>,
    },
    RecordActivity(CredentialActivity),
}

/// Decides which events a command produces against the current state. Pure.
pub fn decide(
    state: &State,
    command: &Command,
    now: Timestamp,
) -> Result<Vec<EventData>, DomainError> {
    if !matches!(
        command,
        Command::Initialize { .. } | Command::Bootstrap { .. }
    ) && state.origin.is_none()
    {
        return Err(DomainError::NotInitialized);
    }
    match command {
        Command::Bootstrap {
            origin,
            public_key,
            key_id,
            name,
            secret_sha256,
            display,
        } => {
            let mut out = Vec::new();
            if state.origin.is_none() {
                out.push(EventData::LedgerInitialized(LedgerInitialized {
                    origin: origin.clone(),
                    public_key: public_key.clone(),
                }));
            }
            if state.api_keys.is_empty() && state.users.is_empty() {
                out.push(EventData::ApiKeyCreated(ApiKeyCreated {
                    key_id: *key_id,
                    name: name.as_str().to_string(),
                    role: Role::Admin,
                    display: display.clone(),
                    secret_sha256: *secret_sha256,
                    expires_at: None,
                }));
            }
            Ok(out)
        }
        Command::Initialize { origin, public_key } => {
            if state.origin.is_some() {
                return Err(DomainError::AlreadyInitialized);
            }
            Ok(vec![EventData::LedgerInitialized(LedgerInitialized {
                origin: origin.clone(),
                public_key: public_key.clone(),
            })])
        }
        Command::CreateApiKey {
            key_id,
            name,
            role,
            expires_at,
            secret_sha256,
            display,
        } => {
            if *role == Role::Auditor {
                return Err(DomainError::RoleNotForApiKeys);
            }
            check_future(*expires_at, now)?;
            check_name_free(state, name, None)?;
            Ok(vec![EventData::ApiKeyCreated(ApiKeyCreated {
                key_id: *key_id,
                name: name.as_str().to_string(),
                role: *role,
                display: display.clone(),
                secret_sha256: *secret_sha256,
                expires_at: *expires_at,
            })])
        }
        Command::UpdateApiKey {
            key_id,
            changes,
            if_match,
        } => {
            let key = live_key(state, *key_id, *if_match)?;
            let mut out = Vec::new();
            if let Some(name) = &changes.name {
                if name.as_str() != key.name {
                    check_name_free(state, name, Some(*key_id))?;
                    out.push(EventData::ApiKeyRenamed(ApiKeyRenamed {
                        key_id: *key_id,
                        from: key.name.clone(),
                        to: name.as_str().to_string(),
                    }));
                }
            }
            if let Some(role) = changes.role {
                if role == Role::Auditor {
                    return Err(DomainError::RoleNotForApiKeys);
                }
                if role != key.role {
                    if role != Role::Admin {
                        keeps_an_admin(state, now, &[*key_id])?;
                    }
                    out.push(EventData::ApiKeyRoleChanged(ApiKeyRoleChanged {
                        key_id: *key_id,
                        from: key.role,
                        to: role,
                    }));
                }
            }
            if let Some(expires_at) = changes.expires_at {
                check_future(expires_at, now)?;
                if expires_at != key.expires_at {
                    out.push(EventData::ApiKeyExpiryChanged(ApiKeyExpiryChanged {
                        key_id: *key_id,
                        from: key.expires_at,
                        to: expires_at,
                    }));
                }
            }
            Ok(out)
        }
        Command::RegenerateApiKey {
            key_id,
            secret_sha256,
            display,
            grace_seconds,
            if_match,
        } => {
            let key = live_key(state, *key_id, *if_match)?;
            if *grace_seconds > MAX_GRACE_SECONDS {
                return Err(DomainError::GraceTooLong);
            }
            // Bounded above by MAX_GRACE_SECONDS, so the cast cannot wrap.
            let valid_until = now.plus_seconds(*grace_seconds as i64);
            Ok(vec![EventData::ApiKeyRegenerated(ApiKeyRegenerated {
                key_id: *key_id,
                display: display.clone(),
                secret_sha256: *secret_sha256,
                previous_display: key.display.clone(),
                previous_secret_sha256: key.secret_sha256,
                previous_valid_until: valid_until,
            })])
        }
        Command::DisableApiKey { key_id, if_match } => {
            let key = live_key(state, *key_id, *if_match)?;
            if key.disabled {
                return Ok(vec![]);
            }
            keeps_an_admin(state, now, &[*key_id])?;
            Ok(vec![EventData::ApiKeyDisabled(status_change(
                *key_id, "active", "disabled",
            ))])
        }
        Command::EnableApiKey { key_id, if_match } => {
            let key = live_key(state, *key_id, *if_match)?;
            if !key.disabled {
                return Ok(vec![]);
            }
            Ok(vec![EventData::ApiKeyEnabled(status_change(
                *key_id, "disabled", "active",
            ))])
        }
        Command::DeleteApiKey { key_id, if_match } => {
            let key = live_key(state, *key_id, *if_match)?;
            keeps_an_admin(state, now, &[*key_id])?;
            let from = if key.disabled { "disabled" } else { "active" };
            Ok(vec![EventData::ApiKeyDeleted(status_change(
                *key_id, from, "deleted",
            ))])
        }
        Command::RegisterUser {
            user_id,
            email,
            role,
        } => {
            let wanted = text::fold(email.as_str());
            let taken = state
                .users
                .values()
                .any(|u| u.status == UserStatus::Active && text::fold(&u.email) == wanted);
            if taken {
                return Err(DomainError::EmailTaken);
            }
            Ok(vec![EventData::UserRegistered(UserRegistered {
                user_id: *user_id,
                email: email.as_str().to_string(),
                role: *role,
            })])
        }
        Command::ChangeUserRole {
            user_id,
            role,
            if_match,
        } => {
            let user = active_user(state, *user_id, *if_match)?;
            if user.role == *role {
                return Ok(vec![]);
            }
            if *role != Role::Admin {
                keeps_an_admin(
                    state,
                    now,
                    &state.pats_by_user.get(user_id).cloned().unwrap_or_default(),
                )?;
            }
            Ok(vec![EventData::UserRoleChanged(UserRoleChanged {
                user_id: *user_id,
                from: user.role,
                to: *role,
            })])
        }
        Command::DeactivateUser { user_id, if_match } => {
            active_user(state, *user_id, *if_match)?;
            keeps_an_admin(
                state,
                now,
                &state.pats_by_user.get(user_id).cloned().unwrap_or_default(),
            )?;
            let mut out = vec![EventData::UserDeactivated(UserDeactivated {
                user_id: *user_id,
                from: "active".into(),
                to: "deactivated".into(),
            })];
            for pat in state.pats_of(*user_id) {
                if !pat.revoked {
                    out.push(EventData::PatRevoked(PatRevoked {
                        token_id: pat.id,
                        user_id: *user_id,
                        from: pat.status(now).as_str().into(),
                        to: "revoked".into(),
                        reason: "user_deactivated".into(),
                    }));
                }
            }
            Ok(out)
        }
        Command::CreatePat {
            token_id,
            user_id,
            name,
            expires_at,
            secret_sha256,
            display,
        } => {
            active_user(state, *user_id, None)?;
            check_future(*expires_at, now)?;
            Ok(vec![EventData::PatCreated(PatCreated {
                token_id: *token_id,
                user_id: *user_id,
                name: name.as_str().to_string(),
                display: display.clone(),
                secret_sha256: *secret_sha256,
                expires_at: *expires_at,
            })])
        }
        Command::RevokePat { token_id, owner } => {
            let pat = state.pats.get(token_id).ok_or(DomainError::TokenNotFound)?;
            if owner.is_some_and(|o| o != pat.user_id) {
                // Someone else's token is indistinguishable from no token.
                return Err(DomainError::TokenNotFound);
            }
            if pat.revoked {
                return Err(DomainError::TokenRevoked);
            }
            keeps_an_admin(state, now, &[*token_id])?;
            Ok(vec![EventData::PatRevoked(PatRevoked {
                token_id: *token_id,
                user_id: pat.user_id,
                from: pat.status(now).as_str().into(),
                to: "revoked".into(),
                reason: "revoked".into(),
            })])
        }
        Command::RecordActivity(activity) => {
            Ok(vec![EventData::CredentialActivity(activity.clone())])
        }
    }
}

fn status_change(key_id: Uuid, from: &str, to: &str) -> ApiKeyStatusChanged {
    ApiKeyStatusChanged {
        key_id,
        from: from.to_string(),
        to: to.to_string(),
    }
}

fn check_future(expires_at: Option<Timestamp>, now: Timestamp) -> Result<(), DomainError> {
    match expires_at {
        Some(t) if t <= now => Err(DomainError::ExpiryInPast),
        _ => Ok(()),
    }
}

fn check_name_free(state: &State, name: &KeyName, except: Option<Uuid>) -> Result<(), DomainError> {
    match state.key_names.get(&name.folded()) {
        Some(owner) if Some(*owner) != except => Err(DomainError::NameTaken),
        _ => Ok(()),
    }
}

/// Refuses a change that would take away the last active admin credential: with no admin,
/// nobody could ever administer the log again. `removed` are the credentials (API key or
/// PAT ids) the change disables; those that are not active admin credentials are ignored.
fn keeps_an_admin(state: &State, now: Timestamp, removed: &[Uuid]) -> Result<(), DomainError> {
    let mut admins = state.admin_credentials(now);
    let takes_one = admins.clone().any(|id| removed.contains(&id));
    if takes_one && admins.all(|id| removed.contains(&id)) {
        return Err(DomainError::LastAdmin);
    }
    Ok(())
}

fn check_version(actual: u64, if_match: Option<u64>) -> Result<(), DomainError> {
    match if_match {
        Some(expected) if expected != actual => {
            Err(DomainError::VersionMismatch { expected, actual })
        }
        _ => Ok(()),
    }
}

fn live_key(state: &State, key_id: Uuid, if_match: Option<u64>) -> Result<&ApiKey, DomainError> {
    let key = state
        .api_keys
        .get(&key_id)
        .ok_or(DomainError::KeyNotFound)?;
    check_version(key.version, if_match)?;
    if key.deleted {
        return Err(DomainError::KeyDeleted);
    }
    Ok(key)
}

fn active_user(state: &State, user_id: Uuid, if_match: Option<u64>) -> Result<&User, DomainError> {
    let user = state.users.get(&user_id).ok_or(DomainError::UserNotFound)?;
    check_version(user.version, if_match)?;
    if user.status == UserStatus::Deactivated {
        return Err(DomainError::UserDeactivated);
    }
    Ok(user)
}

#[cfg(test)]
mod tests;
