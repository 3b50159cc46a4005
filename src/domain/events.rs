//! The events of the log, as typed Rust, and their envelope.
//!
//! Each event type has a plain struct for its `data`, serialised as a JSON object with
//! exactly the fields below (unknown fields are refused when reading). The mapping between
//! the `type` string and the struct is written out by hand in [`EventData::from_parts`] and
//! [`EventData::event_type`] rather than through serde's internally-tagged enums, so the
//! wire format is visible in one place and changing a Rust name can never change it.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{Role, Timestamp};
use crate::crypto::secret::SecretSha256;

/// The one version of the entry envelope this build writes and reads.
pub const ENTRY_FORMAT_VERSION: u64 = 1;

/// A stream: the unit of per-stream versioning and optimistic concurrency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Stream {
    /// `ledger`: genesis and signer rotation.
    Ledger,
    /// `api_key/<id>`: one service account and its key.
    ApiKey(Uuid),
    /// `user/<id>`.
    User(Uuid),
    /// `pat/<id>`.
    Pat(Uuid),
    /// `activity/<credential id>`: usage summaries, apart so a key's ETag moves only with
    /// its lifecycle.
    Activity(Uuid),
}

impl Stream {
    /// The stream's name as written in entries.
    pub fn name(&self) -> String {
        match self {
            Stream::Ledger => "ledger".to_string(),
            Stream::ApiKey(id) => format!("api_key/{id}"),
            Stream::User(id) => format!("user/{id}"),
            Stream::Pat(id) => format!("pat/{id}"),
            Stream::Activity(id) => format!("activity/{id}"),
        }
    }

    /// Parses a stream name; ids must be canonical lowercase hyphenated UUIDs.
    pub fn parse(s: &str) -> Option<Stream> {
        if s == "ledger" {
            return Some(Stream::Ledger);
        }
        let (kind, id) = s.split_once('/')?;
        let uuid = Uuid::parse_str(id).ok()?;
        if uuid.hyphenated().to_string() != id {
            return None;
        }
        match kind {
            "api_key" => Some(Stream::ApiKey(uuid)),
            "user" => Some(Stream::User(uuid)),
            "pat" => Some(Stream::Pat(uuid)),
            "activity" => Some(Stream::Activity(uuid)),
            _ => None,
        }
    }
}

/// Kind of principal that caused an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// An API key acting as its service account.
    ServiceAccount,
    /// A user, through one of their personal access tokens.
    User,
    /// keyledger itself (genesis, bootstrap, activity summaries).
    System,
}

/// Who caused an event, and with which credential.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    /// Kind of principal.
    pub kind: ActorKind,
    /// The principal's id (service account id, user id, or `keyledger` for the system).
    pub id: String,
    /// The credential used (API key id or PAT id), `null` for the system.
    pub credential: Option<String>,
}

impl Actor {
    /// keyledger itself.
    pub fn system() -> Actor {
        Actor {
            kind: ActorKind::System,
            id: "keyledger".to_string(),
            credential: None,
        }
    }
}

/// `ledger.initialized`: seq 0, the genesis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerInitialized {
    pub origin: String,
    /// Standard base64 of the 32-byte Ed25519 public key that signs this log.
    pub public_key: String,
}

/// `ledger.signer_rotated`: a new signing key takes over from the next entry on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignerRotated {
    pub from: String,
    pub to: String,
}

/// `api_key.created`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyCreated {
    pub key_id: Uuid,
    pub name: String,
    pub role: Role,
    pub display: String,
    pub secret_sha256: SecretSha256,
    pub expires_at: Option<Timestamp>,
}

/// A change of one string-valued field, with its before and after values.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyRenamed {
    pub key_id: Uuid,
    pub from: String,
    pub to: String,
}

/// `api_key.role_changed`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyRoleChanged {
    pub key_id: Uuid,
    pub from: Role,
    pub to: Role,
}

/// `api_key.expiry_changed`; `null` means "never expires".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyExpiryChanged {
    pub key_id: Uuid,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
}

