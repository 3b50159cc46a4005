//! Given / when / then tests of the domain core.
//!
//! In the style of cqrs-es's `TestFramework`: `given(events)` folds a history into a
//! [`State`] through [`State::apply`], `.when(command, now)` runs [`decide`], and
//! `.then_events(..)` / `.then_error(..)` assert on the outcome. The second half tests
//! [`State::apply`] directly.

use std::collections::HashMap;

use uuid::Uuid;

use super::events::*;
use super::*;
use crate::crypto::secret::SecretSha256;

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

/// A state built from a history of events.
struct Given {
    state: State,
}

/// The outcome of a command.
struct Then(Result<Vec<EventData>, DomainError>);

/// Folds `events` into a fresh state, wrapping each in an entry: seq from 0, version per
/// stream from 1, a fixed `at`, the system actor.
fn given(events: Vec<EventData>) -> Given {
    Given {
        state: state_of(events),
    }
}

fn state_of(events: Vec<EventData>) -> State {
    let mut state = State::default();
    for entry in entries_of(events) {
        state.apply(&entry);
    }
    state
}

/// The entries a history would be committed as.
fn entries_of(events: Vec<EventData>) -> Vec<Entry> {
    let mut versions: HashMap<Stream, u64> = HashMap::new();
    let mut out = Vec::with_capacity(events.len());
    for (seq, data) in (0u64..).zip(events) {
        let version = versions.entry(data.stream()).or_insert(0);
        *version += 1;
        out.push(entry(seq, *version, now(), data));
    }
    out
}

fn entry(seq: u64, version: u64, at: Timestamp, data: EventData) -> Entry {
    Entry {
        seq,
        id: Uuid::from_u128(0xE000_0000 + u128::from(seq)),
        stream: data.stream(),
        version,
        at,
        actor: Actor::system(),
        signer: "00000000".to_string(),
        data,
        sig: String::new(),
    }
}

impl Given {
    fn when(&self, command: Command, now: Timestamp) -> Then {
        Then(decide(&self.state, &command, now))
    }
}

impl Then {
    #[track_caller]
    fn then_events(self, expected: Vec<EventData>) {
        assert_eq!(self.0, Ok(expected));
    }

    #[track_caller]
    fn then_error(self, expected: DomainError) {
        assert_eq!(self.0, Err(expected));
    }
}

// ---------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------

const BOOTSTRAP: Uuid = Uuid::from_u128(0xA0);
const KEY: Uuid = Uuid::from_u128(0xA1);
const OTHER_KEY: Uuid = Uuid::from_u128(0xA2);
const USER: Uuid = Uuid::from_u128(0xB1);
const OTHER_USER: Uuid = Uuid::from_u128(0xB2);
const PAT: Uuid = Uuid::from_u128(0xC1);
const PAT_2: Uuid = Uuid::from_u128(0xC2);
const PAT_3: Uuid = Uuid::from_u128(0xC3);
const OTHER_PAT: Uuid = Uuid::from_u128(0xC4);
const UNKNOWN: Uuid = Uuid::from_u128(0xFFFF);

fn now() -> Timestamp {
    Timestamp::parse("2026-11-28T12:00:00Z").expect("valid timestamp")
}

fn at(seconds_from_now: i64) -> Timestamp {
    now().plus_seconds(seconds_from_now)
}

fn name(s: &str) -> KeyName {
    KeyName::parse(s).expect("valid key name")
}

fn email(s: &str) -> Email {
    Email::parse(s).expect("valid email")
}

fn secret(id: Uuid) -> SecretSha256 {
    SecretSha256::of(&format!("kl_secret_of_{id}"))
}

fn display(id: Uuid) -> String {
    format!("kl_…{}", &id.simple().to_string()[28..])
}

fn genesis() -> EventData {
    EventData::LedgerInitialized(LedgerInitialized {
        origin: "keyledger.test/log".into(),
        public_key: "MCowBQYDK2VwAyEA".into(),
    })
}

fn key_created(
    key_id: Uuid,
    key_name: &str,
    role: Role,
    expires_at: Option<Timestamp>,
) -> EventData {
    EventData::ApiKeyCreated(ApiKeyCreated {
        key_id,
        name: key_name.into(),
        role,
        display: display(key_id),
        secret_sha256: secret(key_id),
        expires_at,
    })
}

fn status_changed(key_id: Uuid, from: &str, to: &str) -> ApiKeyStatusChanged {
    ApiKeyStatusChanged {
        key_id,
        from: from.into(),
        to: to.into(),
    }
}

fn key_disabled(key_id: Uuid) -> EventData {
    EventData::ApiKeyDisabled(status_changed(key_id, "active", "disabled"))
}

fn key_enabled(key_id: Uuid) -> EventData {
    EventData::ApiKeyEnabled(status_changed(key_id, "disabled", "active"))
}

fn key_deleted(key_id: Uuid, from: &str) -> EventData {
    EventData::ApiKeyDeleted(status_changed(key_id, from, "deleted"))
}

fn key_renamed(key_id: Uuid, from: &str, to: &str) -> EventData {
    EventData::ApiKeyRenamed(ApiKeyRenamed {
        key_id,
        from: from.into(),
        to: to.into(),
    })
}

fn key_role_changed(key_id: Uuid, from: Role, to: Role) -> EventData {
    EventData::ApiKeyRoleChanged(ApiKeyRoleChanged { key_id, from, to })
}

fn key_expiry_changed(key_id: Uuid, from: Option<Timestamp>, to: Option<Timestamp>) -> EventData {
    EventData::ApiKeyExpiryChanged(ApiKeyExpiryChanged { key_id, from, to })
}

fn key_regenerated(
    key_id: Uuid,
    new_secret: &str,
    previous: (&str, SecretSha256),
    previous_valid_until: Timestamp,
) -> EventData {
    EventData::ApiKeyRegenerated(ApiKeyRegenerated {
        key_id,
        display: format!("kl_…{new_secret}"),
        secret_sha256: SecretSha256::of(new_secret),
        previous_display: previous.0.into(),
        previous_secret_sha256: previous.1,
        previous_valid_until,
    })
}

fn user_registered(user_id: Uuid, address: &str, role: Role) -> EventData {
    EventData::UserRegistered(UserRegistered {
        user_id,
        email: address.into(),
        role,
    })
}

fn user_role_changed(user_id: Uuid, from: Role, to: Role) -> EventData {
    EventData::UserRoleChanged(UserRoleChanged { user_id, from, to })
}

fn user_deactivated(user_id: Uuid) -> EventData {
    EventData::UserDeactivated(UserDeactivated {
        user_id,
        from: "active".into(),
        to: "deactivated".into(),
    })
}

fn pat_created(token_id: Uuid, user_id: Uuid, expires_at: Option<Timestamp>) -> EventData {
    EventData::PatCreated(PatCreated {
        token_id,
        user_id,
        name: format!("laptop {token_id}"),
        display: display(token_id),
        secret_sha256: secret(token_id),
        expires_at,
    })
}

fn pat_revoked(token_id: Uuid, user_id: Uuid, from: &str, reason: &str) -> EventData {
    EventData::PatRevoked(PatRevoked {
        token_id,
        user_id,
        from: from.into(),
        to: "revoked".into(),
        reason: reason.into(),
    })
}

fn activity(
    credential_id: Uuid,
    principal_id: Uuid,
    last_used_at: Timestamp,
) -> CredentialActivity {
    CredentialActivity {
        credential_id,
        principal_id,
        window_start: at(-3600),
        window_end: now(),
        last_used_at,
        counts: vec![ActivityCount {
            method: "GET".into(),
            route: "/api/search".into(),
            outcome: "ok".into(),
            count: 3,
        }],
    }
}

fn create_key(key_id: Uuid, key_name: &str, role: Role, expires_at: Option<Timestamp>) -> Command {
    Command::CreateApiKey {
        key_id,
        name: name(key_name),
        role,
        expires_at,
        secret_sha256: secret(key_id),
        display: display(key_id),
    }
}

