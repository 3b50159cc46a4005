//! Value types of the domain, parsed once at the edge ("parse, don't validate"): a
//! [`KeyName`] is always trimmed and 1–100 characters, a [`Role`] is one of four, a
//! [`Timestamp`] always has microsecond precision and prints with exactly six fractional
//! digits and `Z`, as the log format requires.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::{DomainError, text};

/// What a principal may do. API keys take `admin`, `basic` or `limited`; users take any.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Every endpoint, including `admin/` ones.
    Admin,
    /// Non-admin endpoints: search, chat, agents, actions.
    Basic,
    /// Reading agents and posting chat messages, nothing else.
    Limited,
    /// Read-only access to keyledger's audit API (separation of duties).
    Auditor,
}

impl Role {
    /// The wire name of the role.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Basic => "basic",
            Role::Limited => "limited",
            Role::Auditor => "auditor",
        }
    }

    /// Parses a role a user may hold.
    pub fn parse(s: &str) -> Result<Role, DomainError> {
        match s {
            "admin" => Ok(Role::Admin),
            "basic" => Ok(Role::Basic),
            "limited" => Ok(Role::Limited),
            "auditor" => Ok(Role::Auditor),
            _ => Err(DomainError::UnknownRole),
        }
    }

    /// Parses a role an API key may hold (the seed's three key types).
    pub fn parse_key_role(s: &str) -> Result<Role, DomainError> {
        match Role::parse(s)? {
            Role::Auditor => Err(DomainError::RoleNotForApiKeys),
            role => Ok(role),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Longest name, in characters, after trimming.
pub const MAX_NAME_CHARS: usize = 100;

/// A key or token name: trimmed, 1 to 100 characters, none of the characters or secret
/// shapes [`text::refusal`] refuses.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyName(String);

impl KeyName {
    /// Trims and checks a proposed name.
    pub fn parse(raw: &str) -> Result<KeyName, DomainError> {
        let name = raw.trim();
        let chars = name.chars().count();
        if chars == 0 {
            return Err(DomainError::InvalidName("name must not be empty".into()));
        }
        if chars > MAX_NAME_CHARS {
            return Err(DomainError::InvalidName(format!(
                "name must be at most {MAX_NAME_CHARS} characters"
            )));
        }
        if let Some(why) = text::refusal(name) {
            return Err(DomainError::InvalidName(format!("name {why}")));
        }
        Ok(KeyName(name.to_string()))
    }

    /// The name as given (trimmed).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form used for uniqueness ([`text::fold`]): names differing only in case or
    /// width are the same name, so "CI", "ｃｉ" and "ci" cannot all be live and confuse
    /// whoever reads the audit trail.
    pub fn folded(&self) -> String {
        text::fold(&self.0)
    }
}

/// A user's e-mail address: trimmed, lowercased, with one `@` and text on both sides.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    /// Checks a proposed address. Deliberately loose: keyledger does not send mail, it only
    /// needs a stable, human-recognisable identifier.
    pub fn parse(raw: &str) -> Result<Email, DomainError> {
        // Checked as given: lowercasing first would hide a secret's checksum (and its
        // case could then be guessed back against the stored hash).
        if let Some(why) = text::refusal(raw.trim()) {
            return Err(DomainError::UnsafeEmail(why));
        }
        let email = raw.trim().to_lowercase();
        let valid = email.len() <= 254
            && !email.chars().any(|c| c.is_whitespace() || c.is_control())
            && matches!(email.split_once('@'), Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
        if valid {
            Ok(Email(email))
        } else {
            Err(DomainError::InvalidEmail)
        }
    }

    /// The address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An instant with microsecond precision, printed as `2026-11-28T21:31:06.123456Z`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    /// Truncates to whole microseconds, the precision of the log.
    pub fn from_datetime(t: DateTime<Utc>) -> Timestamp {
        let micros = t.timestamp_micros();
        Timestamp(DateTime::from_timestamp_micros(micros).unwrap_or(t))
    }

    /// Microseconds since the Unix epoch.
    pub fn micros(self) -> i64 {
        self.0.timestamp_micros()
    }

    /// From microseconds since the Unix epoch.
    pub fn from_micros(micros: i64) -> Option<Timestamp> {
        DateTime::from_timestamp_micros(micros).map(Timestamp)
    }

    /// The underlying chrono value.
    pub fn datetime(self) -> DateTime<Utc> {
        self.0
    }

    /// This instant plus whole seconds (saturating at the representable range).
    pub fn plus_seconds(self, seconds: i64) -> Timestamp {
        self.0
            .checked_add_signed(chrono::TimeDelta::seconds(seconds))
            .map(Timestamp)
            .unwrap_or(self)
    }

    /// Parses RFC 3339 with any offset and any precision (truncated to microseconds);
    /// what is written back is always the canonical form.
    pub fn parse(s: &str) -> Option<Timestamp> {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| Timestamp::from_datetime(t.with_timezone(&Utc)))
    }

    /// Parses exactly the canonical form (`2026-11-28T21:31:06.123456Z`), nothing else:
    /// what an entry's `at` must be. Cheaper than parsing any RFC 3339 and printing it back.
    pub fn parse_canonical(s: &str) -> Option<Timestamp> {
        let b = s.as_bytes();
        if b.len() != 27 {
            return None;
        }
        let shape_ok = b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'.',
            26 => c == b'Z',
            _ => c.is_ascii_digit(),
        });
        if !shape_ok {
            return None;
        }
        let num = |from: usize, to: usize| -> u32 {
            b[from..to]
                .iter()
                .fold(0u32, |n, &c| n * 10 + u32::from(c - b'0'))
        };
        let date = chrono::NaiveDate::from_ymd_opt(num(0, 4) as i32, num(5, 7), num(8, 10))?;
        let (hour, minute, second) = (num(11, 13), num(14, 16), num(17, 19));
        if second > 59 {
            return None;
        }
        let time = date.and_hms_micro_opt(hour, minute, second, num(20, 26))?;
        Some(Timestamp(time.and_utc()))
    }

    /// The canonical text form: UTC, six fractional digits, `Z`.
    pub fn to_rfc3339(self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::Micros, true)
    }

    /// The UTC day, `YYYY-MM-DD`, used to bucket activity.
    pub fn day(self) -> String {
        self.0.format("%Y-%m-%d").to_string()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl FromStr for Timestamp {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Timestamp::parse(s).ok_or(DomainError::InvalidTimestamp)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse(&s).ok_or_else(|| serde::de::Error::custom("invalid RFC 3339 timestamp"))
    }
}