/// `api_key.regenerated`: a new secret; the previous one works until `previous_valid_until`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyRegenerated {
    pub key_id: Uuid,
    pub display: String,
    pub secret_sha256: SecretSha256,
    pub previous_display: String,
    pub previous_secret_sha256: SecretSha256,
    pub previous_valid_until: Timestamp,
}

/// `api_key.disabled`, `api_key.enabled`, `api_key.deleted`: status changes of one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyStatusChanged {
    pub key_id: Uuid,
    pub from: String,
    pub to: String,
}

/// `user.registered`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRegistered {
    pub user_id: Uuid,
    pub email: String,
    pub role: Role,
}

/// `user.role_changed`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRoleChanged {
    pub user_id: Uuid,
    pub from: Role,
    pub to: Role,
}

/// `user.deactivated`; its tokens are revoked by `pat.revoked` events in the same batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserDeactivated {
    pub user_id: Uuid,
    pub from: String,
    pub to: String,
}

/// `pat.created`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatCreated {
    pub token_id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub display: String,
    pub secret_sha256: SecretSha256,
    pub expires_at: Option<Timestamp>,
}

/// `pat.revoked`; `reason` is `revoked` or `user_deactivated`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatRevoked {
    pub token_id: Uuid,
    pub user_id: Uuid,
    pub from: String,
    pub to: String,
    pub reason: String,
}

/// One counter of a `credential.activity` summary.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivityCount {
    pub method: String,
    pub route: String,
    pub outcome: String,
    pub count: u64,
}

/// `credential.activity`: what one credential did during one window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialActivity {
    pub credential_id: Uuid,
    pub principal_id: Uuid,
    pub window_start: Timestamp,
    pub window_end: Timestamp,
    pub last_used_at: Timestamp,
    pub counts: Vec<ActivityCount>,
}

/// Every event's data, one variant per event type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventData {
    LedgerInitialized(LedgerInitialized),
    SignerRotated(SignerRotated),
    ApiKeyCreated(ApiKeyCreated),
    ApiKeyRenamed(ApiKeyRenamed),
    ApiKeyRoleChanged(ApiKeyRoleChanged),
    ApiKeyExpiryChanged(ApiKeyExpiryChanged),
    ApiKeyRegenerated(ApiKeyRegenerated),
    ApiKeyDisabled(ApiKeyStatusChanged),
    ApiKeyEnabled(ApiKeyStatusChanged),
    ApiKeyDeleted(ApiKeyStatusChanged),
    UserRegistered(UserRegistered),
    UserRoleChanged(UserRoleChanged),
    UserDeactivated(UserDeactivated),
    PatCreated(PatCreated),
    PatRevoked(PatRevoked),
    CredentialActivity(CredentialActivity),
}

/// Every event type string, in the order of SPEC §3.
pub const EVENT_TYPES: [&str; 16] = [
    "ledger.initialized",
    "api_key.created",
    "api_key.renamed",
    "api_key.role_changed",
    "api_key.expiry_changed",
    "api_key.regenerated",
    "api_key.disabled",
    "api_key.enabled",
    "api_key.deleted",
    "user.registered",
    "user.role_changed",
    "user.deactivated",
    "pat.created",
    "pat.revoked",
    "credential.activity",
    "ledger.signer_rotated",
];

/// Why stored data is not a valid event.
#[derive(Debug, thiserror::Error)]
pub enum EventDecodeError {
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    #[error("invalid data for {event_type}: {reason}")]
    BadData { event_type: String, reason: String },
}