fn update(key_id: Uuid, changes: KeyChanges, if_match: Option<u64>) -> Command {
    Command::UpdateApiKey {
        key_id,
        changes,
        if_match,
    }
}

fn rename_to(new_name: &str) -> KeyChanges {
    KeyChanges {
        name: Some(name(new_name)),
        ..KeyChanges::default()
    }
}

fn regenerate(
    key_id: Uuid,
    new_secret: &str,
    grace_seconds: u64,
    if_match: Option<u64>,
) -> Command {
    Command::RegenerateApiKey {
        key_id,
        secret_sha256: SecretSha256::of(new_secret),
        display: format!("kl_…{new_secret}"),
        grace_seconds,
        if_match,
    }
}

fn create_pat(token_id: Uuid, user_id: Uuid, expires_at: Option<Timestamp>) -> Command {
    Command::CreatePat {
        token_id,
        user_id,
        name: name(&format!("laptop {token_id}")),
        expires_at,
        secret_sha256: secret(token_id),
        display: display(token_id),
    }
}

/// A ledger with one live admin key named "ci", expiring in a day.
/// A ledger with an admin key "ci" expiring in a day, beside the bootstrap admin key (so
/// that "ci" is never the last admin).
fn with_key() -> Vec<EventData> {
    vec![
        genesis(),
        key_created(BOOTSTRAP, "bootstrap-admin", Role::Admin, None),
        key_created(KEY, "ci", Role::Admin, Some(at(86_400))),
    ]
}

/// A ledger with one active basic user.
fn with_user() -> Vec<EventData> {
    vec![
        genesis(),
        user_registered(USER, "ada@example.org", Role::Basic),
    ]
}

// ---------------------------------------------------------------------------------------
// Initialize and the genesis gate
// ---------------------------------------------------------------------------------------

#[test]
fn initialize_on_empty_state_emits_genesis() {
    given(vec![])
        .when(
            Command::Initialize {
                origin: "keyledger.test/log".into(),
                public_key: "MCowBQYDK2VwAyEA".into(),
            },
            now(),
        )
        .then_events(vec![genesis()]);
}

#[test]
fn initialize_twice_is_refused() {
    given(vec![genesis()])
        .when(
            Command::Initialize {
                origin: "elsewhere".into(),
                public_key: "other".into(),
            },
            now(),
        )
        .then_error(DomainError::AlreadyInitialized);
}

#[test]
fn every_other_command_before_genesis_is_refused() {
    let commands = vec![
        create_key(KEY, "ci", Role::Admin, None),
        update(KEY, rename_to("cd"), None),
        regenerate(KEY, "new", 0, None),
        Command::DisableApiKey {
            key_id: KEY,
            if_match: None,
        },
        Command::EnableApiKey {
            key_id: KEY,
            if_match: None,
        },
        Command::DeleteApiKey {
            key_id: KEY,
            if_match: None,
        },
        Command::RegisterUser {
            user_id: USER,
            email: email("ada@example.org"),
            role: Role::Admin,
        },
        Command::ChangeUserRole {
            user_id: USER,
            role: Role::Basic,
            if_match: None,
        },
        Command::DeactivateUser {
            user_id: USER,
            if_match: None,
        },
        create_pat(PAT, USER, None),
        Command::RevokePat {
            token_id: PAT,
            owner: None,
        },
        Command::RecordActivity(activity(KEY, KEY, now())),
    ];
    assert_eq!(commands.len(), 12, "one of each non-genesis command");
    for command in commands {
        let outcome = decide(&State::default(), &command, now());
        assert_eq!(outcome, Err(DomainError::NotInitialized), "{command:?}");
    }
}

// ---------------------------------------------------------------------------------------
// CreateApiKey
// ---------------------------------------------------------------------------------------

#[test]
fn create_api_key_emits_created_with_exact_fields() {
    given(vec![genesis()])
        .when(
            Command::CreateApiKey {
                key_id: KEY,
                name: name("  ci bot  "),
                role: Role::Limited,
                expires_at: Some(at(3600)),
                secret_sha256: SecretSha256::of("kl_live_secret"),
                display: "kl_…cret".into(),
            },
            now(),
        )
        .then_events(vec![EventData::ApiKeyCreated(ApiKeyCreated {
            key_id: KEY,
            name: "ci bot".into(),
            role: Role::Limited,
            display: "kl_…cret".into(),
            secret_sha256: SecretSha256::of("kl_live_secret"),
            expires_at: Some(at(3600)),
        })]);
}

#[test]
fn create_api_key_without_expiry() {
    given(vec![genesis()])
        .when(create_key(KEY, "ci", Role::Basic, None), now())
        .then_events(vec![key_created(KEY, "ci", Role::Basic, None)]);
}

#[test]
fn create_api_key_refuses_auditor_role() {
    given(vec![genesis()])
        .when(create_key(KEY, "ci", Role::Auditor, None), now())
        .then_error(DomainError::RoleNotForApiKeys);
}

#[test]
fn create_api_key_refuses_expiry_in_the_past() {
    given(vec![genesis()])
        .when(create_key(KEY, "ci", Role::Admin, Some(at(-1))), now())
        .then_error(DomainError::ExpiryInPast);
}

#[test]
fn create_api_key_refuses_expiry_equal_to_now() {
    given(vec![genesis()])
        .when(create_key(KEY, "ci", Role::Admin, Some(now())), now())
        .then_error(DomainError::ExpiryInPast);
}

#[test]
fn create_api_key_accepts_expiry_one_second_ahead() {
    given(vec![genesis()])
        .when(create_key(KEY, "ci", Role::Admin, Some(at(1))), now())
        .then_events(vec![key_created(KEY, "ci", Role::Admin, Some(at(1)))]);
}

#[test]
fn create_api_key_refuses_name_of_a_live_key() {
    given(with_key())
        .when(create_key(OTHER_KEY, "ci", Role::Basic, None), now())
        .then_error(DomainError::NameTaken);
}

#[test]
fn create_api_key_name_check_ignores_case() {
    given(with_key())
        .when(create_key(OTHER_KEY, "CI", Role::Basic, None), now())
        .then_error(DomainError::NameTaken);
}

#[test]
fn create_api_key_refuses_name_of_a_disabled_key() {
    let mut history = with_key();
    history.push(key_disabled(KEY));
    given(history)
        .when(create_key(OTHER_KEY, "ci", Role::Basic, None), now())
        .then_error(DomainError::NameTaken);
}

#[test]
fn create_api_key_refuses_name_of_an_expired_key() {
    given(vec![
        genesis(),
        key_created(KEY, "ci", Role::Admin, Some(at(-60))),
    ])
    .when(create_key(OTHER_KEY, "ci", Role::Basic, None), now())
    .then_error(DomainError::NameTaken);
}

#[test]
fn create_api_key_may_reuse_the_name_of_a_deleted_key() {
    let mut history = with_key();
    history.push(key_deleted(KEY, "active"));
    given(history)
        .when(create_key(OTHER_KEY, "CI", Role::Basic, None), now())
        .then_events(vec![key_created(OTHER_KEY, "CI", Role::Basic, None)]);
}

// ---------------------------------------------------------------------------------------
// UpdateApiKey
// ---------------------------------------------------------------------------------------

#[test]
fn update_renames() {
    given(with_key())
        .when(update(KEY, rename_to("deploy"), None), now())
        .then_events(vec![key_renamed(KEY, "ci", "deploy")]);
}

#[test]
fn update_changes_role() {
    let changes = KeyChanges {
        role: Some(Role::Limited),
        ..KeyChanges::default()
    };
    given(with_key())
        .when(update(KEY, changes, None), now())
        .then_events(vec![key_role_changed(KEY, Role::Admin, Role::Limited)]);
}

