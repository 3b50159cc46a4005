//! The state the log builds: every API key, user and PAT, the index from a secret's SHA-256
//! to its credential, and each stream's current version.
//!
//! Invariants: state changes only through [`State::apply`], one committed entry at a time and
//! in seq order; applying an entry whose seq is below [`State::size`] is a no-op, so replay is
//! idempotent. Statuses that depend on time (`expired`) are computed on read from `now`,
//! never stored.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::events::{Entry, EventData, Stream};
use super::text;
use super::{Role, Timestamp};
use crate::crypto::secret::SecretSha256;

/// Status of an API key at some instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyStatus {
    Active,
    Disabled,
    Expired,
    Deleted,
}

impl KeyStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Disabled => "disabled",
            KeyStatus::Expired => "expired",
            KeyStatus::Deleted => "deleted",
        }
    }
}

/// A service account and its API key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
    pub display: String,
    pub secret_sha256: SecretSha256,
    pub expires_at: Option<Timestamp>,
    pub disabled: bool,
    pub deleted: bool,
    pub created_at: Timestamp,
    pub created_by: String,
    pub created_seq: u64,
    pub updated_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
    /// Stream version: the ETag.
    pub version: u64,
    /// Secrets replaced by `regenerate`, with the instant each stops working.
    pub superseded: Vec<(SecretSha256, Timestamp)>,
}

impl ApiKey {
    /// Status at `now`: deleted, then disabled, then expired, else active.
    pub fn status(&self, now: Timestamp) -> KeyStatus {
        if self.deleted {
            KeyStatus::Deleted
        } else if self.disabled {
            KeyStatus::Disabled
        } else if self.expires_at.is_some_and(|t| t <= now) {
            KeyStatus::Expired
        } else {
            KeyStatus::Active
        }
    }
}

/// Status of a user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserStatus {
    Active,
    Deactivated,
}

impl UserStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Deactivated => "deactivated",
        }
    }
}

/// A human principal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub role: Role,
    pub status: UserStatus,
    pub created_at: Timestamp,
    pub created_by: String,
    pub created_seq: u64,
    pub last_used_at: Option<Timestamp>,
    pub version: u64,
}

/// Status of a personal access token at some instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatStatus {
    Active,
    Expired,
    Revoked,
}

impl PatStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            PatStatus::Active => "active",
            PatStatus::Expired => "expired",
            PatStatus::Revoked => "revoked",
        }
    }
}

/// A personal access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pat {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub display: String,
    pub secret_sha256: SecretSha256,
    pub expires_at: Option<Timestamp>,
    pub revoked: bool,
    pub created_at: Timestamp,
    pub created_by: String,
    pub created_seq: u64,
    pub last_used_at: Option<Timestamp>,
    pub version: u64,
}

impl Pat {
    /// Status at `now`.
    pub fn status(&self, now: Timestamp) -> PatStatus {
        if self.revoked {
            PatStatus::Revoked
        } else if self.expires_at.is_some_and(|t| t <= now) {
            PatStatus::Expired
        } else {
            PatStatus::Active
        }
    }
}

/// What a secret's hash points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CredentialRef {
    /// The current secret of an API key.
    ApiKey(Uuid),
    /// A secret an API key had before a regenerate.
    SupersededApiKey(Uuid),
    /// A personal access token.
    Pat(Uuid),
}

/// Everything the log has built so far.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// The log's origin, from genesis; `None` before seq 0.
    pub origin: Option<String>,
    /// Base64 Ed25519 public key from genesis.
    pub public_key: Option<String>,
    /// Number of entries applied (the next seq).
    pub size: u64,
    /// `at` of the last entry applied.
    pub last_at: Option<Timestamp>,
    pub api_keys: HashMap<Uuid, ApiKey>,
    pub users: HashMap<Uuid, User>,
    pub pats: HashMap<Uuid, Pat>,
    /// Names of keys that are not deleted, folded by [`text::fold`].
    pub key_names: HashMap<String, Uuid>,
    /// Each user's tokens in creation order (an index over `pats`).
    pub pats_by_user: HashMap<Uuid, Vec<Uuid>>,
    /// Secret hash to credential, for authentication.
    pub credentials: HashMap<SecretSha256, CredentialRef>,
    /// Current version of every stream.
    pub streams: HashMap<Stream, u64>,
}