impl EventData {
    /// The `type` string of this event.
    pub fn event_type(&self) -> &'static str {
        match self {
            EventData::LedgerInitialized(_) => "ledger.initialized",
            EventData::SignerRotated(_) => "ledger.signer_rotated",
            EventData::ApiKeyCreated(_) => "api_key.created",
            EventData::ApiKeyRenamed(_) => "api_key.renamed",
            EventData::ApiKeyRoleChanged(_) => "api_key.role_changed",
            EventData::ApiKeyExpiryChanged(_) => "api_key.expiry_changed",
            EventData::ApiKeyRegenerated(_) => "api_key.regenerated",
            EventData::ApiKeyDisabled(_) => "api_key.disabled",
            EventData::ApiKeyEnabled(_) => "api_key.enabled",
            EventData::ApiKeyDeleted(_) => "api_key.deleted",
            EventData::UserRegistered(_) => "user.registered",
            EventData::UserRoleChanged(_) => "user.role_changed",
            EventData::UserDeactivated(_) => "user.deactivated",
            EventData::PatCreated(_) => "pat.created",
            EventData::PatRevoked(_) => "pat.revoked",
            EventData::CredentialActivity(_) => "credential.activity",
        }
    }

    /// The `data` object of this event.
    pub fn to_json(&self) -> Value {
        let value = match self {
            EventData::LedgerInitialized(d) => serde_json::to_value(d),
            EventData::SignerRotated(d) => serde_json::to_value(d),
            EventData::ApiKeyCreated(d) => serde_json::to_value(d),
            EventData::ApiKeyRenamed(d) => serde_json::to_value(d),
            EventData::ApiKeyRoleChanged(d) => serde_json::to_value(d),
            EventData::ApiKeyExpiryChanged(d) => serde_json::to_value(d),
            EventData::ApiKeyRegenerated(d) => serde_json::to_value(d),
            EventData::ApiKeyDisabled(d)
            | EventData::ApiKeyEnabled(d)
            | EventData::ApiKeyDeleted(d) => serde_json::to_value(d),
            EventData::UserRegistered(d) => serde_json::to_value(d),
            EventData::UserRoleChanged(d) => serde_json::to_value(d),
            EventData::UserDeactivated(d) => serde_json::to_value(d),
            EventData::PatCreated(d) => serde_json::to_value(d),
            EventData::PatRevoked(d) => serde_json::to_value(d),
            EventData::CredentialActivity(d) => serde_json::to_value(d),
        };
        // These structs hold only strings, integers, options and vectors: serialising them
        // to a `Value` cannot fail.
        value.unwrap_or(Value::Null)
    }

    /// Reads an event back from its `type` and `data`.
    pub fn from_parts(event_type: &str, data: Value) -> Result<EventData, EventDecodeError> {
        EventData::decode(event_type, data)
    }

    /// Like [`EventData::from_parts`], from the data's JSON text (no intermediate value).
    pub fn from_raw(event_type: &str, data: &str) -> Result<EventData, EventDecodeError> {
        EventData::decode(event_type, data)
    }

    fn decode(event_type: &str, data: impl DataSource) -> Result<EventData, EventDecodeError> {
        fn de<T: serde::de::DeserializeOwned>(
            event_type: &str,
            data: impl DataSource,
        ) -> Result<T, EventDecodeError> {
            data.decode().map_err(|e| EventDecodeError::BadData {
                event_type: event_type.to_string(),
                reason: e.to_string(),
            })
        }
        let data = data;
        Ok(match event_type {
            "ledger.initialized" => EventData::LedgerInitialized(de(event_type, data)?),
            "ledger.signer_rotated" => EventData::SignerRotated(de(event_type, data)?),
            "api_key.created" => EventData::ApiKeyCreated(de(event_type, data)?),
            "api_key.renamed" => EventData::ApiKeyRenamed(de(event_type, data)?),
            "api_key.role_changed" => EventData::ApiKeyRoleChanged(de(event_type, data)?),
            "api_key.expiry_changed" => EventData::ApiKeyExpiryChanged(de(event_type, data)?),
            "api_key.regenerated" => EventData::ApiKeyRegenerated(de(event_type, data)?),
            "api_key.disabled" => EventData::ApiKeyDisabled(de(event_type, data)?),
            "api_key.enabled" => EventData::ApiKeyEnabled(de(event_type, data)?),
            "api_key.deleted" => EventData::ApiKeyDeleted(de(event_type, data)?),
            "user.registered" => EventData::UserRegistered(de(event_type, data)?),
            "user.role_changed" => EventData::UserRoleChanged(de(event_type, data)?),
            "user.deactivated" => EventData::UserDeactivated(de(event_type, data)?),
            "pat.created" => EventData::PatCreated(de(event_type, data)?),
            "pat.revoked" => EventData::PatRevoked(de(event_type, data)?),
            "credential.activity" => EventData::CredentialActivity(de(event_type, data)?),
            other => return Err(EventDecodeError::UnknownType(other.to_string())),
        })
    }

    /// The stream this event belongs to.
    pub fn stream(&self) -> Stream {
        match self {
            EventData::LedgerInitialized(_) | EventData::SignerRotated(_) => Stream::Ledger,
            EventData::ApiKeyCreated(d) => Stream::ApiKey(d.key_id),
            EventData::ApiKeyRenamed(d) => Stream::ApiKey(d.key_id),
            EventData::ApiKeyRoleChanged(d) => Stream::ApiKey(d.key_id),
            EventData::ApiKeyExpiryChanged(d) => Stream::ApiKey(d.key_id),
            EventData::ApiKeyRegenerated(d) => Stream::ApiKey(d.key_id),
            EventData::ApiKeyDisabled(d)
            | EventData::ApiKeyEnabled(d)
            | EventData::ApiKeyDeleted(d) => Stream::ApiKey(d.key_id),
            EventData::UserRegistered(d) => Stream::User(d.user_id),
            EventData::UserRoleChanged(d) => Stream::User(d.user_id),
            EventData::UserDeactivated(d) => Stream::User(d.user_id),
            EventData::PatCreated(d) => Stream::Pat(d.token_id),
            EventData::PatRevoked(d) => Stream::Pat(d.token_id),
            EventData::CredentialActivity(d) => Stream::Activity(d.credential_id),
        }
    }
}