#[test]
fn update_changes_expiry() {
    let changes = KeyChanges {
        expires_at: Some(Some(at(7 * 86_400))),
        ..KeyChanges::default()
    };
    given(with_key())
        .when(update(KEY, changes, None), now())
        .then_events(vec![key_expiry_changed(
            KEY,
            Some(at(86_400)),
            Some(at(7 * 86_400)),
        )]);
}

#[test]
fn update_sets_expiry_on_a_key_that_had_none() {
    let changes = KeyChanges {
        expires_at: Some(Some(at(60))),
        ..KeyChanges::default()
    };
    given(vec![genesis(), key_created(KEY, "ci", Role::Admin, None)])
        .when(update(KEY, changes, None), now())
        .then_events(vec![key_expiry_changed(KEY, None, Some(at(60)))]);
}

#[test]
fn update_clears_expiry() {
    let changes = KeyChanges {
        expires_at: Some(None),
        ..KeyChanges::default()
    };
    given(with_key())
        .when(update(KEY, changes, None), now())
        .then_events(vec![key_expiry_changed(KEY, Some(at(86_400)), None)]);
}

#[test]
fn update_extends_an_already_expired_key() {
    let changes = KeyChanges {
        expires_at: Some(Some(at(60))),
        ..KeyChanges::default()
    };
    given(vec![
        genesis(),
        key_created(KEY, "ci", Role::Admin, Some(at(-60))),
    ])
    .when(update(KEY, changes, None), now())
    .then_events(vec![key_expiry_changed(KEY, Some(at(-60)), Some(at(60)))]);
}

#[test]
fn update_all_three_emits_three_events_in_order() {
    let changes = KeyChanges {
        name: Some(name("deploy")),
        role: Some(Role::Basic),
        expires_at: Some(None),
    };
    given(with_key())
        .when(update(KEY, changes, None), now())
        .then_events(vec![
            key_renamed(KEY, "ci", "deploy"),
            key_role_changed(KEY, Role::Admin, Role::Basic),
            key_expiry_changed(KEY, Some(at(86_400)), None),
        ]);
}

#[test]
fn update_with_unchanged_values_emits_nothing() {
    let changes = KeyChanges {
        name: Some(name("ci")),
        role: Some(Role::Admin),
        expires_at: Some(Some(at(86_400))),
    };
    given(with_key())
        .when(update(KEY, changes, None), now())
        .then_events(vec![]);
}

#[test]
fn update_with_no_changes_emits_nothing() {
    given(with_key())
        .when(update(KEY, KeyChanges::default(), None), now())
        .then_events(vec![]);
}

#[test]
fn update_clearing_an_absent_expiry_emits_nothing() {
    let changes = KeyChanges {
        expires_at: Some(None),
        ..KeyChanges::default()
    };
    given(vec![genesis(), key_created(KEY, "ci", Role::Admin, None)])
        .when(update(KEY, changes, None), now())
        .then_events(vec![]);
}

#[test]
fn update_refuses_rename_to_another_live_keys_name() {
    let mut history = with_key();
    history.push(key_created(OTHER_KEY, "deploy", Role::Basic, None));
    given(history)
        .when(update(KEY, rename_to("deploy"), None), now())
        .then_error(DomainError::NameTaken);
}

#[test]
fn update_refuses_rename_to_another_live_keys_name_in_other_case() {
    let mut history = with_key();
    history.push(key_created(OTHER_KEY, "deploy", Role::Basic, None));
    given(history)
        .when(update(KEY, rename_to("DePloy"), None), now())
        .then_error(DomainError::NameTaken);
}

#[test]
fn update_may_rename_to_a_deleted_keys_name() {
    let mut history = with_key();
    history.push(key_created(OTHER_KEY, "deploy", Role::Basic, None));
    history.push(key_deleted(OTHER_KEY, "active"));
    given(history)
        .when(update(KEY, rename_to("deploy"), None), now())
        .then_events(vec![key_renamed(KEY, "ci", "deploy")]);
}

#[test]
fn update_may_change_the_case_of_its_own_name() {
    given(with_key())
        .when(update(KEY, rename_to("CI"), None), now())
        .then_events(vec![key_renamed(KEY, "ci", "CI")]);
}

#[test]
fn update_refuses_auditor_role() {
    let changes = KeyChanges {
        role: Some(Role::Auditor),
        ..KeyChanges::default()
    };
    given(with_key())
        .when(update(KEY, changes, None), now())
        .then_error(DomainError::RoleNotForApiKeys);
}

#[test]
fn update_refuses_expiry_in_the_past() {
    let changes = KeyChanges {
        expires_at: Some(Some(at(-1))),
        ..KeyChanges::default()
    };
    given(with_key())
        .when(update(KEY, changes, None), now())
        .then_error(DomainError::ExpiryInPast);
}

#[test]
fn update_refuses_expiry_equal_to_now() {
    let changes = KeyChanges {
        expires_at: Some(Some(now())),
        ..KeyChanges::default()
    };
    given(with_key())
        .when(update(KEY, changes, None), now())
        .then_error(DomainError::ExpiryInPast);
}

#[test]
fn update_refusal_discards_the_valid_parts() {
    let changes = KeyChanges {
        name: Some(name("deploy")),
        role: Some(Role::Auditor),
        expires_at: None,
    };
    given(with_key())
        .when(update(KEY, changes, None), now())
        .then_error(DomainError::RoleNotForApiKeys);
}

#[test]
fn update_of_unknown_key_is_not_found() {
    given(with_key())
        .when(update(UNKNOWN, rename_to("deploy"), None), now())
        .then_error(DomainError::KeyNotFound);
}

#[test]
fn update_of_deleted_key_is_refused() {
    let mut history = with_key();
    history.push(key_deleted(KEY, "active"));
    given(history)
        .when(update(KEY, rename_to("deploy"), None), now())
        .then_error(DomainError::KeyDeleted);
}

#[test]
fn update_with_stale_if_match_is_refused() {
    let mut history = with_key();
    history.push(key_renamed(KEY, "ci", "cd"));
    given(history)
        .when(update(KEY, rename_to("deploy"), Some(1)), now())
        .then_error(DomainError::VersionMismatch {
            expected: 1,
            actual: 2,
        });
}

#[test]
fn update_with_current_if_match_succeeds() {
    let mut history = with_key();
    history.push(key_renamed(KEY, "ci", "cd"));
    given(history)
        .when(update(KEY, rename_to("deploy"), Some(2)), now())
        .then_events(vec![key_renamed(KEY, "cd", "deploy")]);
}

// ---------------------------------------------------------------------------------------
// RegenerateApiKey
// ---------------------------------------------------------------------------------------

#[test]
fn regenerate_without_grace_ends_the_previous_secret_now() {
    given(with_key())
        .when(regenerate(KEY, "fresh", 0, None), now())
        .then_events(vec![key_regenerated(
            KEY,
            "fresh",
            (&display(KEY), secret(KEY)),
            now(),
        )]);
}

#[test]
fn regenerate_with_grace_keeps_the_previous_secret_until_now_plus_grace() {
    given(with_key())
        .when(regenerate(KEY, "fresh", 3600, None), now())
        .then_events(vec![key_regenerated(
            KEY,
            "fresh",
            (&display(KEY), secret(KEY)),
            at(3600),
        )]);
}

#[test]
fn regenerate_accepts_the_maximum_grace_of_seven_days() {
    assert_eq!(MAX_GRACE_SECONDS, 604_800);
    given(with_key())
        .when(regenerate(KEY, "fresh", 604_800, None), now())
        .then_events(vec![key_regenerated(
            KEY,
            "fresh",
            (&display(KEY), secret(KEY)),
            at(604_800),
        )]);
}

#[test]
fn regenerate_refuses_grace_longer_than_seven_days() {
    given(with_key())
        .when(regenerate(KEY, "fresh", 604_801, None), now())
        .then_error(DomainError::GraceTooLong);
}