impl State {
    /// Current version of a stream (0 when it has no events).
    pub fn version(&self, stream: &Stream) -> u64 {
        self.streams.get(stream).copied().unwrap_or(0)
    }

    /// A user's tokens, oldest first.
    pub fn pats_of(&self, user_id: Uuid) -> Vec<&Pat> {
        self.pats_by_user
            .get(&user_id)
            .map(|ids| ids.iter().filter_map(|id| self.pats.get(id)).collect())
            .unwrap_or_default()
    }

    /// Ids of the credentials that can administer the log at `now`: active admin API keys
    /// and the active tokens of active admin users.
    pub fn admin_credentials(&self, now: Timestamp) -> impl Iterator<Item = Uuid> + Clone + '_ {
        let keys = self
            .api_keys
            .values()
            .filter(move |k| k.role == Role::Admin && k.status(now) == KeyStatus::Active)
            .map(|k| k.id);
        let tokens = self
            .users
            .values()
            .filter(|u| u.role == Role::Admin && u.status == UserStatus::Active)
            .flat_map(|u| self.pats_of(u.id))
            .filter(move |p| p.status(now) == PatStatus::Active)
            .map(|p| p.id);
        keys.chain(tokens)
    }

    /// API keys, oldest first.
    pub fn api_keys_by_creation(&self) -> Vec<&ApiKey> {
        let mut keys: Vec<&ApiKey> = self.api_keys.values().collect();
        keys.sort_by_key(|k| k.created_seq);
        keys
    }

    /// Users, oldest first.
    pub fn users_by_creation(&self) -> Vec<&User> {
        let mut users: Vec<&User> = self.users.values().collect();
        users.sort_by_key(|u| u.created_seq);
        users
    }

    /// Folds one committed entry into the state. Entries must come in seq order; an entry
    /// already applied is ignored.
    pub fn apply(&mut self, entry: &Entry) {
        if entry.seq < self.size {
            return;
        }
        self.size = entry.seq + 1;
        self.last_at = Some(entry.at);
        self.streams.insert(entry.stream, entry.version);
        let at = entry.at;
        let version = entry.version;
        match &entry.data {
            EventData::LedgerInitialized(d) => {
                self.origin = Some(d.origin.clone());
                self.public_key = Some(d.public_key.clone());
            }
            EventData::SignerRotated(d) => {
                self.public_key = Some(d.to.clone());
            }
            EventData::ApiKeyCreated(d) => {
                self.key_names.insert(text::fold(&d.name), d.key_id);
                self.credentials
                    .insert(d.secret_sha256, CredentialRef::ApiKey(d.key_id));
                self.api_keys.insert(
                    d.key_id,
                    ApiKey {
                        id: d.key_id,
                        name: d.name.clone(),
                        role: d.role,
                        display: d.display.clone(),
                        secret_sha256: d.secret_sha256,
                        expires_at: d.expires_at,
                        disabled: false,
                        deleted: false,
                        created_at: at,
                        created_by: entry.actor.id.clone(),
                        created_seq: entry.seq,
                        updated_at: at,
                        last_used_at: None,
                        version,
                        superseded: Vec::new(),
                    },
                );
            }
            EventData::ApiKeyRenamed(d) => {
                if let Some(key) = self.api_keys.get_mut(&d.key_id) {
                    self.key_names.remove(&text::fold(&key.name));
                    self.key_names.insert(text::fold(&d.to), d.key_id);
                    key.name = d.to.clone();
                    key.updated_at = at;
                    key.version = version;
                }
            }
            EventData::ApiKeyRoleChanged(d) => {
                if let Some(key) = self.api_keys.get_mut(&d.key_id) {
                    key.role = d.to;
                    key.updated_at = at;
                    key.version = version;
                }
            }
            EventData::ApiKeyExpiryChanged(d) => {
                if let Some(key) = self.api_keys.get_mut(&d.key_id) {
                    key.expires_at = d.to;
                    key.updated_at = at;
                    key.version = version;
                }
            }
            EventData::ApiKeyRegenerated(d) => {
                if let Some(key) = self.api_keys.get_mut(&d.key_id) {
                    key.superseded
                        .push((d.previous_secret_sha256, d.previous_valid_until));
                    self.credentials.insert(
                        d.previous_secret_sha256,
                        CredentialRef::SupersededApiKey(d.key_id),
                    );
                    self.credentials
                        .insert(d.secret_sha256, CredentialRef::ApiKey(d.key_id));
                    key.secret_sha256 = d.secret_sha256;
                    key.display = d.display.clone();
                    key.updated_at = at;
                    key.version = version;
                }
            }
            EventData::ApiKeyDisabled(d) | EventData::ApiKeyEnabled(d) => {
                if let Some(key) = self.api_keys.get_mut(&d.key_id) {
                    key.disabled = d.to == "disabled";
                    key.updated_at = at;
                    key.version = version;
                }
            }
            EventData::ApiKeyDeleted(d) => {
                if let Some(key) = self.api_keys.get_mut(&d.key_id) {
                    // The name is free again; the hashes stay indexed so a deleted key's
                    // secret answers REVOKED rather than NOT_FOUND.
                    self.key_names.remove(&text::fold(&key.name));
                    key.deleted = true;
                    key.updated_at = at;
                    key.version = version;
                }
            }
            EventData::UserRegistered(d) => {
                self.users.insert(
                    d.user_id,
                    User {
                        id: d.user_id,
                        email: d.email.clone(),
                        role: d.role,
                        status: UserStatus::Active,
                        created_at: at,
                        created_by: entry.actor.id.clone(),
                        created_seq: entry.seq,
                        last_used_at: None,
                        version,
                    },
                );
            }
            EventData::UserRoleChanged(d) => {
                if let Some(user) = self.users.get_mut(&d.user_id) {
                    user.role = d.to;
                    user.version = version;
                }
            }
            EventData::UserDeactivated(d) => {
                if let Some(user) = self.users.get_mut(&d.user_id) {
                    user.status = UserStatus::Deactivated;
                    user.version = version;
                }
            }
            EventData::PatCreated(d) => {
                self.pats_by_user
                    .entry(d.user_id)
                    .or_default()
                    .push(d.token_id);
                self.credentials
                    .insert(d.secret_sha256, CredentialRef::Pat(d.token_id));
                self.pats.insert(
                    d.token_id,
                    Pat {
                        id: d.token_id,
                        user_id: d.user_id,
                        name: d.name.clone(),
                        display: d.display.clone(),
                        secret_sha256: d.secret_sha256,
                        expires_at: d.expires_at,
                        revoked: false,
                        created_at: at,
                        created_by: entry.actor.id.clone(),
                        created_seq: entry.seq,
                        last_used_at: None,
                        version,
                    },
                );
            }
            EventData::PatRevoked(d) => {
                if let Some(pat) = self.pats.get_mut(&d.token_id) {
                    pat.revoked = true;
                    pat.version = version;
                }
            }
            EventData::CredentialActivity(d) => {
                self.record_use(d.credential_id, d.last_used_at);
            }
        }
    }

    /// Moves a credential's (and its principal's) `last_used_at` forward.
    pub fn record_use(&mut self, credential_id: Uuid, at: Timestamp) {
        fn bump(slot: &mut Option<Timestamp>, at: Timestamp) {
            if slot.is_none_or(|t| t < at) {
                *slot = Some(at);
            }
        }
        if let Some(key) = self.api_keys.get_mut(&credential_id) {
            bump(&mut key.last_used_at, at);
        } else if let Some(pat) = self.pats.get_mut(&credential_id) {
            bump(&mut pat.last_used_at, at);
            let user_id = pat.user_id;
            if let Some(user) = self.users.get_mut(&user_id) {
                bump(&mut user.last_used_at, at);
            }
        }
    }
}