/// Where an event's data is decoded from: a parsed JSON value, or the JSON text itself.
trait DataSource {
    fn decode<T: serde::de::DeserializeOwned>(self) -> Result<T, serde_json::Error>;
}

impl DataSource for Value {
    fn decode<T: serde::de::DeserializeOwned>(self) -> Result<T, serde_json::Error> {
        serde_json::from_value(self)
    }
}

impl DataSource for &str {
    fn decode<T: serde::de::DeserializeOwned>(self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self)
    }
}

/// An entry's envelope as it is read from its bytes, borrowing what it can, with `data`
/// left as JSON text for its type's struct.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry<'a> {
    v: u64,
    seq: u64,
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    stream: std::borrow::Cow<'a, str>,
    version: u64,
    #[serde(rename = "type", borrow)]
    event_type: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    at: std::borrow::Cow<'a, str>,
    actor: Actor,
    signer: String,
    #[serde(borrow)]
    data: &'a serde_json::value::RawValue,
    sig: String,
}

/// A decoded, signature-carrying log entry. Its canonical bytes are kept beside it by the
/// ledger; this struct is for reading, never for re-creating what was signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub id: Uuid,
    pub stream: Stream,
    pub version: u64,
    pub at: Timestamp,
    pub actor: Actor,
    pub signer: String,
    pub data: EventData,
    pub sig: String,
}

impl Entry {
    /// The envelope as a JSON object, without `sig` when `with_sig` is false (the signed form).
    pub fn to_json(&self, with_sig: bool) -> Value {
        let mut map = serde_json::Map::new();
        map.insert("v".into(), Value::from(ENTRY_FORMAT_VERSION));
        map.insert("seq".into(), Value::from(self.seq));
        map.insert("id".into(), Value::from(self.id.hyphenated().to_string()));
        map.insert("stream".into(), Value::from(self.stream.name()));
        map.insert("version".into(), Value::from(self.version));
        map.insert("type".into(), Value::from(self.data.event_type()));
        map.insert("at".into(), Value::from(self.at.to_rfc3339()));
        map.insert(
            "actor".into(),
            serde_json::to_value(&self.actor).unwrap_or(Value::Null),
        );
        map.insert("signer".into(), Value::from(self.signer.clone()));
        map.insert("data".into(), self.data.to_json());
        if with_sig {
            map.insert("sig".into(), Value::from(self.sig.clone()));
        }
        Value::Object(map)
    }