#[test]
fn regenerate_refuses_absurd_grace_without_wrapping() {
    given(with_key())
        .when(regenerate(KEY, "fresh", u64::MAX, None), now())
        .then_error(DomainError::GraceTooLong);
}

#[test]
fn regenerate_twice_supersedes_the_current_secret_not_the_original() {
    let mut history = with_key();
    history.push(key_regenerated(
        KEY,
        "second",
        (&display(KEY), secret(KEY)),
        now(),
    ));
    given(history)
        .when(regenerate(KEY, "third", 60, None), now())
        .then_events(vec![key_regenerated(
            KEY,
            "third",
            ("kl_…second", SecretSha256::of("second")),
            at(60),
        )]);
}

#[test]
fn regenerate_of_unknown_key_is_not_found() {
    given(with_key())
        .when(regenerate(UNKNOWN, "fresh", 0, None), now())
        .then_error(DomainError::KeyNotFound);
}

#[test]
fn regenerate_of_deleted_key_is_refused() {
    let mut history = with_key();
    history.push(key_deleted(KEY, "active"));
    given(history)
        .when(regenerate(KEY, "fresh", 0, None), now())
        .then_error(DomainError::KeyDeleted);
}

#[test]
fn regenerate_with_stale_if_match_is_refused() {
    given(with_key())
        .when(regenerate(KEY, "fresh", 0, Some(7)), now())
        .then_error(DomainError::VersionMismatch {
            expected: 7,
            actual: 1,
        });
}

#[test]
fn regenerate_with_current_if_match_succeeds() {
    given(with_key())
        .when(regenerate(KEY, "fresh", 0, Some(1)), now())
        .then_events(vec![key_regenerated(
            KEY,
            "fresh",
            (&display(KEY), secret(KEY)),
            now(),
        )]);
}

// ---------------------------------------------------------------------------------------
// DisableApiKey / EnableApiKey
// ---------------------------------------------------------------------------------------

fn disable(key_id: Uuid, if_match: Option<u64>) -> Command {
    Command::DisableApiKey { key_id, if_match }
}

fn enable(key_id: Uuid, if_match: Option<u64>) -> Command {
    Command::EnableApiKey { key_id, if_match }
}

fn delete(key_id: Uuid, if_match: Option<u64>) -> Command {
    Command::DeleteApiKey { key_id, if_match }
}

#[test]
fn disable_an_active_key() {
    given(with_key())
        .when(disable(KEY, None), now())
        .then_events(vec![key_disabled(KEY)]);
}

#[test]
fn disable_a_disabled_key_emits_nothing() {
    let mut history = with_key();
    history.push(key_disabled(KEY));
    given(history)
        .when(disable(KEY, None), now())
        .then_events(vec![]);
}

#[test]
fn enable_a_disabled_key() {
    let mut history = with_key();
    history.push(key_disabled(KEY));
    given(history)
        .when(enable(KEY, None), now())
        .then_events(vec![key_enabled(KEY)]);
}

#[test]
fn enable_an_active_key_emits_nothing() {
    given(with_key())
        .when(enable(KEY, None), now())
        .then_events(vec![]);
}

#[test]
fn enable_after_disable_and_enable_emits_nothing() {
    let mut history = with_key();
    history.push(key_disabled(KEY));
    history.push(key_enabled(KEY));
    given(history)
        .when(enable(KEY, None), now())
        .then_events(vec![]);
}

#[test]
fn disable_and_enable_of_deleted_key_are_refused() {
    let mut history = with_key();
    history.push(key_disabled(KEY));
    history.push(key_deleted(KEY, "disabled"));
    let given = given(history);
    given
        .when(disable(KEY, None), now())
        .then_error(DomainError::KeyDeleted);
    given
        .when(enable(KEY, None), now())
        .then_error(DomainError::KeyDeleted);
}

#[test]
fn disable_and_enable_of_unknown_key_are_not_found() {
    let given = given(with_key());
    given
        .when(disable(UNKNOWN, None), now())
        .then_error(DomainError::KeyNotFound);
    given
        .when(enable(UNKNOWN, None), now())
        .then_error(DomainError::KeyNotFound);
}

#[test]
fn disable_and_enable_check_if_match() {
    let mut history = with_key();
    history.push(key_disabled(KEY));
    let given = given(history);
    given
        .when(enable(KEY, Some(1)), now())
        .then_error(DomainError::VersionMismatch {
            expected: 1,
            actual: 2,
        });
    given
        .when(disable(KEY, Some(1)), now())
        .then_error(DomainError::VersionMismatch {
            expected: 1,
            actual: 2,
        });
    given
        .when(enable(KEY, Some(2)), now())
        .then_events(vec![key_enabled(KEY)]);
}

// ---------------------------------------------------------------------------------------
// DeleteApiKey
// ---------------------------------------------------------------------------------------

#[test]
fn delete_an_active_key() {
    given(with_key())
        .when(delete(KEY, None), now())
        .then_events(vec![key_deleted(KEY, "active")]);
}

#[test]
fn delete_a_disabled_key() {
    let mut history = with_key();
    history.push(key_disabled(KEY));
    given(history)
        .when(delete(KEY, None), now())
        .then_events(vec![key_deleted(KEY, "disabled")]);
}

#[test]
fn delete_twice_is_refused() {
    let mut history = with_key();
    history.push(key_deleted(KEY, "active"));
    given(history)
        .when(delete(KEY, None), now())
        .then_error(DomainError::KeyDeleted);
}

#[test]
fn delete_of_unknown_key_is_not_found() {
    given(with_key())
        .when(delete(UNKNOWN, None), now())
        .then_error(DomainError::KeyNotFound);
}

#[test]
fn delete_with_stale_if_match_is_refused() {
    given(with_key())
        .when(delete(KEY, Some(0)), now())
        .then_error(DomainError::VersionMismatch {
            expected: 0,
            actual: 1,
        });
}

#[test]
fn delete_with_current_if_match_succeeds() {
    given(with_key())
        .when(delete(KEY, Some(1)), now())
        .then_events(vec![key_deleted(KEY, "active")]);
}

// ---------------------------------------------------------------------------------------
// RegisterUser
// ---------------------------------------------------------------------------------------

fn register(user_id: Uuid, address: &str, role: Role) -> Command {
    Command::RegisterUser {
        user_id,
        email: email(address),
        role,
    }
}

#[test]
fn register_user() {
    given(vec![genesis()])
        .when(register(USER, " Ada@Example.org ", Role::Auditor), now())
        .then_events(vec![user_registered(
            USER,
            "ada@example.org",
            Role::Auditor,
        )]);
}

#[test]
fn register_user_refuses_email_of_an_active_user() {
    given(with_user())
        .when(register(OTHER_USER, "ADA@example.org", Role::Admin), now())
        .then_error(DomainError::EmailTaken);
}

#[test]
fn register_user_may_reuse_email_of_a_deactivated_user() {
    let mut history = with_user();
    history.push(user_deactivated(USER));
    given(history)
        .when(register(OTHER_USER, "ada@example.org", Role::Admin), now())
        .then_events(vec![user_registered(
            OTHER_USER,
            "ada@example.org",
            Role::Admin,
        )]);
}

// ---------------------------------------------------------------------------------------
// ChangeUserRole
// ---------------------------------------------------------------------------------------

fn change_role(user_id: Uuid, role: Role, if_match: Option<u64>) -> Command {
    Command::ChangeUserRole {
        user_id,
        role,
        if_match,
    }
}

#[test]
fn change_user_role() {
    given(with_user())
        .when(change_role(USER, Role::Auditor, None), now())
        .then_events(vec![user_role_changed(USER, Role::Basic, Role::Auditor)]);
}

#[test]
fn change_user_role_to_the_same_role_emits_nothing() {
    given(with_user())
        .when(change_role(USER, Role::Basic, None), now())
        .then_events(vec![]);
}

