//! Authentication: from a presented secret to a principal, or to the verify code that says
//! why not. Used by `/v1/verify` and by every authenticated `/v1` route, so both always
//! agree.
//!
//! Order of checks: format and checksum (no lookup for garbage), then the SHA-256 index,
//! then a constant-time comparison of the stored hash, then the credential's status at
//! `now`. Nothing here is cached: a key disabled or deleted a moment ago is refused on the
//! very next request.

use uuid::Uuid;

use crate::crypto::secret::{self, SecretKind, SecretSha256};
use crate::domain::{CredentialRef, KeyStatus, PatStatus, Role, State, Timestamp, UserStatus};

/// The outcome codes of verification (SPEC §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VerifyCode {
    Valid,
    Malformed,
    NotFound,
    Disabled,
    Expired,
    Revoked,
    Forbidden,
    /// Too many failed authentications from the client's address: not looked at.
    RateLimited,
}

impl VerifyCode {
    /// The wire form, e.g. `NOT_FOUND`.
    pub fn as_str(self) -> &'static str {
        match self {
            VerifyCode::Valid => "VALID",
            VerifyCode::Malformed => "MALFORMED",
            VerifyCode::NotFound => "NOT_FOUND",
            VerifyCode::Disabled => "DISABLED",
            VerifyCode::Expired => "EXPIRED",
            VerifyCode::Revoked => "REVOKED",
            VerifyCode::Forbidden => "FORBIDDEN",
            VerifyCode::RateLimited => "RATE_LIMITED",
        }
    }
}

/// Kind of principal behind a credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrincipalKind {
    ServiceAccount,
    User,
}

impl PrincipalKind {
    /// The wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::ServiceAccount => "service_account",
            PrincipalKind::User => "user",
        }
    }
}

/// Who a valid credential speaks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub kind: PrincipalKind,
    /// Service account id (= API key id) or user id.
    pub id: Uuid,
    /// Key name or user email.
    pub name: String,
    pub role: Role,
    pub credential_kind: SecretKind,
    /// API key id or PAT id.
    pub credential_id: Uuid,
    pub credential_display: String,
    pub credential_expires_at: Option<Timestamp>,
}

/// A refused credential: the code, and which credential it was when it is known (so its
/// refusals count in its activity).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: VerifyCode,
    /// `(credential id, principal id)` of a known credential.
    pub credential: Option<(Uuid, Uuid)>,
}

impl From<VerifyCode> for Refusal {
    fn from(code: VerifyCode) -> Refusal {
        Refusal {
            code,
            credential: None,
        }
    }
}

/// Authenticates a presented secret against the state at `now`.
pub fn authenticate(state: &State, presented: &str, now: Timestamp) -> Result<Principal, Refusal> {
    secret::parse(presented).map_err(|_| VerifyCode::Malformed)?;
    let hash = SecretSha256::of(presented);
    let credential = *state.credentials.get(&hash).ok_or(VerifyCode::NotFound)?;
    check_credential(state, credential, &hash, now)
}

fn check_credential(
    state: &State,
    credential: CredentialRef,
    hash: &SecretSha256,
    now: Timestamp,
) -> Result<Principal, Refusal> {
    match credential {
        CredentialRef::ApiKey(id) | CredentialRef::SupersededApiKey(id) => {
            let key = state.api_keys.get(&id).ok_or(VerifyCode::NotFound)?;
            let current = key.secret_sha256.ct_eq(hash);
            let grace = key
                .superseded
                .iter()
                .find(|(old, _)| old.ct_eq(hash))
                .map(|(_, until)| *until);
            if !current && grace.is_none() {
                return Err(VerifyCode::NotFound.into());
            }
            let refuse = |code| Refusal {
                code,
                credential: Some((key.id, key.id)),
            };
            match key.status(now) {
                KeyStatus::Deleted => return Err(refuse(VerifyCode::Revoked)),
                KeyStatus::Disabled => return Err(refuse(VerifyCode::Disabled)),
                KeyStatus::Expired => return Err(refuse(VerifyCode::Expired)),
                KeyStatus::Active => {}
            }
            if !current && grace.is_some_and(|until| now >= until) {
                return Err(refuse(VerifyCode::Revoked));
            }
            Ok(Principal {
                kind: PrincipalKind::ServiceAccount,
                id: key.id,
                name: key.name.clone(),
                role: key.role,
                credential_kind: SecretKind::ApiKey,
                credential_id: key.id,
                credential_display: key.display.clone(),
                credential_expires_at: key.expires_at,
            })
        }
        CredentialRef::Pat(id) => {
            let pat = state.pats.get(&id).ok_or(VerifyCode::NotFound)?;
            if !pat.secret_sha256.ct_eq(hash) {
                return Err(VerifyCode::NotFound.into());
            }
            let user = state.users.get(&pat.user_id).ok_or(VerifyCode::NotFound)?;
            let refuse = |code| Refusal {
                code,
                credential: Some((pat.id, user.id)),
            };
            match pat.status(now) {
                PatStatus::Revoked => return Err(refuse(VerifyCode::Revoked)),
                PatStatus::Expired => return Err(refuse(VerifyCode::Expired)),
                PatStatus::Active => {}
            }
            if user.status == UserStatus::Deactivated {
                return Err(refuse(VerifyCode::Revoked));
            }
            Ok(Principal {
                kind: PrincipalKind::User,
                id: user.id,
                name: user.email.clone(),
                role: user.role,
                credential_kind: SecretKind::Pat,
                credential_id: pat.id,
                credential_display: pat.display.clone(),
                credential_expires_at: pat.expires_at,
            })
        }
    }
}