    /// Decodes an entry from its bytes without building a JSON value first: the same checks
    /// as [`Entry::from_json`] (every field's type, nothing unknown), less allocation.
    pub fn from_bytes(bytes: &[u8]) -> Result<Entry, String> {
        let raw: RawEntry<'_> =
            serde_json::from_slice(bytes).map_err(|e| format!("entry is invalid: {e}"))?;
        if raw.v != ENTRY_FORMAT_VERSION {
            return Err(format!("unsupported entry format version {}", raw.v));
        }
        let id = Uuid::parse_str(&raw.id).map_err(|_| "id is not a UUID")?;
        let stream = Stream::parse(&raw.stream).ok_or("stream is not a valid stream name")?;
        let at = Timestamp::parse_canonical(&raw.at).ok_or("at is not a canonical timestamp")?;
        let data =
            EventData::from_raw(&raw.event_type, raw.data.get()).map_err(|e| e.to_string())?;
        if data.stream() != stream {
            return Err(format!(
                "stream {} does not match the event's subject",
                stream.name()
            ));
        }
        Ok(Entry {
            seq: raw.seq,
            id,
            stream,
            version: raw.version,
            at,
            actor: raw.actor,
            signer: raw.signer,
            data,
            sig: raw.sig,
        })
    }

    /// Decodes an entry object (as parsed from its bytes). Checks every field's type and
    /// that nothing unknown is present; signatures are checked elsewhere.
    pub fn from_json(value: Value) -> Result<Entry, String> {
        let Value::Object(mut map) = value else {
            return Err("entry is not a JSON object".into());
        };
        let mut take = |name: &str| map.remove(name).ok_or(format!("missing field {name:?}"));
        let v = take("v")?;
        if v.as_u64() != Some(ENTRY_FORMAT_VERSION) {
            return Err(format!("unsupported entry format version {v}"));
        }
        let seq = take("seq")?.as_u64().ok_or("seq is not an integer")?;
        let id = take("id")?;
        let id = id
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or("id is not a UUID")?;
        let stream = take("stream")?;
        let stream = stream
            .as_str()
            .and_then(Stream::parse)
            .ok_or("stream is not a valid stream name")?;
        let version = take("version")?
            .as_u64()
            .ok_or("version is not an integer")?;
        let event_type = take("type")?;
        let event_type = event_type
            .as_str()
            .ok_or("type is not a string")?
            .to_string();
        let at = take("at")?;
        let at = at
            .as_str()
            .and_then(|s| Timestamp::parse(s).filter(|t| t.to_rfc3339() == s))
            .ok_or("at is not a canonical timestamp")?;
        let actor: Actor =
            serde_json::from_value(take("actor")?).map_err(|e| format!("actor is invalid: {e}"))?;
        let signer = take("signer")?
            .as_str()
            .ok_or("signer is not a string")?
            .to_string();
        let data = EventData::from_parts(&event_type, take("data")?).map_err(|e| e.to_string())?;
        let sig = take("sig")?
            .as_str()
            .ok_or("sig is not a string")?
            .to_string();
        if let Some(extra) = map.keys().next() {
            return Err(format!("unknown field {extra:?}"));
        }
        if data.stream() != stream {
            return Err(format!(
                "stream {} does not match the event's subject",
                stream.name()
            ));
        }
        Ok(Entry {
            seq,
            id,
            stream,
            version,
            at,
            actor,
            signer,
            data,
            sig,
        })
    }
}