#[test]
fn change_role_of_unknown_user_is_not_found() {
    given(with_user())
        .when(change_role(UNKNOWN, Role::Admin, None), now())
        .then_error(DomainError::UserNotFound);
}

#[test]
fn change_role_of_deactivated_user_is_refused() {
    let mut history = with_user();
    history.push(user_deactivated(USER));
    given(history)
        .when(change_role(USER, Role::Admin, None), now())
        .then_error(DomainError::UserDeactivated);
}

#[test]
fn change_role_with_stale_if_match_is_refused() {
    let mut history = with_user();
    history.push(user_role_changed(USER, Role::Basic, Role::Admin));
    given(history)
        .when(change_role(USER, Role::Limited, Some(1)), now())
        .then_error(DomainError::VersionMismatch {
            expected: 1,
            actual: 2,
        });
}

#[test]
fn change_role_with_current_if_match_succeeds() {
    let mut history = with_user();
    history.push(user_role_changed(USER, Role::Basic, Role::Admin));
    given(history)
        .when(change_role(USER, Role::Limited, Some(2)), now())
        .then_events(vec![user_role_changed(USER, Role::Admin, Role::Limited)]);
}

// ---------------------------------------------------------------------------------------
// DeactivateUser
// ---------------------------------------------------------------------------------------

fn deactivate(user_id: Uuid, if_match: Option<u64>) -> Command {
    Command::DeactivateUser { user_id, if_match }
}

#[test]
fn deactivate_user_without_tokens() {
    given(with_user())
        .when(deactivate(USER, None), now())
        .then_events(vec![user_deactivated(USER)]);
}

#[test]
fn deactivate_user_revokes_each_of_their_live_tokens() {
    let mut history = with_user();
    history.extend([
        user_registered(OTHER_USER, "bob@example.org", Role::Admin),
        pat_created(PAT, USER, None),
        pat_created(OTHER_PAT, OTHER_USER, None),
        pat_created(PAT_2, USER, Some(at(60))),
        pat_revoked(PAT_2, USER, "active", "revoked"),
        pat_created(PAT_3, USER, Some(at(-60))),
    ]);
    given(history)
        .when(deactivate(USER, None), now())
        .then_events(vec![
            user_deactivated(USER),
            pat_revoked(PAT, USER, "active", "user_deactivated"),
            pat_revoked(PAT_3, USER, "expired", "user_deactivated"),
        ]);
}

#[test]
fn deactivate_user_orders_token_revocations_by_creation() {
    // Ids deliberately out of order with creation, so HashMap order cannot pass by luck.
    let mut history = with_user();
    history.extend([
        pat_created(PAT_3, USER, None),
        pat_created(PAT, USER, None),
        pat_created(PAT_2, USER, None),
    ]);
    given(history)
        .when(deactivate(USER, Some(1)), now())
        .then_events(vec![
            user_deactivated(USER),
            pat_revoked(PAT_3, USER, "active", "user_deactivated"),
            pat_revoked(PAT, USER, "active", "user_deactivated"),
            pat_revoked(PAT_2, USER, "active", "user_deactivated"),
        ]);
}

#[test]
fn deactivate_user_twice_is_refused() {
    let mut history = with_user();
    history.push(user_deactivated(USER));
    given(history)
        .when(deactivate(USER, None), now())
        .then_error(DomainError::UserDeactivated);
}

#[test]
fn deactivate_unknown_user_is_not_found() {
    given(with_user())
        .when(deactivate(UNKNOWN, None), now())
        .then_error(DomainError::UserNotFound);
}

#[test]
fn deactivate_user_with_stale_if_match_is_refused() {
    given(with_user())
        .when(deactivate(USER, Some(2)), now())
        .then_error(DomainError::VersionMismatch {
            expected: 2,
            actual: 1,
        });
}

// ---------------------------------------------------------------------------------------
// CreatePat
// ---------------------------------------------------------------------------------------

#[test]
fn create_pat_emits_created_with_exact_fields() {
    given(with_user())
        .when(
            Command::CreatePat {
                token_id: PAT,
                user_id: USER,
                name: name(" laptop "),
                expires_at: Some(at(30 * 86_400)),
                secret_sha256: SecretSha256::of("klp_secret"),
                display: "klp_…cret".into(),
            },
            now(),
        )
        .then_events(vec![EventData::PatCreated(PatCreated {
            token_id: PAT,
            user_id: USER,
            name: "laptop".into(),
            display: "klp_…cret".into(),
            secret_sha256: SecretSha256::of("klp_secret"),
            expires_at: Some(at(30 * 86_400)),
        })]);
}

#[test]
fn create_pat_without_expiry() {
    given(with_user())
        .when(create_pat(PAT, USER, None), now())
        .then_events(vec![pat_created(PAT, USER, None)]);
}

#[test]
fn create_pat_for_unknown_user_is_not_found() {
    given(with_user())
        .when(create_pat(PAT, UNKNOWN, None), now())
        .then_error(DomainError::UserNotFound);
}

#[test]
fn create_pat_for_deactivated_user_is_refused() {
    let mut history = with_user();
    history.push(user_deactivated(USER));
    given(history)
        .when(create_pat(PAT, USER, None), now())
        .then_error(DomainError::UserDeactivated);
}

#[test]
fn create_pat_refuses_expiry_in_the_past_or_now() {
    let given = given(with_user());
    given
        .when(create_pat(PAT, USER, Some(at(-1))), now())
        .then_error(DomainError::ExpiryInPast);
    given
        .when(create_pat(PAT, USER, Some(now())), now())
        .then_error(DomainError::ExpiryInPast);
}

// ---------------------------------------------------------------------------------------
// RevokePat
// ---------------------------------------------------------------------------------------

fn revoke(token_id: Uuid, owner: Option<Uuid>) -> Command {
    Command::RevokePat { token_id, owner }
}

fn with_pat(expires_at: Option<Timestamp>) -> Vec<EventData> {
    let mut history = with_user();
    history.push(user_registered(OTHER_USER, "bob@example.org", Role::Admin));
    history.push(pat_created(PAT, USER, expires_at));
    history
}

#[test]
fn revoke_an_active_pat() {
    given(with_pat(None))
        .when(revoke(PAT, None), now())
        .then_events(vec![pat_revoked(PAT, USER, "active", "revoked")]);
}

#[test]
fn revoke_an_expired_pat() {
    given(with_pat(Some(at(-60))))
        .when(revoke(PAT, None), now())
        .then_events(vec![pat_revoked(PAT, USER, "expired", "revoked")]);
}

#[test]
fn revoke_a_pat_expiring_exactly_now_reports_expired() {
    given(with_pat(Some(now())))
        .when(revoke(PAT, None), now())
        .then_events(vec![pat_revoked(PAT, USER, "expired", "revoked")]);
}

#[test]
fn revoke_own_pat() {
    given(with_pat(None))
        .when(revoke(PAT, Some(USER)), now())
        .then_events(vec![pat_revoked(PAT, USER, "active", "revoked")]);
}

#[test]
fn revoke_twice_is_refused() {
    let mut history = with_pat(None);
    history.push(pat_revoked(PAT, USER, "active", "revoked"));
    given(history)
        .when(revoke(PAT, None), now())
        .then_error(DomainError::TokenRevoked);
}

#[test]
fn revoke_a_pat_revoked_by_deactivation_is_refused() {
    let mut history = with_pat(None);
    history.push(user_deactivated(USER));
    history.push(pat_revoked(PAT, USER, "active", "user_deactivated"));
    given(history)
        .when(revoke(PAT, None), now())
        .then_error(DomainError::TokenRevoked);
}

#[test]
fn revoke_unknown_pat_is_not_found() {
    given(with_pat(None))
        .when(revoke(UNKNOWN, None), now())
        .then_error(DomainError::TokenNotFound);
}

#[test]
fn revoke_someone_elses_pat_is_not_found() {
    given(with_pat(None))
        .when(revoke(PAT, Some(OTHER_USER)), now())
        .then_error(DomainError::TokenNotFound);
}