/// The source of "now". Injected so that the domain core and tests control time.
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_datetime(Utc::now())
    }
}

/// A clock that moves only when told to, for tests of expiry and grace periods.
#[derive(Debug)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: Timestamp) -> ManualClock {
        ManualClock(std::sync::atomic::AtomicI64::new(start.micros()))
    }

    /// Moves the clock forward by whole seconds.
    pub fn advance(&self, seconds: i64) {
        self.0.fetch_add(
            seconds.saturating_mul(1_000_000),
            std::sync::atomic::Ordering::SeqCst,
        );
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        let micros = self.0.load(std::sync::atomic::Ordering::SeqCst);
        Timestamp::from_micros(micros).unwrap_or_else(|| SystemClock.now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(
            KeyName::parse("  ci bot ").map(|n| n.0),
            Ok("ci bot".into())
        );
        assert!(KeyName::parse("   ").is_err());
        assert!(KeyName::parse(&"é".repeat(100)).is_ok());
        assert!(KeyName::parse(&"é".repeat(101)).is_err());
        assert!(KeyName::parse("a\u{0}b").is_err());
    }

    #[test]
    fn emails_need_an_at_sign() {
        assert_eq!(
            Email::parse(" Ada@Example.org ").map(|e| e.0),
            Ok("ada@example.org".into())
        );
        for bad in ["", "ada", "@x", "ada@", "a b@x", "a@b@c"] {
            assert_eq!(Email::parse(bad), Err(DomainError::InvalidEmail), "{bad}");
        }
    }

    #[test]
    fn timestamps_print_six_digits_and_z() {
        let t = Timestamp::parse("2026-11-28T22:31:06.1234567+01:00").expect("valid");
        assert_eq!(t.to_rfc3339(), "2026-11-28T21:31:06.123456Z");
        let t = Timestamp::parse("2026-11-28T21:31:06Z").expect("valid");
        assert_eq!(t.to_rfc3339(), "2026-11-28T21:31:06.000000Z");
        assert_eq!(t.day(), "2026-11-28");
        assert!(Timestamp::parse("yesterday").is_none());
    }

    #[test]
    fn roles_parse_and_api_keys_refuse_auditor() {
        assert_eq!(Role::parse("auditor"), Ok(Role::Auditor));
        assert_eq!(Role::parse("root"), Err(DomainError::UnknownRole));
        assert_eq!(
            Role::parse_key_role("auditor"),
            Err(DomainError::RoleNotForApiKeys)
        );
        assert_eq!(Role::parse_key_role("limited"), Ok(Role::Limited));
    }
}