#[test]
fn revoke_someone_elses_revoked_pat_is_still_not_found() {
    let mut history = with_pat(None);
    history.push(pat_revoked(PAT, USER, "active", "revoked"));
    given(history)
        .when(revoke(PAT, Some(OTHER_USER)), now())
        .then_error(DomainError::TokenNotFound);
}

// ---------------------------------------------------------------------------------------
// RecordActivity
// ---------------------------------------------------------------------------------------

#[test]
fn record_activity_passes_the_summary_through() {
    let summary = activity(KEY, KEY, at(-5));
    given(with_key())
        .when(Command::RecordActivity(summary.clone()), now())
        .then_events(vec![EventData::CredentialActivity(summary)]);
}

// ---------------------------------------------------------------------------------------
// State::apply
// ---------------------------------------------------------------------------------------

#[test]
fn genesis_sets_origin_and_public_key() {
    let state = state_of(vec![genesis()]);
    assert_eq!(state.origin.as_deref(), Some("keyledger.test/log"));
    assert_eq!(state.public_key.as_deref(), Some("MCowBQYDK2VwAyEA"));
    assert_eq!(state.size, 1);
    assert_eq!(state.last_at, Some(now()));
    assert_eq!(state.version(&Stream::Ledger), 1);
}

#[test]
fn signer_rotation_replaces_the_public_key() {
    let state = state_of(vec![
        genesis(),
        EventData::SignerRotated(SignerRotated {
            from: "MCowBQYDK2VwAyEA".into(),
            to: "newkey".into(),
        }),
    ]);
    assert_eq!(state.public_key.as_deref(), Some("newkey"));
    assert_eq!(state.version(&Stream::Ledger), 2);
}

#[test]
fn created_key_takes_its_fields_from_event_and_entry() {
    let mut state = state_of(vec![genesis()]);
    let created_at = at(-100);
    let mut created = entry(1, 1, created_at, key_created(KEY, "CI", Role::Basic, None));
    created.actor = Actor {
        kind: ActorKind::ServiceAccount,
        id: OTHER_KEY.to_string(),
        credential: Some(OTHER_KEY.to_string()),
    };
    state.apply(&created);
    let key = state.api_keys.get(&KEY).expect("key created");
    assert_eq!(
        *key,
        ApiKey {
            id: KEY,
            name: "CI".into(),
            role: Role::Basic,
            display: display(KEY),
            secret_sha256: secret(KEY),
            expires_at: None,
            disabled: false,
            deleted: false,
            created_at,
            created_by: OTHER_KEY.to_string(),
            created_seq: 1,
            updated_at: created_at,
            last_used_at: None,
            version: 1,
            superseded: vec![],
        }
    );

    state.apply(&entry(2, 2, at(-50), key_disabled(KEY)));
    let key = state.api_keys.get(&KEY).expect("key present");
    assert_eq!(key.created_at, created_at);
    assert_eq!(key.updated_at, at(-50));
}

#[test]
fn key_status_over_time() {
    let mut history = vec![
        genesis(),
        key_created(KEY, "ci", Role::Admin, Some(at(100))),
    ];
    let key_at = |history: &Vec<EventData>| {
        state_of(history.clone())
            .api_keys
            .get(&KEY)
            .cloned()
            .expect("key present")
    };

    let key = key_at(&history);
    assert_eq!(key.status(now()), KeyStatus::Active);
    assert_eq!(key.status(at(99)), KeyStatus::Active);
    assert_eq!(key.status(at(100)), KeyStatus::Expired);
    assert_eq!(key.status(at(101)), KeyStatus::Expired);

    history.push(key_disabled(KEY));
    let key = key_at(&history);
    assert_eq!(key.status(now()), KeyStatus::Disabled);
    assert_eq!(key.status(at(1000)), KeyStatus::Disabled);

    history.push(key_enabled(KEY));
    let key = key_at(&history);
    assert_eq!(key.status(now()), KeyStatus::Active);
    assert_eq!(key.status(at(100)), KeyStatus::Expired);

    history.push(key_disabled(KEY));
    history.push(key_deleted(KEY, "disabled"));
    let key = key_at(&history);
    assert_eq!(key.status(now()), KeyStatus::Deleted);
    assert_eq!(key.status(at(1000)), KeyStatus::Deleted);
    assert_eq!(key.version, 5);
}

#[test]
fn key_without_expiry_never_expires() {
    let state = state_of(vec![genesis(), key_created(KEY, "ci", Role::Admin, None)]);
    let key = state.api_keys.get(&KEY).expect("key present");
    assert_eq!(key.status(at(100 * 365 * 86_400)), KeyStatus::Active);
}

#[test]
fn pat_and_user_status_over_time() {
    let mut history = with_user();
    history.push(pat_created(PAT, USER, Some(at(100))));
    let state = state_of(history.clone());
    let pat = state.pats.get(&PAT).expect("pat present");
    assert_eq!(pat.status(at(99)), PatStatus::Active);
    assert_eq!(pat.status(at(100)), PatStatus::Expired);
    assert_eq!(
        state.users.get(&USER).map(|u| u.status),
        Some(UserStatus::Active)
    );

    history.push(user_deactivated(USER));
    history.push(pat_revoked(PAT, USER, "active", "user_deactivated"));
    let state = state_of(history);
    let pat = state.pats.get(&PAT).expect("pat present");
    assert_eq!(pat.status(now()), PatStatus::Revoked);
    assert_eq!(pat.status(at(1000)), PatStatus::Revoked);
    assert_eq!(pat.version, 2);
    let user = state.users.get(&USER).expect("user present");
    assert_eq!(user.status, UserStatus::Deactivated);
    assert_eq!(user.version, 2);
}

#[test]
fn user_role_change_is_applied() {
    let mut history = with_user();
    history.push(user_role_changed(USER, Role::Basic, Role::Auditor));
    let state = state_of(history);
    let user = state.users.get(&USER).expect("user present");
    assert_eq!(user.role, Role::Auditor);
    assert_eq!(user.version, 2);
    assert_eq!(user.email, "ada@example.org");
    assert_eq!(user.created_seq, 1);
}

#[test]
fn credentials_index_follows_create_and_regenerate() {
    let mut history = with_key();
    let state = state_of(history.clone());
    assert_eq!(
        state.credentials.get(&secret(KEY)),
        Some(&CredentialRef::ApiKey(KEY))
    );

    history.push(key_regenerated(
        KEY,
        "second",
        (&display(KEY), secret(KEY)),
        at(3600),
    ));
    let state = state_of(history.clone());
    assert_eq!(
        state.credentials.get(&secret(KEY)),
        Some(&CredentialRef::SupersededApiKey(KEY))
    );
    assert_eq!(
        state.credentials.get(&SecretSha256::of("second")),
        Some(&CredentialRef::ApiKey(KEY))
    );
    let key = state.api_keys.get(&KEY).expect("key present");
    assert_eq!(key.secret_sha256, SecretSha256::of("second"));
    assert_eq!(key.display, "kl_…second");
    assert_eq!(key.superseded, vec![(secret(KEY), at(3600))]);
    assert_eq!(key.version, 2);

    history.push(key_regenerated(
        KEY,
        "third",
        ("kl_…second", SecretSha256::of("second")),
        at(60),
    ));
    let state = state_of(history.clone());
    assert_eq!(
        state.credentials.get(&SecretSha256::of("second")),
        Some(&CredentialRef::SupersededApiKey(KEY))
    );
    assert_eq!(
        state.credentials.get(&SecretSha256::of("third")),
        Some(&CredentialRef::ApiKey(KEY))
    );
    let key = state.api_keys.get(&KEY).expect("key present");
    assert_eq!(
        key.superseded,
        vec![
            (secret(KEY), at(3600)),
            (SecretSha256::of("second"), at(60))
        ]
    );

    // Deleting keeps every hash indexed, so a deleted key's secret is recognised.
    history.push(key_deleted(KEY, "active"));
    let state = state_of(history);
    assert_eq!(
        state.credentials.get(&secret(KEY)),
        Some(&CredentialRef::SupersededApiKey(KEY))
    );
    assert_eq!(
        state.credentials.get(&SecretSha256::of("third")),
        Some(&CredentialRef::ApiKey(KEY))
    );
}

#[test]
fn credentials_index_holds_pats() {
    let mut history = with_user();
    history.push(pat_created(PAT, USER, None));
    let state = state_of(history);
    assert_eq!(
        state.credentials.get(&secret(PAT)),
        Some(&CredentialRef::Pat(PAT))
    );
    let pat = state.pats.get(&PAT).expect("pat present");
    assert_eq!(pat.user_id, USER);
    assert_eq!(pat.created_seq, 2);
    assert_eq!(pat.created_by, "keyledger");
    assert_eq!(state.pats_of(USER).len(), 1);
    assert!(state.pats_of(OTHER_USER).is_empty());
    assert_eq!(state.credentials.get(&secret(UNKNOWN)), None);
}

#[test]
fn key_names_follow_create_rename_and_delete() {
    let mut history = vec![genesis(), key_created(KEY, "CI", Role::Admin, None)];
    let state = state_of(history.clone());
    assert_eq!(state.key_names.get("ci"), Some(&KEY));
    assert_eq!(state.key_names.get("CI"), None);

    history.push(key_renamed(KEY, "CI", "Deploy"));
    let state = state_of(history.clone());
    assert_eq!(state.key_names.get("ci"), None);
    assert_eq!(state.key_names.get("deploy"), Some(&KEY));

    history.push(key_renamed(KEY, "Deploy", "DEPLOY"));
    let state = state_of(history.clone());
    assert_eq!(state.key_names.get("deploy"), Some(&KEY));
    assert_eq!(
        state.api_keys.get(&KEY).map(|k| k.name.as_str()),
        Some("DEPLOY")
    );

    history.push(key_disabled(KEY));
    let state = state_of(history.clone());
    assert_eq!(state.key_names.get("deploy"), Some(&KEY));

    history.push(key_deleted(KEY, "disabled"));
    let state = state_of(history);
    assert!(state.key_names.is_empty());
    assert!(state.api_keys.contains_key(&KEY), "deleted keys are kept");
}

#[test]
fn versions_increment_per_stream() {
    let state = state_of(vec![
        genesis(),
        key_created(KEY, "ci", Role::Admin, None),
        user_registered(USER, "ada@example.org", Role::Basic),
        key_renamed(KEY, "ci", "cd"),
        key_created(OTHER_KEY, "other", Role::Basic, None),
        key_role_changed(KEY, Role::Admin, Role::Limited),
        key_expiry_changed(KEY, None, Some(at(60))),
        pat_created(PAT, USER, None),
        EventData::CredentialActivity(activity(PAT, USER, now())),
    ]);
    assert_eq!(state.size, 9);
    assert_eq!(state.version(&Stream::Ledger), 1);
    assert_eq!(state.version(&Stream::ApiKey(KEY)), 4);
    assert_eq!(state.version(&Stream::ApiKey(OTHER_KEY)), 1);
    assert_eq!(state.version(&Stream::User(USER)), 1);
    assert_eq!(state.version(&Stream::Pat(PAT)), 1);
    assert_eq!(state.version(&Stream::Activity(PAT)), 1);
    assert_eq!(state.version(&Stream::ApiKey(UNKNOWN)), 0);

    let key = state.api_keys.get(&KEY).expect("key present");
    assert_eq!(key.version, 4);
    assert_eq!(key.name, "cd");
    assert_eq!(key.role, Role::Limited);
    assert_eq!(key.expires_at, Some(at(60)));
    // Activity lives on its own stream and does not move the key's or pat's version.
    assert_eq!(state.pats.get(&PAT).map(|p| p.version), Some(1));
}

#[test]
fn decided_events_fold_into_the_expected_state() {
    let given = given(with_key());
    let changes = KeyChanges {
        name: Some(name("deploy")),
        role: Some(Role::Basic),
        expires_at: Some(None),
    };
    let events =
        decide(&given.state, &update(KEY, changes, Some(1)), now()).expect("update is accepted");
    let mut history = with_key();
    history.extend(events);
    let state = state_of(history);
    let key = state.api_keys.get(&KEY).expect("key present");
    assert_eq!(key.name, "deploy");
    assert_eq!(key.role, Role::Basic);
    assert_eq!(key.expires_at, None);
    assert_eq!(key.version, 4);
    assert_eq!(state.key_names.get("deploy"), Some(&KEY));
    assert_eq!(state.key_names.get("ci"), None);
}

#[test]
fn record_use_moves_last_used_at_forward_only() {
    let mut history = with_user();
    history.push(key_created(KEY, "ci", Role::Admin, None));
    history.push(pat_created(PAT, USER, None));
    let mut state = state_of(history);

    state.record_use(KEY, at(-10));
    assert_eq!(state.api_keys[&KEY].last_used_at, Some(at(-10)));
    state.record_use(KEY, at(-20));
    assert_eq!(state.api_keys[&KEY].last_used_at, Some(at(-10)));
    state.record_use(KEY, at(-5));
    assert_eq!(state.api_keys[&KEY].last_used_at, Some(at(-5)));

    // A PAT's use also counts as its user's.
    state.record_use(PAT, at(-30));
    assert_eq!(state.pats[&PAT].last_used_at, Some(at(-30)));
    assert_eq!(state.users[&USER].last_used_at, Some(at(-30)));
    state.record_use(PAT, at(-40));
    assert_eq!(state.pats[&PAT].last_used_at, Some(at(-30)));
    assert_eq!(state.users[&USER].last_used_at, Some(at(-30)));

    // Unknown credentials are ignored.
    state.record_use(UNKNOWN, now());
    assert!(!state.api_keys.contains_key(&UNKNOWN));
}

#[test]
fn credential_activity_events_record_use() {
    let mut history = with_user();
    history.push(pat_created(PAT, USER, None));
    history.push(EventData::CredentialActivity(activity(PAT, USER, at(-10))));
    history.push(EventData::CredentialActivity(activity(PAT, USER, at(-100))));
    let state = state_of(history);
    assert_eq!(state.pats[&PAT].last_used_at, Some(at(-10)));
    assert_eq!(state.users[&USER].last_used_at, Some(at(-10)));
    assert_eq!(state.version(&Stream::Activity(PAT)), 2);
}

#[test]
fn applying_an_already_applied_entry_is_a_no_op() {
    let entries = entries_of(vec![
        genesis(),
        key_created(KEY, "ci", Role::Admin, None),
        user_registered(USER, "ada@example.org", Role::Basic),
        pat_created(PAT, USER, None),
    ]);
    let mut state = State::default();
    for e in &entries {
        state.apply(e);
    }
    let snapshot = state.clone();

    // Replaying the whole log changes nothing.
    for e in &entries {
        state.apply(e);
    }
    // An old seq carrying a different event changes nothing either.
    state.apply(&entry(1, 2, at(50), key_deleted(KEY, "active")));
    state.apply(&entry(
        3,
        2,
        at(50),
        pat_revoked(PAT, USER, "active", "revoked"),
    ));

    assert_eq!(state.size, snapshot.size);
    assert_eq!(state.size, 4);
    assert_eq!(state.last_at, snapshot.last_at);
    assert_eq!(state.origin, snapshot.origin);
    assert_eq!(state.api_keys, snapshot.api_keys);
    assert_eq!(state.users, snapshot.users);
    assert_eq!(state.pats, snapshot.pats);
    assert_eq!(state.key_names, snapshot.key_names);
    assert_eq!(state.credentials, snapshot.credentials);
    assert_eq!(state.streams, snapshot.streams);

    // The next seq is applied.
    state.apply(&entry(4, 2, at(50), key_deleted(KEY, "active")));
    assert_eq!(state.size, 5);
    assert_eq!(state.last_at, Some(at(50)));
    assert_eq!(state.api_keys[&KEY].status(now()), KeyStatus::Deleted);
}

// ---------------------------------------------------------------------------------------
// The last admin credential
// ---------------------------------------------------------------------------------------

/// A fresh log: genesis and the bootstrap admin key, the only admin credential.
fn with_bootstrap_only() -> Vec<EventData> {
    vec![
        genesis(),
        key_created(BOOTSTRAP, "bootstrap-admin", Role::Admin, None),
    ]
}

#[test]
fn the_last_admin_key_cannot_be_disabled_deleted_or_demoted() {
    let state = given(with_bootstrap_only());
    state
        .when(disable(BOOTSTRAP, None), now())
        .then_error(DomainError::LastAdmin);
    state
        .when(delete(BOOTSTRAP, None), now())
        .then_error(DomainError::LastAdmin);
    for role in [Role::Basic, Role::Limited] {
        let changes = KeyChanges {
            role: Some(role),
            ..KeyChanges::default()
        };
        state
            .when(update(BOOTSTRAP, changes, None), now())
            .then_error(DomainError::LastAdmin);
    }
    // What keeps it an admin credential is still allowed.
    state
        .when(update(BOOTSTRAP, rename_to("root"), None), now())
        .then_events(vec![key_renamed(BOOTSTRAP, "bootstrap-admin", "root")]);
}

#[test]
fn a_second_admin_key_frees_the_first() {
    let mut history = with_bootstrap_only();
    history.push(key_created(KEY, "ci", Role::Admin, None));
    given(history)
        .when(delete(BOOTSTRAP, None), now())
        .then_events(vec![key_deleted(BOOTSTRAP, "active")]);
}

#[test]
fn disabled_or_expired_admin_keys_do_not_count() {
    let mut history = with_bootstrap_only();
    history.push(key_created(KEY, "ci", Role::Admin, Some(at(60))));
    history.push(key_created(OTHER_KEY, "cd", Role::Admin, None));
    history.push(key_disabled(OTHER_KEY));
    let state = given(history);
    // At now + 120 s, "ci" has expired and "cd" is disabled: the bootstrap key is the last.
    state
        .when(delete(BOOTSTRAP, None), at(120))
        .then_error(DomainError::LastAdmin);
    // Before "ci" expires, it still counts.
    state
        .when(delete(BOOTSTRAP, None), now())
        .then_events(vec![key_deleted(BOOTSTRAP, "active")]);
}

#[test]
fn an_admin_users_token_counts_as_an_admin_credential() {
    let mut history = with_bootstrap_only();
    history.push(user_registered(USER, "ada@example.org", Role::Admin));
    history.push(pat_created(PAT, USER, None));
    given(history)
        .when(delete(BOOTSTRAP, None), now())
        .then_events(vec![key_deleted(BOOTSTRAP, "active")]);

    // With the key gone, the token is the last: it cannot be revoked, nor its user demoted
    // or deactivated.
    let mut history = with_bootstrap_only();
    history.push(user_registered(USER, "ada@example.org", Role::Admin));
    history.push(pat_created(PAT, USER, None));
    history.push(key_deleted(BOOTSTRAP, "active"));
    let last = given(history);
    last.when(revoke(PAT, None), now())
        .then_error(DomainError::LastAdmin);
    last.when(change_role(USER, Role::Basic, None), now())
        .then_error(DomainError::LastAdmin);
    last.when(deactivate(USER, None), now())
        .then_error(DomainError::LastAdmin);
    // A non-admin user's token is never an admin credential.
    let mut history = with_bootstrap_only();
    history.push(user_registered(OTHER_USER, "bob@example.org", Role::Basic));
    history.push(pat_created(OTHER_PAT, OTHER_USER, None));
    given(history)
        .when(revoke(OTHER_PAT, None), now())
        .then_events(vec![EventData::PatRevoked(PatRevoked {
            token_id: OTHER_PAT,
            user_id: OTHER_USER,
            from: "active".into(),
            to: "revoked".into(),
            reason: "revoked".into(),
        })]);
}

#[test]
fn an_admin_user_without_tokens_is_not_a_credential() {
    // Registering an admin user gives no credential until a token is issued, so it does
    // not free the bootstrap key.
    let mut history = with_bootstrap_only();
    history.push(user_registered(USER, "ada@example.org", Role::Admin));
    given(history)
        .when(disable(BOOTSTRAP, None), now())
        .then_error(DomainError::LastAdmin);
}

// ---------------------------------------------------------------------------------------
// Free text: names and emails
// ---------------------------------------------------------------------------------------

#[test]
fn names_refuse_invisible_and_secret_shaped_text() {
    let secret =
        crate::crypto::secret::PlainSecret::generate(crate::crypto::secret::SecretKind::ApiKey)
            .expect("rng");
    for raw in [
        "c\u{200b}i".to_string(),
        "\u{feff}ci".to_string(),
        "admin\u{202e}gnp.exe".to_string(),
        "\u{200b}\u{200b}".to_string(),
        secret.expose().to_string(),
        format!("prod {}", &secret.expose()[4..]),
    ] {
        assert!(
            matches!(KeyName::parse(&raw), Err(DomainError::InvalidName(_))),
            "{raw:?}"
        );
    }
    assert!(matches!(
        Email::parse(&format!("{}@example.org", &secret.expose()[..10])),
        Err(DomainError::UnsafeEmail(_))
    ));
    assert!(matches!(
        Email::parse("ad\u{200b}a@example.org"),
        Err(DomainError::UnsafeEmail(_))
    ));
}

#[test]
fn names_collide_after_width_and_case_folding() {
    let state = given(with_key());
    for taken in ["ｃｉ", "CI", "Ｃi"] {
        state
            .when(create_key(OTHER_KEY, taken, Role::Basic, None), now())
            .then_error(DomainError::NameTaken);
    }
    state
        .when(create_key(OTHER_KEY, "ci2", Role::Basic, None), now())
        .then_events(vec![key_created(OTHER_KEY, "ci2", Role::Basic, None)]);
}

#[test]
fn emails_collide_after_folding() {
    let mut history = with_user();
    history.push(user_registered(
        OTHER_USER,
        "ｂｏｂ@example.org",
        Role::Basic,
    ));
    let state = given(history);
    state
        .when(register(UNKNOWN, "bob@example.org", Role::Basic), now())
        .then_error(DomainError::EmailTaken);
}

// ---------------------------------------------------------------------------------------
// Bootstrap
// ---------------------------------------------------------------------------------------

fn bootstrap() -> Command {
    Command::Bootstrap {
        origin: "keyledger.test/log".into(),
        public_key: "MCowBQYDK2VwAyEA".into(),
        key_id: BOOTSTRAP,
        name: name("bootstrap-admin"),
        secret_sha256: secret(BOOTSTRAP),
        display: display(BOOTSTRAP),
    }
}

#[test]
fn bootstrap_on_an_empty_log_is_genesis_and_an_admin_key() {
    given(vec![]).when(bootstrap(), now()).then_events(vec![
        genesis(),
        key_created(BOOTSTRAP, "bootstrap-admin", Role::Admin, None),
    ]);
}

#[test]
fn bootstrap_after_a_bare_genesis_adds_only_the_key() {
    given(vec![genesis()])
        .when(bootstrap(), now())
        .then_events(vec![key_created(
            BOOTSTRAP,
            "bootstrap-admin",
            Role::Admin,
            None,
        )]);
}

#[test]
fn bootstrap_of_a_log_in_use_does_nothing() {
    given(with_user())
        .when(bootstrap(), now())
        .then_events(vec![]);
    given(with_key())
        .when(bootstrap(), now())
        .then_events(vec![]);
}
