//! Host-application access policy: may a key with a given [`Role`] call `METHOD /path` on
//! the host application? This answers `POST /v1/verify {key, method, path}`.
//!
//! The policy is data. A JSON file given with `--policy` replaces the built-in default
//! (`src/default_policy.json`, embedded in the binary); the format is described by
//! `schemas/policy.schema.json` (JSON Schema 2020-12).
//!
//! # File format
//!
//! ```json
//! {
//!   "$schema": "https://keyledger.dev/schemas/policy.schema.json",
//!   "version": 1,
//!   "description": "optional free text",
//!   "host": {"semicolons_are_literal": false, "case_sensitive_paths": false},
//!   "rules": [
//!     {"roles": ["basic"], "methods": ["*"], "paths": ["/admin/**", "/manage/admin/**"],
//!      "effect": "deny", "description": "optional free text"},
//!     {"roles": ["basic"], "methods": ["*"], "paths": ["/**"], "effect": "allow"}
//!   ]
//! }
//! ```
//!
//! * `version` (required) must be `1`. `$schema` and `description` are optional strings
//!   and are ignored. Any other field, at the top, in `host` or in a rule, is an error.
//! * `host` (optional) is an object of booleans stating what the host application does
//!   *not* do to a path before routing it (below); every option defaults to `false`.
//! * `rules` (required) may be empty, which denies everything. Each rule needs non-empty
//!   `roles` (`admin`, `basic`, `limited`, `auditor`), non-empty `methods` (upper-case
//!   method names of 1 to 20 letters `A-Z`, or `"*"` for any), non-empty `paths` (path
//!   patterns, below) and an `effect` (`allow` or `deny`).
//!
//! # Evaluation
//!
//! Rules are tried in order. The first rule whose `roles` contain the caller's role, whose
//! `methods` contain the request method (or `"*"`) and one of whose `paths` matches the
//! normalised request path decides. No matching rule denies. The request method is
//! upper-cased first; a method that is not 1 to 20 ASCII letters is denied outright, and
//! so is a path that [`normalize_path`] refuses or that a host could route elsewhere than
//! the rules read it (see [Host assumptions](#host-assumptions)) — whatever the role,
//! admin included.
//!
//! # Path patterns
//!
//! A pattern starts with `/` and is matched segment by segment against the normalised
//! path:
//!
//! * a literal segment matches exactly that segment: case-sensitively in an `allow` rule,
//!   ignoring ASCII case in a `deny` rule (unless `host.case_sensitive_paths`), so that a
//!   change of case can turn an allow into a deny but never the reverse;
//! * `*` matches exactly one segment;
//! * `**`, allowed only as the last segment, matches zero or more remaining segments, so
//!   `/agents/**` matches `/agents`, `/agents/7` and `/agents/7/x`;
//! * `/` alone matches the root path only; `/**` matches every path.
//!
//! A trailing slash on the request path is ignored for matching: `/agents/` is matched as
//! `/agents`. Patterns may not contain empty segments (`/a//b`, or a trailing `/` other than
//! the root pattern `/`), the literal segments `.` and `..` (they could never match a
//! normalised path), or the characters `*` (other than as a whole `*`/`**` segment), `?`,
//! `#`, `%`, `\` and control characters in a literal.
//!
//! # Path normalisation
//!
//! See [`normalize_path`]: query and fragment are dropped, percent escapes decoded (escapes
//! of `/`, `\`, `.` and `%` refused), runs of `/` collapsed and `.`/`..` resolved as in
//! RFC 3986 §5.2.4, so that `/agents/../admin/x` is judged as `/admin/x`.
//!
//! # Host assumptions
//!
//! RFC 3986 alone is not how every host routes a path: some strip `;` parameters, fold
//! full-width letters, strip trailing dots or ignore case, and so reach `/admin/users` from
//! a path that no rule reads as admin. Unless the policy's `host` object says the host does
//! not rewrite that way, [`Policy::decide`] therefore refuses, after normalisation and
//! before any rule, a path that
//!
//! * holds a `;` (literal or `%3B`) — `semicolons_are_literal: true` asserts the host
//!   treats `;` as an ordinary character (no matrix or `;jsessionid` parameters stripped,
//!   as Tomcat and Spring do with `/admin;x/users` and `/search/..;/admin`);
//! * holds a character outside ASCII (literal or percent-encoded UTF-8) —
//!   `non_ascii_paths_are_literal: true` asserts the host compares such characters as they
//!   are (no full-width folding such as `/ａdmin` to `/admin`, no Unicode normalisation
//!   or case folding);
//! * has a segment ending in `.` — `trailing_dots_are_literal: true` asserts the host does
//!   not strip trailing dots (as Windows file names and IIS do with `/admin./users`);
//!
//! and `deny` rules ignore ASCII case — `case_sensitive_paths: true` asserts the host
//! routes paths case-sensitively, so deny rules match exactly, like allow rules
//! (IIS, for one, routes `/ADMIN/users` to `/admin/users`). Each option relaxes exactly its
//! own refusal; a path relying on two tricks needs both options to be allowed.
//!
//! # Errors
//!
//! A bad policy stops start-up with a [`PolicyError`] naming the file, the line and column
//! of the offending token and, inside a rule, the rule's number and the line it starts on.
//! An unknown `host` option, or one that is not a boolean, is such an error.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde::Deserialize;
use serde::de::{self, Deserializer};

use crate::domain::Role;

/// The only version of the policy format.
pub const POLICY_VERSION: u64 = 1;

/// Longest request path (without query and fragment), in bytes, that is judged at all;
/// longer ones are denied.
pub const MAX_PATH_LEN: usize = 8192;

/// Longest method name accepted.
const MAX_METHOD_LEN: usize = 20;

/// The built-in default policy.
const BUILTIN_JSON: &str = include_str!("default_policy.json");

/// A policy file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read (missing, unreadable, not UTF-8).
    #[error("cannot read policy file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid JSON or does not follow the format.
    #[error("{}line {line}, column {column}: {message}{}", origin(.file), in_rule(.rule))]
    Invalid {
        /// The file, when loaded from one.
        file: Option<PathBuf>,
        /// 1-based line of the offending token.
        line: usize,
        /// 1-based column (in bytes) of the offending token.
        column: usize,
        /// The rule the error is in, if any.
        rule: Option<RuleLocation>,
        /// What is wrong.
        message: String,
    },
}

/// Where a rule starts in a policy file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleLocation {
    /// 1-based number of the rule in `rules`.
    pub index: usize,
    /// 1-based line of the rule's opening `{`.
    pub line: usize,
}

fn origin(file: &Option<PathBuf>) -> String {
    match file {
        Some(path) => format!("policy file {}: ", path.display()),
        None => "policy: ".to_string(),
    }
}

fn in_rule(rule: &Option<RuleLocation>) -> String {
    match rule {
        Some(r) => format!(" (in rule {}, which starts on line {})", r.index, r.line),
        None => String::new(),
    }
}

impl PolicyError {
    /// The 1-based line of the error, when it is about the file's content.
    pub fn line(&self) -> Option<usize> {
        match self {
            PolicyError::Read { .. } => None,
            PolicyError::Invalid { line, .. } => Some(*line),
        }
    }

    /// The rule the error is in, if any.
    pub fn rule(&self) -> Option<RuleLocation> {
        match self {
            PolicyError::Read { .. } => None,
            PolicyError::Invalid { rule, .. } => *rule,
        }
    }
}

/// The outcome of [`Policy::decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the call is allowed.
    pub allowed: bool,
    /// The path pattern of the rule that decided; `None` when no rule matched, or the
    /// method or path was refused before matching.
    pub pattern: Option<String>,
}

impl Decision {
    fn refused() -> Decision {
        Decision {
            allowed: false,
            pattern: None,
        }
    }
}

/// The `host` object: what the operator asserts the host application does *not* do to a
/// path before routing it. Every option defaults to `false`, the strict reading, because a
/// policy cannot see which server sits behind it and a wrong `true` lets a rewritten path
/// past a deny rule. See the module docs, "Host assumptions".
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Host {
    /// The host keeps `;` as an ordinary character (strips no matrix parameters).
    semicolons_are_literal: bool,
    /// The host compares non-ASCII characters as they are (no full-width or Unicode
    /// folding).
    non_ascii_paths_are_literal: bool,
    /// The host keeps trailing dots on segments.
    trailing_dots_are_literal: bool,
    /// The host routes paths case-sensitively; deny rules then match exactly.
    case_sensitive_paths: bool,
}

impl Host {
    /// Could a host that rewrites paths in a way this policy does not rule out route the
    /// normalised `path` elsewhere than the rules read it? Such a path is refused.
    fn may_reroute(&self, path: &str) -> bool {
        (!self.semicolons_are_literal && path.contains(';'))
            || (!self.non_ascii_paths_are_literal && !path.is_ascii())
            || (!self.trailing_dots_are_literal && path.split('/').any(|s| s.ends_with('.')))
    }
}

/// Reads `host`, which must be a JSON object: serde would also read a struct from an array.
fn host_object<'de, D: Deserializer<'de>>(d: D) -> Result<Host, D::Error> {
    struct Object;

    impl<'de> de::Visitor<'de> for Object {
        type Value = Host;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object of host options")
        }

        fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Host, A::Error> {
            Host::deserialize(de::value::MapAccessDeserializer::new(map))
        }
    }

    d.deserialize_map(Object)
}

/// A loaded, validated policy. Cheap to clone (the rules are shared).
#[derive(Debug, Clone)]
pub struct Policy {
    rules: Arc<[Rule]>,
    description: Option<Arc<str>>,
    host: Host,
}

impl Policy {
    /// The built-in default policy, embedded from `src/default_policy.json`. Never fails:
    /// should the embedded text ever be invalid, the error is logged and the returned
    /// policy denies everything.
    pub fn builtin() -> Policy {
        static BUILTIN: OnceLock<Policy> = OnceLock::new();
        BUILTIN
            .get_or_init(|| match Policy::from_json(BUILTIN_JSON) {
                Ok(policy) => policy,
                Err(err) => {
                    tracing::error!(error = %err, "built-in access policy is invalid; denying every request");
                    Policy::deny_all()
                }
            })
            .clone()
    }

    /// A policy without rules: denies everything.
    pub fn deny_all() -> Policy {
        Policy {
            rules: Arc::from(Vec::new()),
            description: None,
            host: Host::default(),
        }
    }

    /// Parses and validates a policy document.
    pub fn from_json(text: &str) -> Result<Policy, PolicyError> {
        parse(text, None)
    }

    /// Reads, parses and validates a policy file; errors name the file and the line.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        parse(&text, Some(path))
    }

    /// The document's `description`, if any.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The number of rules.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// May `role` call `method path`? The path is normalised with [`normalize_path`]
    /// first; a refused path, a path the host could route elsewhere than the rules read it
    /// (module docs, "Host assumptions") or an invalid method is denied with no pattern.
    pub fn decide(&self, role: Role, method: &str, path: &str) -> Decision {
        if !valid_request_method(method) {
            return Decision::refused();
        }
        let Some(path) = normalize_path(path) else {
            return Decision::refused();
        };
        if self.host.may_reroute(&path) {
            return Decision::refused();
        }
        let role_bit = role_bit(role);
        for rule in self.rules.iter() {
            if rule.roles & role_bit == 0 || !rule.methods.contains(method) {
                continue;
            }
            // A host that ignores case routes `/Admin` to `/admin`: a deny rule must catch
            // every spelling, while an allow rule keeps its exact one.
            let ignore_case = rule.effect == Effect::Deny && !self.host.case_sensitive_paths;
            if let Some(pattern) = rule.paths.iter().find(|p| p.matches(&path, ignore_case)) {
                return Decision {
                    allowed: rule.effect == Effect::Allow,
                    pattern: Some(pattern.source.clone()),
                };
            }
        }
        Decision::refused()
    }
}

/// Normalises a request path for matching; `None` means "deny".
///
/// 1. The query (`?…`) and fragment (`#…`) are dropped; what is left must start with `/`
///    and be at most [`MAX_PATH_LEN`] bytes.
/// 2. Refused: a literal `\`, a control character (literal or percent-encoded), a
///    malformed percent escape, a percent-encoded `/`, `\`, `.` (`%2F %5C %2E`, either
///    case) or `%` (`%25`, double encoding), and escapes that do not decode to UTF-8.
///    Other escapes are decoded (`/%61dmin` is `/admin`), as the host application does.
/// 3. Runs of `/` collapse into one.
/// 4. `.` and `..` segments are resolved as in RFC 3986 §5.2.4: `/a/b/../c` is `/a/c`,
///    `/../x` is `/x`, and a final `.` or `..` leaves a trailing slash (`/a/b/..` is
///    `/a/`). A `..` that somehow remained would be refused.
///
/// A trailing slash is kept in the result (the matcher ignores it). This is RFC 3986 only:
/// `;`, non-ASCII characters and trailing dots pass, and [`Policy::decide`] then refuses
/// them unless the policy's `host` options say the host takes them literally.
pub fn normalize_path(raw: &str) -> Option<String> {
    let end = raw.find(['?', '#']).unwrap_or(raw.len());
    let path = &raw[..end];
    if !path.starts_with('/') || path.len() > MAX_PATH_LEN {
        return None;
    }
    let mut out: Vec<u8> = Vec::with_capacity(path.len() + 1);
    let mut dir_at_end = false;
    // `%2F` is refused, so splitting the raw text on `/` splits the decoded path too.
    for raw_segment in path.split('/') {
        if raw_segment.is_empty() {
            continue;
        }
        let start = out.len();
        out.push(b'/');
        decode_segment(raw_segment.as_bytes(), &mut out)?;
        let segment = &out[start + 1..];
        if segment == b"." {
            out.truncate(start);
            dir_at_end = true;
        } else if segment == b".." {
            out.truncate(start);
            let parent = out.iter().rposition(|&b| b == b'/').unwrap_or(0);
            out.truncate(parent);
            dir_at_end = true;
        } else {
            dir_at_end = false;
        }
    }
    if out.is_empty() || dir_at_end || path.ends_with('/') {
        out.push(b'/');
    }
    let out = String::from_utf8(out).ok()?;
    if out.chars().any(char::is_control) || out.split('/').any(|s| s == "..") {
        return None;
    }
    Some(out)
}

/// Appends the percent-decoded `segment` to `out`, or refuses it.
fn decode_segment(segment: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let mut i = 0;
    while i < segment.len() {
        let byte = if segment[i] == b'%' {
            let hi = hex_value(*segment.get(i + 1)?)?;
            let lo = hex_value(*segment.get(i + 2)?)?;
            i += 3;
            let decoded = (hi << 4) | lo;
            if matches!(decoded, b'/' | b'.' | b'%') {
                return None;
            }
            decoded
        } else {
            i += 1;
            segment[i - 1]
        };
        if byte == b'\\' || byte < 0x20 || byte == 0x7f {
            return None;
        }
        out.push(byte);
    }
    Some(())
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A request method is 1 to 20 ASCII letters (matched case-insensitively, i.e. after
/// upper-casing).
fn valid_request_method(method: &str) -> bool {
    (1..=MAX_METHOD_LEN).contains(&method.len()) && method.bytes().all(|b| b.is_ascii_alphabetic())
}

fn role_bit(role: Role) -> u8 {
    match role {
        Role::Admin => 1,
        Role::Basic => 2,
        Role::Limited => 4,
        Role::Auditor => 8,
    }
}

/// A validated rule.
#[derive(Debug)]
struct Rule {
    /// Bit set of [`role_bit`]s.
    roles: u8,
    methods: Methods,
    paths: Box<[Pattern]>,
    effect: Effect,
    #[expect(dead_code, reason = "kept for Debug output")]
    description: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Effect {
    Allow,
    Deny,
}

/// The methods of a rule.
#[derive(Debug)]
enum Methods {
    Any,
    /// Upper-case names.
    Only(Box<[Box<str>]>),
}

impl Methods {
    /// `method` has been checked to be ASCII letters.
    fn contains(&self, method: &str) -> bool {
        match self {
            Methods::Any => true,
            Methods::Only(list) => list.iter().any(|m| m.eq_ignore_ascii_case(method)),
        }
    }
}

/// A path pattern, split into segments at load time.
#[derive(Debug)]
struct Pattern {
    /// As written in the file.
    source: String,
    segments: Box<[Segment]>,
    /// Ends in `**`.
    rest: bool,
}

#[derive(Debug)]
enum Segment {
    Literal(Box<str>),
    One,
}

impl Pattern {
    fn parse(source: &str) -> Result<Pattern, String> {
        let Some(body) = source.strip_prefix('/') else {
            return Err(format!("path pattern {source:?} must start with \"/\""));
        };
        let mut segments = Vec::new();
        let mut rest = false;
        if !body.is_empty() {
            let count = body.split('/').count();
            for (i, part) in body.split('/').enumerate() {
                match part {
                    "**" if i + 1 == count => rest = true,
                    "**" => {
                        return Err(format!(
                            "path pattern {source:?}: \"**\" may only be the last segment"
                        ));
                    }
                    "*" => segments.push(Segment::One),
                    "" => {
                        return Err(format!(
                            "path pattern {source:?} has an empty segment (doubled or trailing \"/\")"
                        ));
                    }
                    "." | ".." => {
                        return Err(format!(
                            "path pattern {source:?} has a {part:?} segment, which never matches a normalised path"
                        ));
                    }
                    literal => {
                        if let Some(c) = literal
                            .chars()
                            .find(|&c| matches!(c, '*' | '?' | '#' | '%' | '\\') || c.is_control())
                        {
                            return Err(format!(
                                "path pattern {source:?}: segment {literal:?} contains {c:?} (wildcards must be whole \"*\" or \"**\" segments; \"?\", \"#\", \"%\", \"\\\" and control characters are not allowed)"
                            ));
                        }
                        segments.push(Segment::Literal(literal.into()));
                    }
                }
            }
        }
        Ok(Pattern {
            source: source.to_string(),
            segments: segments.into_boxed_slice(),
            rest,
        })
    }

    /// Does the normalised `path` match? A trailing empty segment is ignored; literal
    /// segments ignore ASCII case when `ignore_case` (for deny rules).
    fn matches(&self, path: &str, ignore_case: bool) -> bool {
        // After normalisation, empty pieces can only be the leading one and a trailing one.
        let mut parts = path.split('/').filter(|s| !s.is_empty());
        for segment in self.segments.iter() {
            let Some(part) = parts.next() else {
                return false;
            };
            if let Segment::Literal(literal) = segment {
                let same = if ignore_case {
                    literal.eq_ignore_ascii_case(part)
                } else {
                    **literal == *part
                };
                if !same {
                    return false;
                }
            }
        }
        self.rest || parts.next().is_none()
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let source = String::deserialize(d)?;
        Pattern::parse(&source).map_err(de::Error::custom)
    }
}

/// One entry of `methods`.
enum MethodSpec {
    Any,
    Name(String),
}

impl<'de> Deserialize<'de> for MethodSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        if name == "*" {
            Ok(MethodSpec::Any)
        } else if (1..=MAX_METHOD_LEN).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_uppercase())
        {
            Ok(MethodSpec::Name(name))
        } else {
            Err(de::Error::custom(format!(
                "invalid method {name:?}: methods are upper-case names of 1 to {MAX_METHOD_LEN} letters A-Z, or \"*\""
            )))
        }
    }
}

/// What a list holds, for the message about an empty list.
trait Noun {
    const NOUN: &'static str;
}

impl Noun for Role {
    const NOUN: &'static str = "role";
}

impl Noun for MethodSpec {
    const NOUN: &'static str = "method";
}

impl Noun for Pattern {
    const NOUN: &'static str = "path pattern";
}

/// A list that must not be empty.
struct NonEmpty<T>(Vec<T>);

impl<'de, T: Deserialize<'de> + Noun> Deserialize<'de> for NonEmpty<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let list = Vec::<T>::deserialize(d)?;
        if list.is_empty() {
            return Err(de::Error::custom(format!(
                "empty list: a rule needs at least one {}",
                T::NOUN
            )));
        }
        Ok(NonEmpty(list))
    }
}

/// `version`: must be [`POLICY_VERSION`].
struct Version;

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let version = u64::deserialize(d)?;
        if version == POLICY_VERSION {
            Ok(Version)
        } else {
            Err(de::Error::custom(format!(
                "unsupported policy version {version}, expected {POLICY_VERSION}"
            )))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(rename = "$schema", default)]
    _schema: Option<String>,
    #[serde(rename = "version")]
    _version: Version,
    #[serde(default)]
    description: Option<String>,
    #[serde(default, deserialize_with = "host_object")]
    host: Host,
    rules: Vec<RuleFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    roles: NonEmpty<Role>,
    methods: NonEmpty<MethodSpec>,
    paths: NonEmpty<Pattern>,
    effect: Effect,
    #[serde(default)]
    description: Option<String>,
}

impl From<RuleFile> for Rule {
    fn from(file: RuleFile) -> Rule {
        let roles = file
            .roles
            .0
            .iter()
            .fold(0, |set, &role| set | role_bit(role));
        let methods = if file.methods.0.iter().any(|m| matches!(m, MethodSpec::Any)) {
            Methods::Any
        } else {
            Methods::Only(
                file.methods
                    .0
                    .into_iter()
                    .filter_map(|m| match m {
                        MethodSpec::Any => None,
                        MethodSpec::Name(name) => Some(name.into_boxed_str()),
                    })
                    .collect(),
            )
        };
        Rule {
            roles,
            methods,
            paths: file.paths.0.into_boxed_slice(),
            effect: file.effect,
            description: file.description,
        }
    }
}

fn parse(text: &str, file: Option<&Path>) -> Result<Policy, PolicyError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    match serde_json::from_str::<PolicyFile>(text) {
        Ok(doc) => Ok(Policy {
            rules: doc.rules.into_iter().map(Rule::from).collect(),
            description: doc.description.map(Arc::from),
            host: doc.host,
        }),
        Err(err) => Err(invalid(text, file, &err)),
    }
}

fn invalid(text: &str, file: Option<&Path>, err: &serde_json::Error) -> PolicyError {
    let (line, column) = (err.line(), err.column());
    let full = err.to_string();
    let suffix = format!(" at line {line} column {column}");
    let message = full.strip_suffix(&suffix).unwrap_or(&full).to_string();
    PolicyError::Invalid {
        file: file.map(Path::to_path_buf),
        line,
        column,
        rule: locate_rule(text, byte_offset(text, line, column)),
        message,
    }
}

/// The byte offset of serde_json's position (1-based line, 1-based byte column of the
/// last character read or the one looked at).
fn byte_offset(text: &str, line: usize, column: usize) -> usize {
    let line_start = if line <= 1 {
        0
    } else {
        text.match_indices('\n')
            .nth(line - 2)
            .map_or(text.len(), |(i, _)| i + 1)
    };
    (line_start + column.saturating_sub(1)).min(text.len())
}

fn line_of(text: &str, offset: usize) -> usize {
    1 + text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

/// Which element of the top-level `rules` array (if any) is open at `offset`: a small
/// scanner tracking strings and nesting, good enough for error messages.
fn locate_rule(text: &str, offset: usize) -> Option<RuleLocation> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut string_start = 0;
    let mut last_top_string: &str = "";
    let mut in_rules = false;
    let mut count = 0;
    let mut current: Option<(usize, usize)> = None;
    for (i, &b) in bytes.iter().enumerate().take(offset) {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
                if depth == 1 {
                    last_top_string = text.get(string_start..i).unwrap_or("");
                }
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                string_start = i + 1;
            }
            b'[' | b'{' => {
                depth += 1;
                if b == b'[' && depth == 2 && last_top_string == "rules" {
                    in_rules = true;
                } else if b == b'{' && depth == 3 && in_rules {
                    count += 1;
                    current = Some((count, i));
                }
            }
            b']' | b'}' => {
                if depth == 3 && in_rules && b == b'}' {
                    current = None;
                } else if depth == 2 && in_rules && b == b']' {
                    in_rules = false;
                }
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
    }
    current.map(|(index, start)| RuleLocation {
        index,
        line: line_of(text, start),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const ALL_ROLES: [Role; 4] = [Role::Admin, Role::Basic, Role::Limited, Role::Auditor];

    /// Fails to compile when a role is added, so that `ALL_ROLES` is revisited.
    #[expect(dead_code, reason = "exists only to fail compilation when Role grows")]
    fn exhaustive(role: Role) {
        match role {
            Role::Admin | Role::Basic | Role::Limited | Role::Auditor => {}
        }
    }

    fn allowed(policy: &Policy, role: Role, method: &str, path: &str) -> bool {
        policy.decide(role, method, path).allowed
    }

    fn policy(text: &str) -> Policy {
        Policy::from_json(text).expect("test policy parses")
    }

    fn error(text: &str) -> PolicyError {
        match Policy::from_json(text) {
            Ok(_) => panic!("policy should be rejected:\n{text}"),
            Err(err) => err,
        }
    }

    #[test]
    fn embedded_default_parses() {
        let parsed = Policy::from_json(BUILTIN_JSON).expect("built-in policy parses");
        assert_eq!(parsed.rule_count(), 5);
        assert_eq!(Policy::builtin().rule_count(), 5);
        assert!(Policy::builtin().description().is_some());
    }

    #[test]
    fn default_basic() {
        let p = Policy::builtin();
        for path in [
            "/admin/users",
            "/admin",
            "/admin/",
            "/manage/admin/connector",
            "/manage/admin",
        ] {
            let d = p.decide(Role::Basic, "GET", path);
            assert!(!d.allowed, "basic GET {path}");
            assert!(d.pattern.is_some(), "denied by an explicit rule: {path}");
        }
        assert!(!allowed(&p, Role::Basic, "POST", "/manage/admin/x"));
        let d = p.decide(Role::Basic, "POST", "/chat/send-message");
        assert_eq!(
            d,
            Decision {
                allowed: true,
                pattern: Some("/**".into())
            }
        );
        assert!(allowed(&p, Role::Basic, "GET", "/search"));
        assert!(allowed(&p, Role::Basic, "POST", "/search?q=x"));
        assert!(allowed(&p, Role::Basic, "GET", "/manage/connector"));
        assert!(allowed(&p, Role::Basic, "GET", "/administrator"));
        // Percent-encoded letters are decoded, so they cannot dodge the deny rule.
        assert!(!allowed(&p, Role::Basic, "GET", "/%61dmin/users"));
        assert_eq!(
            p.decide(Role::Basic, "GET", "/admin/users")
                .pattern
                .as_deref(),
            Some("/admin/**")
        );
    }

    #[test]
    fn default_limited() {
        let p = Policy::builtin();
        assert!(allowed(&p, Role::Limited, "POST", "/chat/send-message"));
        assert!(allowed(&p, Role::Limited, "post", "/chat/send-message"));
        assert!(allowed(&p, Role::Limited, "GET", "/persona"));
        assert!(allowed(&p, Role::Limited, "GET", "/persona/3"));
        assert!(allowed(&p, Role::Limited, "GET", "/agents/7"));
        assert!(allowed(&p, Role::Limited, "GET", "/agents"));
        assert_eq!(
            p.decide(Role::Limited, "GET", "/agents/7")
                .pattern
                .as_deref(),
            Some("/agents/**")
        );
        assert!(allowed(&p, Role::Limited, "POST", "/chat/send-message/"));
        assert!(allowed(&p, Role::Limited, "POST", "/chat/x/y/z"));
        assert_eq!(
            p.decide(Role::Limited, "POST", "/chat/send-message")
                .pattern
                .as_deref(),
            Some("/chat/*/**")
        );
        // Chat history, writing personas, admin: no rule, denied. No Onyx endpoint is the
        // bare chat collection, so `POST /chat` is not a chat post either.
        for (method, path) in [
            ("GET", "/chat/get-chat-session/5"),
            ("GET", "/chat"),
            ("POST", "/chat"),
            ("POST", "/chat/"),
            ("POST", "/chat?x=1"),
            ("POST", "/chat/./"),
            ("POST", "/chat/x/.."),
            ("POST", "/persona"),
            ("DELETE", "/persona/3"),
            ("GET", "/admin/x"),
            ("GET", "/search"),
            ("POST", "/agents/7"),
        ] {
            assert_eq!(
                p.decide(Role::Limited, method, path),
                Decision::refused(),
                "limited {method} {path}"
            );
        }
    }

    #[test]
    fn default_admin_and_auditor() {
        let p = Policy::builtin();
        for (method, path) in [
            ("GET", "/admin/x"),
            ("DELETE", "/manage/admin/y"),
            ("GET", "/chat/get-chat-session/5"),
            ("PATCH", "/"),
            ("GET", "/search"),
        ] {
            assert!(
                allowed(&p, Role::Admin, method, path),
                "admin {method} {path}"
            );
            assert_eq!(
                p.decide(Role::Auditor, method, path),
                Decision::refused(),
                "auditor {method} {path}"
            );
        }
    }

    #[test]
    fn invalid_methods_are_denied() {
        let p = Policy::builtin();
        for method in ["", "GE T", "GET1", "G-ET", "ÉTÉ", "ABCDEFGHIJKLMNOPQRSTU"] {
            assert_eq!(
                p.decide(Role::Admin, method, "/search"),
                Decision::refused(),
                "{method:?}"
            );
        }
        assert!(allowed(&p, Role::Admin, "ABCDEFGHIJKLMNOPQRST", "/search"));
        assert!(allowed(&p, Role::Admin, "get", "/search"));
    }

    #[test]
    fn traversal_never_reaches_admin_through_agents() {
        let p = Policy::builtin();
        // (path, basic allowed?) — limited is always denied.
        let cases = [
            ("/agents/../admin/x", false),
            ("/agents/%2e%2e/admin", false),
            ("/agents/%2E%2E/admin", false),
            ("/agents/%2Fadmin", false),
            ("/agents/%2fadmin", false),
            ("/agents\\..\\admin", false),
            ("/agents/%5C..%5Cadmin", false),
            ("//admin//x", false),
            ("/agents/./../admin", false),
            ("/agents/../../admin", false),
            ("/agents/..//admin", false),
            ("/agents/%252e%252e/admin", false),
        ];
        for (path, basic) in cases {
            for role in [Role::Limited, Role::Basic] {
                let d = p.decide(role, "GET", path);
                assert_ne!(d.pattern.as_deref(), Some("/agents/**"), "{role} {path}");
                let expected = role == Role::Basic && basic;
                assert_eq!(d.allowed, expected, "{role} GET {path}: {d:?}");
            }
        }
        // Traversal that stays inside allowed space is judged on where it lands.
        assert!(allowed(&p, Role::Limited, "GET", "/persona/../agents/3"));
        assert!(!allowed(&p, Role::Limited, "GET", "/agents/../chat/x"));
        assert!(allowed(&p, Role::Basic, "GET", "/admin/../search"));
    }

    #[test]
    fn normalize_path_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("/a/b/c/./../../g", Some("/a/g")),
            ("mid/content=5/../6", None),
            ("/a//b?x#y", Some("/a/b")),
            ("/", Some("/")),
            ("", None),
            ("?x=1", None),
            ("/?x=1", Some("/")),
            ("/#frag", Some("/")),
            ("/..", Some("/")),
            ("/../x", Some("/x")),
            ("/.", Some("/")),
            ("/a/b/..", Some("/a/")),
            ("/a/b/.", Some("/a/b/")),
            ("/a/./b", Some("/a/b")),
            ("/a/", Some("/a/")),
            ("///a///b///", Some("/a/b/")),
            ("/agents/../admin/x", Some("/admin/x")),
            ("/agents/./../admin", Some("/admin")),
            ("/a/..b/c", Some("/a/..b/c")),
            ("/a/.../c", Some("/a/.../c")),
            ("/%61dmin", Some("/admin")),
            ("/caf%C3%A9", Some("/café")),
            ("/a%20b", Some("/a b")),
            ("/a?b/../../..", Some("/a")),
            ("/a%2Fb", None),
            ("/a%2fb", None),
            ("/a%5Cb", None),
            ("/a%5cb", None),
            ("/a%2Eb", None),
            ("/a%2eb", None),
            ("/a%25b", None),
            ("/a\\b", None),
            ("/a%", None),
            ("/a%4", None),
            ("/a%zz", None),
            ("/a%00", None),
            ("/a%0A", None),
            ("/a\nb", None),
            ("/a\u{7f}", None),
            ("/a\u{85}", None),
            ("/a%C2%85", None),
            ("/a%FF", None),
            ("/a%C3", None),
        ];
        for (raw, expected) in cases {
            assert_eq!(normalize_path(raw).as_deref(), *expected, "{raw:?}");
        }
        assert!(normalize_path(&format!("/{}", "a".repeat(MAX_PATH_LEN))).is_none());
        assert!(normalize_path(&format!("/{}", "a".repeat(MAX_PATH_LEN - 1))).is_some());
    }

    // --- what hosts rewrite: `host` options ---------------------------------------------

    const SEMICOLONS: &str = "semicolons_are_literal";
    const NON_ASCII: &str = "non_ascii_paths_are_literal";
    const TRAILING_DOTS: &str = "trailing_dots_are_literal";
    const CASE: &str = "case_sensitive_paths";
    /// Every `host` option.
    const HOST_OPTIONS: [&str; 4] = [SEMICOLONS, NON_ASCII, TRAILING_DOTS, CASE];

    const NOBODY: &[Role] = &[];
    const ADMIN: &[Role] = &[Role::Admin];
    const ADMIN_BASIC: &[Role] = &[Role::Admin, Role::Basic];
    const ADMIN_BASIC_LIMITED: &[Role] = &[Role::Admin, Role::Basic, Role::Limited];

    /// Requests that a host rewriting paths one way would route elsewhere than the rules
    /// read them, grouped by the one `host` option asserting the host does not rewrite so.
    struct Tricks {
        /// The `host` option that relaxes the refusal.
        option: &'static str,
        /// The roles the built-in policy allows by default.
        strict: &'static [Role],
        /// The roles it allows with `option` set, reading the path literally.
        literal: &'static [Role],
        /// `METHOD /path`.
        requests: &'static [&'static str],
    }

    const TRICKS: &[Tricks] = &[
        // Matrix parameters stripped (Tomcat, Spring): refused for everyone.
        Tricks {
            option: SEMICOLONS,
            strict: NOBODY,
            literal: ADMIN_BASIC,
            requests: &[
                "GET /admin;x/users",
                "GET /admin;/users",
                "GET /admin%3b/users",
                "GET /admin%3B/users",
                "GET /search/..;/admin/users",
                "GET /manage/admin;jsessionid=1/x",
                "DELETE /Admin;x/users",
                "GET /search;jsessionid=1",
            ],
        },
        Tricks {
            option: SEMICOLONS,
            strict: NOBODY,
            literal: ADMIN_BASIC_LIMITED,
            requests: &["GET /agents/..;/chat/history", "GET /agents/%3B/chat"],
        },
        // Full-width or other non-ASCII characters folded (IIS, Unicode normalisation).
        Tricks {
            option: NON_ASCII,
            strict: NOBODY,
            literal: ADMIN_BASIC,
            requests: &[
                "GET /\u{ff41}dmin/users",
                "GET /%EF%BD%81dmin/users",
                "GET /%ef%bd%81dmin/users",
                "GET /manage/\u{ff21}DMIN/x",
            ],
        },
        Tricks {
            option: NON_ASCII,
            strict: NOBODY,
            literal: ADMIN,
            requests: &["GET /admin/users/\u{ff41}"],
        },
        Tricks {
            option: NON_ASCII,
            strict: NOBODY,
            literal: ADMIN_BASIC_LIMITED,
            requests: &["GET /agents/caf%C3%A9", "GET /persona/\u{e9}"],
        },
        // Trailing dots stripped (Windows file names, IIS).
        Tricks {
            option: TRAILING_DOTS,
            strict: NOBODY,
            literal: ADMIN_BASIC,
            requests: &[
                "GET /admin./users",
                "GET /admin.",
                "GET /admin../x",
                "GET /manage./admin/x",
                "GET /manage/admin.../x",
                "GET /search...",
            ],
        },
        Tricks {
            option: TRAILING_DOTS,
            strict: NOBODY,
            literal: ADMIN,
            requests: &["GET /admin/x."],
        },
        Tricks {
            option: TRAILING_DOTS,
            strict: NOBODY,
            literal: ADMIN_BASIC_LIMITED,
            requests: &["GET /agents/7./"],
        },
        // Case ignored (IIS): deny rules match whatever the case.
        Tricks {
            option: CASE,
            strict: ADMIN,
            literal: ADMIN_BASIC,
            requests: &[
                "GET /Admin/users",
                "GET /ADMIN/users",
                "GET /ADMIN",
                "PUT /aDmIn/",
                "GET /manage/Admin/x",
                "GET /Manage/ADMIN/x",
                "POST /MANAGE/admin",
            ],
        },
        // Allow rules stay case-sensitive, whatever the option: limited gets nothing.
        Tricks {
            option: CASE,
            strict: ADMIN_BASIC,
            literal: ADMIN_BASIC,
            requests: &["GET /Agents/3", "POST /Chat/send-message"],
        },
    ];

    /// Every request of [`TRICKS`]: `(method, path, its group)`.
    fn tricks() -> impl Iterator<Item = (&'static str, &'static str, &'static Tricks)> {
        TRICKS.iter().flat_map(|group| {
            group.requests.iter().map(move |request| {
                let (method, path) = request.split_once(' ').expect("METHOD /path");
                (method, path, group)
            })
        })
    }

    /// The built-in rules with `host` replaced.
    fn builtin_with_host(host: Value) -> Policy {
        let mut doc: Value = serde_json::from_str(BUILTIN_JSON).expect("default is JSON");
        doc["host"] = host;
        policy(&doc.to_string())
    }

    /// The built-in rules with the given `host` options set to true, the others absent.
    fn builtin_with(options: &[&str]) -> Policy {
        let host = options
            .iter()
            .map(|&name| (name.to_string(), Value::Bool(true)))
            .collect();
        builtin_with_host(Value::Object(host))
    }

    #[test]
    fn default_policy_denies_what_hosts_rewrite() {
        let p = Policy::builtin();
        for (method, path, group) in tricks() {
            for role in ALL_ROLES {
                let d = p.decide(role, method, path);
                let expected = group.strict.contains(&role);
                assert_eq!(d.allowed, expected, "{role} {method} {path}");
                if group.option != CASE {
                    // Refused before any rule, like every other refused path.
                    assert_eq!(d, Decision::refused(), "{role} {method} {path}");
                } else if role == Role::Basic && !d.allowed {
                    // Denied by the deny rule, matched whatever the case.
                    assert!(d.pattern.is_some(), "{role} {method} {path}: {d:?}");
                }
            }
        }
        // An empty `host`, and every option spelled out as false, are the same policy.
        let empty = builtin_with(&[]);
        let all_false = builtin_with_host(Value::Object(
            HOST_OPTIONS
                .iter()
                .map(|&name| (name.to_string(), Value::Bool(false)))
                .collect(),
        ));
        for (method, path, _) in tricks() {
            for role in ALL_ROLES {
                let d = p.decide(role, method, path);
                assert_eq!(empty.decide(role, method, path), d);
                assert_eq!(all_false.decide(role, method, path), d);
            }
        }
    }

    #[test]
    fn each_host_option_relaxes_only_its_own_refusal() {
        for option in HOST_OPTIONS {
            let p = builtin_with(&[option]);
            for (method, path, group) in tricks() {
                let expected = if group.option == option {
                    group.literal
                } else {
                    group.strict
                };
                for role in ALL_ROLES {
                    assert_eq!(
                        p.decide(role, method, path).allowed,
                        expected.contains(&role),
                        "host.{option}: {role} {method} {path}"
                    );
                }
            }
        }
        // All of them: every path is read literally; what was denied literally still is.
        let p = builtin_with(&HOST_OPTIONS);
        for (method, path, group) in tricks() {
            for role in ALL_ROLES {
                assert_eq!(
                    p.decide(role, method, path).allowed,
                    group.literal.contains(&role),
                    "all options: {role} {method} {path}"
                );
            }
        }
        for (role, method, path) in [
            (Role::Basic, "GET", "/admin/users"),
            (Role::Basic, "GET", "/manage/admin/x"),
            (Role::Limited, "GET", "/chat/history"),
            (Role::Limited, "POST", "/chat"),
            (Role::Auditor, "GET", "/agents"),
            (Role::Basic, "GET", "/agents/%2e%2e/admin"),
        ] {
            assert!(!allowed(&p, role, method, path), "{role} {method} {path}");
        }
    }

    #[test]
    fn tricks_combined_need_every_option_they_rely_on() {
        // Two tricks in different segments: both options are needed to allow the path.
        let cases = [
            ("/Admin/x;y", [SEMICOLONS, CASE]),
            ("/ADMIN/x.", [TRAILING_DOTS, CASE]),
            ("/Admin/\u{e9}", [NON_ASCII, CASE]),
        ];
        for (path, [first, second]) in cases {
            let strict = Policy::builtin();
            let only_first = builtin_with(&[first]);
            let only_second = builtin_with(&[second]);
            let both = builtin_with(&[first, second]);
            for role in ALL_ROLES {
                assert_eq!(strict.decide(role, "GET", path), Decision::refused());
                assert_eq!(only_second.decide(role, "GET", path), Decision::refused());
            }
            // The refusal relaxed, the deny rule still matches the other case.
            let d = only_first.decide(Role::Basic, "GET", path);
            assert_eq!(d.pattern.as_deref(), Some("/admin/**"), "{path}");
            assert!(!d.allowed, "{path}");
            assert!(allowed(&only_first, Role::Admin, "GET", path), "{path}");
            assert!(allowed(&both, Role::Basic, "GET", path), "{path}");
        }
        // Full-width letters are not ASCII, so case folding never applies to them.
        let p = builtin_with(&[NON_ASCII]);
        assert!(allowed(&p, Role::Basic, "GET", "/\u{ff21}dmin/x"));
        assert!(!allowed(&p, Role::Basic, "GET", "/ADMIN/x"));
    }

    #[test]
    fn deny_rules_match_case_insensitively() {
        let rules = r#""rules": [
            {"roles": ["basic"], "methods": ["*"], "paths": ["/Reports/*/Raw/**", "/x-ID"], "effect": "deny"},
            {"roles": ["basic"], "methods": ["GET"], "paths": ["/reports/**", "/Docs/**", "/x-id"], "effect": "allow"}
        ]"#;
        let folded = policy(&format!(r#"{{"version": 1, {rules}}}"#));
        let exact = policy(&format!(
            r#"{{"version": 1, "host": {{"case_sensitive_paths": true}}, {rules}}}"#
        ));
        for path in [
            "/reports/2024/raw",
            "/reports/2024/raw/x",
            "/REPORTS/q1/RAW/x",
            "/Reports/q1/Raw",
            "/rEpOrTs/q1/rAw/",
        ] {
            assert_eq!(
                folded.decide(Role::Basic, "GET", path),
                Decision {
                    allowed: false,
                    pattern: Some("/Reports/*/Raw/**".into())
                },
                "{path}"
            );
        }
        for path in ["/x-id", "/X-ID", "/x-Id"] {
            assert_eq!(
                folded.decide(Role::Basic, "GET", path).pattern.as_deref(),
                Some("/x-ID"),
                "{path}"
            );
            assert!(!allowed(&folded, Role::Basic, "GET", path), "{path}");
        }
        // Allow rules stay case-sensitive: a case change never turns a deny into an allow.
        assert!(allowed(
            &folded,
            Role::Basic,
            "GET",
            "/reports/2024/summary"
        ));
        assert_eq!(
            folded.decide(Role::Basic, "GET", "/Reports/2024/summary"),
            Decision::refused()
        );
        assert!(allowed(&folded, Role::Basic, "GET", "/Docs/a"));
        assert_eq!(
            folded.decide(Role::Basic, "GET", "/docs/a"),
            Decision::refused()
        );
        // `case_sensitive_paths: true`: deny rules match exactly, as allow rules do.
        assert_eq!(
            exact.decide(Role::Basic, "GET", "/reports/2024/raw/x"),
            Decision {
                allowed: true,
                pattern: Some("/reports/**".into())
            }
        );
        assert_eq!(
            exact.decide(Role::Basic, "GET", "/REPORTS/2024/RAW/x"),
            Decision::refused()
        );
        assert_eq!(
            exact.decide(Role::Basic, "GET", "/Reports/2024/Raw/x"),
            Decision {
                allowed: false,
                pattern: Some("/Reports/*/Raw/**".into())
            }
        );
        assert!(allowed(&exact, Role::Basic, "GET", "/x-id"));
    }

    #[test]
    fn host_option_errors_name_their_line() {
        let doc = |options: &str| {
            format!(
                "{{\n  \"version\": 1,\n  \"host\": {{\n    \"case_sensitive_paths\": false,\n    {options}\n  }},\n  \"rules\": []\n}}\n"
            )
        };
        let cases = [
            (
                r#""strip_matrix_params": true"#,
                "unknown field `strip_matrix_params`",
            ),
            (
                r#""Semicolons_are_literal": true"#,
                "unknown field `Semicolons_are_literal`",
            ),
            (r#""semicolons_are_literal": "true""#, "expected a boolean"),
            (r#""non_ascii_paths_are_literal": 1"#, "expected a boolean"),
            (r#""trailing_dots_are_literal": null"#, "expected a boolean"),
            (
                r#""semicolons_are_literal": true, "semicolons_are_literal": true"#,
                "duplicate field",
            ),
        ];
        for (options, needle) in cases {
            let err = error(&doc(options));
            let msg = err.to_string();
            assert!(msg.contains(needle), "{needle:?} not in {msg}");
            assert_eq!(err.line(), Some(5), "{msg}");
            assert!(msg.contains("line 5,"), "{msg}");
            assert_eq!(err.rule(), None, "{msg}");
        }
        // The message for an unknown option lists every known one.
        let msg = error(&doc(r#""strip": true"#)).to_string();
        for name in HOST_OPTIONS {
            assert!(msg.contains(&format!("`{name}`")), "{name} not in {msg}");
        }
        for host in ["null", "[]", "true", "\"strict\""] {
            let err = error(&format!(
                "{{\n\"version\": 1,\n\"host\": {host},\n\"rules\": []\n}}"
            ));
            assert_eq!(err.line(), Some(3), "host {host}: {err}");
        }
        // Options belong in `host`, not at the top (in a rule: see schema_and_loader_agree).
        let err = error("{\n\"version\": 1,\n\"semicolons_are_literal\": true,\n\"rules\": []\n}");
        assert!(
            err.to_string()
                .contains("unknown field `semicolons_are_literal`"),
            "{err}"
        );
        assert_eq!(err.line(), Some(3));
        // Each option alone, and none, are accepted.
        policy(r#"{"version": 1, "host": {}, "rules": []}"#);
        for name in HOST_OPTIONS {
            policy(&format!(
                r#"{{"version": 1, "host": {{"{name}": true}}, "rules": []}}"#
            ));
        }
    }

    #[test]
    fn first_match_wins() {
        let deny_first = policy(
            r#"{"version": 1, "rules": [
                {"roles": ["basic"], "methods": ["*"], "paths": ["/a/**"], "effect": "deny"},
                {"roles": ["basic"], "methods": ["*"], "paths": ["/**"], "effect": "allow"}
            ]}"#,
        );
        let allow_first = policy(
            r#"{"version": 1, "rules": [
                {"roles": ["basic"], "methods": ["*"], "paths": ["/**"], "effect": "allow"},
                {"roles": ["basic"], "methods": ["*"], "paths": ["/a/**"], "effect": "deny"}
            ]}"#,
        );
        assert_eq!(
            deny_first.decide(Role::Basic, "GET", "/a/x"),
            Decision {
                allowed: false,
                pattern: Some("/a/**".into())
            }
        );
        assert!(allowed(&deny_first, Role::Basic, "GET", "/b"));
        assert_eq!(
            allow_first.decide(Role::Basic, "GET", "/a/x"),
            Decision {
                allowed: true,
                pattern: Some("/**".into())
            }
        );
        // Rules for other roles or methods are skipped, not decisive.
        let skip = policy(
            r#"{"version": 1, "rules": [
                {"roles": ["admin"], "methods": ["*"], "paths": ["/**"], "effect": "deny"},
                {"roles": ["basic", "limited"], "methods": ["DELETE"], "paths": ["/**"], "effect": "deny"},
                {"roles": ["basic", "limited"], "methods": ["GET", "DELETE"], "paths": ["/x", "/y/*"], "effect": "allow"}
            ]}"#,
        );
        assert!(allowed(&skip, Role::Basic, "GET", "/x"));
        assert_eq!(
            skip.decide(Role::Limited, "get", "/y/1").pattern.as_deref(),
            Some("/y/*")
        );
        assert!(!allowed(&skip, Role::Basic, "DELETE", "/x"));
        assert!(!allowed(&skip, Role::Basic, "POST", "/x"));
        assert!(!allowed(&skip, Role::Admin, "GET", "/x"));
        assert_eq!(skip.decide(Role::Auditor, "GET", "/x"), Decision::refused());
    }

    #[test]
    fn single_and_double_star() {
        let p = policy(
            r#"{"version": 1, "rules": [
                {"roles": ["basic"], "methods": ["GET"], "paths": ["/one/*"], "effect": "allow"},
                {"roles": ["basic"], "methods": ["GET"], "paths": ["/any/**"], "effect": "allow"},
                {"roles": ["basic"], "methods": ["GET"], "paths": ["/*/mid/*/end"], "effect": "allow"},
                {"roles": ["basic"], "methods": ["GET"], "paths": ["/"], "effect": "allow"},
                {"roles": ["limited"], "methods": ["GET"], "paths": ["/**"], "effect": "allow"}
            ]}"#,
        );
        let b = |path: &str| allowed(&p, Role::Basic, "GET", path);
        assert!(b("/one/x"));
        assert!(b("/one/x/"));
        assert!(!b("/one"));
        assert!(!b("/one/"));
        assert!(!b("/one/x/y"));
        assert!(b("/any"));
        assert!(b("/any/"));
        assert!(b("/any/x"));
        assert!(b("/any/x/y/z"));
        assert!(!b("/anything"));
        assert!(b("/q/mid/r/end"));
        assert!(!b("/q/mid/end"));
        assert!(!b("/q/mid/r/end/more"));
        assert!(b("/"));
        assert!(b("/?q"));
        assert!(!b("/other"));
        assert!(!b("/ONE/x"), "literals are case-sensitive");
        assert!(allowed(&p, Role::Limited, "GET", "/"));
        assert!(allowed(&p, Role::Limited, "GET", "/a/b/c"));
    }

    #[test]
    fn pattern_validation() {
        for good in [
            "/",
            "/**",
            "/a",
            "/a/*",
            "/a/**",
            "/*/b/**",
            "/.well-known/x",
            "/a..b",
        ] {
            Pattern::parse(good).expect(good);
        }
        for bad in [
            "", "a/b", "*", "/a/**/b", "/**/**", "/a//b", "/a/", "//", "/a*", "/a/b**", "/./a",
            "/a/..", "/a?b", "/a#b", "/a%2F", "/a\\b", "/a\u{1}",
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn syntax_error_names_the_line() {
        let err = error("{\n  \"version\": 1,\n  \"rules\": [ , ]\n}\n");
        assert_eq!(err.line(), Some(3));
        let text = err.to_string();
        assert!(text.contains("line 3"), "{text}");
        assert!(text.starts_with("policy: line 3, column "), "{text}");
        assert!(
            !text.contains(" at line "),
            "serde_json's own suffix is dropped: {text}"
        );
    }

    #[test]
    fn unknown_role_names_the_rule_and_line() {
        let text = r#"{
  "version": 1,
  "rules": [
    {"roles": ["admin"], "methods": ["*"], "paths": ["/**"], "effect": "allow"},
    {
      "roles": ["superuser"],
      "methods": ["*"],
      "paths": ["/**"],
      "effect": "allow"
    }
  ]
}"#;
        let err = error(text);
        let msg = err.to_string();
        assert!(msg.contains("superuser"), "{msg}");
        assert!(msg.contains("line 6"), "{msg}");
        assert!(msg.contains("rule 2, which starts on line 5"), "{msg}");
        assert_eq!(err.rule(), Some(RuleLocation { index: 2, line: 5 }));
    }

    #[test]
    fn semantic_errors_name_their_line() {
        let rule = |body: &str| format!("{{\n\"version\": 1,\n\"rules\": [\n{{\n{body}\n}}\n]\n}}");
        let cases = [
            (
                r#""roles": ["basic"], "methods": ["*"], "paths": ["/**"], "effect": "permit""#,
                "permit",
            ),
            (
                r#""roles": ["basic"], "methods": ["*"], "paths": ["/a/**/b"], "effect": "allow""#,
                "last segment",
            ),
            (
                r#""roles": ["basic"], "methods": ["*"], "paths": ["a/b"], "effect": "allow""#,
                "must start with",
            ),
            (
                r#""roles": [], "methods": ["*"], "paths": ["/**"], "effect": "allow""#,
                "at least one role",
            ),
            (
                r#""roles": ["basic"], "methods": [], "paths": ["/**"], "effect": "allow""#,
                "at least one method",
            ),
            (
                r#""roles": ["basic"], "methods": ["*"], "paths": [], "effect": "allow""#,
                "at least one path pattern",
            ),
            (
                r#""roles": ["basic"], "methods": ["get"], "paths": ["/**"], "effect": "allow""#,
                "invalid method",
            ),
            (
                r#""roles": ["basic"], "methods": ["*"], "paths": ["/**"], "effect": "allow", "extra": 1"#,
                "unknown field `extra`",
            ),
            (
                r#""roles": ["basic"], "methods": ["*"], "paths": ["/**"]"#,
                "missing field `effect`",
            ),
        ];
        for (body, needle) in cases {
            let err = error(&rule(body));
            let msg = err.to_string();
            assert!(msg.contains(needle), "{needle:?} not in {msg}");
            // The offending field's line; a missing field is noticed at the closing brace.
            let line = if needle.starts_with("missing") { 6 } else { 5 };
            assert_eq!(err.line(), Some(line), "{msg}");
            assert!(msg.contains(&format!("line {line},")), "{msg}");
            assert_eq!(
                err.rule(),
                Some(RuleLocation { index: 1, line: 4 }),
                "{msg}"
            );
        }
    }

    #[test]
    fn top_level_errors() {
        let unknown = error("{\"version\": 1, \"rules\": [], \"rulez\": []}");
        assert!(
            unknown.to_string().contains("unknown field `rulez`"),
            "{unknown}"
        );
        assert_eq!(unknown.rule(), None);
        let version = error("{\n\"version\": 2,\n\"rules\": []}");
        assert!(
            version.to_string().contains("unsupported policy version 2"),
            "{version}"
        );
        assert_eq!(version.line(), Some(2));
        assert!(
            error("{\"rules\": []}")
                .to_string()
                .contains("missing field `version`")
        );
        assert!(
            error("{\"version\": 1}")
                .to_string()
                .contains("missing field `rules`")
        );
        assert!(error("").to_string().contains("line 1"));
        assert!(error("[]").line().is_some());
        // An empty rule list is allowed and denies everything.
        let empty = policy("\u{feff}{\"version\": 1, \"rules\": []}");
        assert_eq!(empty.decide(Role::Admin, "GET", "/"), Decision::refused());
        assert_eq!(
            Policy::deny_all().decide(Role::Admin, "GET", "/"),
            Decision::refused()
        );
        policy(r#"{"$schema": "x", "description": "d", "version": 1, "rules": []}"#);
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("policy.json");
        std::fs::write(&path, "{\n\"version\": 1,\n\"rules\": [\n{\"roles\": [\"root\"], \"methods\": [\"*\"], \"paths\": [\"/**\"], \"effect\": \"allow\"}\n]\n}\n")
            .expect("write");
        let msg = Policy::load(&path).expect_err("bad role").to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("line 4"), "{msg}");
        let missing = dir.path().join("missing.json");
        let msg = Policy::load(&missing).expect_err("missing").to_string();
        assert!(msg.contains("missing.json"), "{msg}");
        std::fs::write(&path, BUILTIN_JSON).expect("write");
        let loaded = Policy::load(&path).expect("default loads from a file");
        assert!(allowed(&loaded, Role::Limited, "GET", "/agents/1"));
    }

    // --- the schema -------------------------------------------------------------------

    fn schema() -> Value {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/policy.schema.json");
        let text = std::fs::read_to_string(&path).expect("schema file readable");
        serde_json::from_str(&text).expect("schema is valid JSON")
    }

    /// Names, sorted (JSON object keys come back sorted).
    fn sorted<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> Vec<String> {
        let mut names: Vec<String> = names.into_iter().map(|n| n.as_ref().to_string()).collect();
        names.sort();
        names
    }

    fn string_enum(schema: &Value, def: &str) -> Vec<String> {
        schema["$defs"][def]["enum"]
            .as_array()
            .expect("enum array")
            .iter()
            .map(|v| v.as_str().expect("enum of strings").to_string())
            .collect()
    }

    #[test]
    fn schema_is_json_and_names_the_roles() {
        let schema = schema();
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        assert_eq!(
            schema["$id"],
            "https://keyledger.dev/schemas/policy.schema.json"
        );
        assert!(schema["title"].is_string() && schema["description"].is_string());
        assert_eq!(schema["additionalProperties"], false);
        let roles: Vec<String> = ALL_ROLES.iter().map(|r| r.as_str().to_string()).collect();
        assert_eq!(string_enum(&schema, "role"), roles);
        for name in string_enum(&schema, "role") {
            Role::parse(&name).expect("schema role is a Role");
        }
        assert_eq!(string_enum(&schema, "effect"), ["allow", "deny"]);
        assert_eq!(
            schema["$defs"]["method"]["pattern"],
            "^(?:\\*|[A-Z]{1,20})$"
        );
        assert!(schema["$defs"]["pathPattern"]["pattern"].is_string());
        // `host`: an object of the loader's options, each a boolean defaulting to false.
        assert_eq!(schema["properties"]["host"]["$ref"], "#/$defs/host");
        let host = &schema["$defs"]["host"];
        assert_eq!(host["type"], "object");
        assert_eq!(host["additionalProperties"], false);
        assert!(host["description"].is_string());
        let options = host["properties"].as_object().expect("host properties");
        assert_eq!(sorted(options.keys()), sorted(HOST_OPTIONS));
        for (name, option) in options {
            assert_eq!(option["type"], "boolean", "{name}");
            assert_eq!(option["default"], false, "{name}");
            assert!(option["description"].is_string(), "{name}");
        }
    }

    /// A validator for the subset of JSON Schema the policy schema uses (everything but
    /// `pattern`, which the patterns tests cover on the Rust side).
    fn validate(root: &Value, schema: &Value, doc: &Value, at: &str, errors: &mut Vec<String>) {
        const KNOWN: [&str; 16] = [
            "$schema",
            "$id",
            "$defs",
            "$ref",
            "title",
            "description",
            "type",
            "const",
            "enum",
            "required",
            "properties",
            "additionalProperties",
            "items",
            "minItems",
            "pattern",
            "default",
        ];
        let obj = schema.as_object().expect("schema object");
        for key in obj.keys() {
            assert!(KNOWN.contains(&key.as_str()), "unsupported keyword {key}");
        }
        if let Some(reference) = obj.get("$ref").and_then(Value::as_str) {
            let name = reference.strip_prefix("#/$defs/").expect("local $ref");
            validate(root, &root["$defs"][name], doc, at, errors);
        }
        if let Some(ty) = obj.get("type").and_then(Value::as_str) {
            let ok = match ty {
                "object" => doc.is_object(),
                "array" => doc.is_array(),
                "string" => doc.is_string(),
                "integer" => doc.is_i64() || doc.is_u64(),
                "boolean" => doc.is_boolean(),
                other => panic!("unsupported type {other}"),
            };
            if !ok {
                errors.push(format!("{at}: not {ty}"));
                return;
            }
        }
        if let Some(c) = obj.get("const") {
            if c != doc {
                errors.push(format!("{at}: not {c}"));
            }
        }
        if let Some(values) = obj.get("enum").and_then(Value::as_array) {
            if !values.contains(doc) {
                errors.push(format!("{at}: {doc} not in enum"));
            }
        }
        if let Some(map) = doc.as_object() {
            for name in obj
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if !map.contains_key(name.as_str().expect("required names")) {
                    errors.push(format!("{at}: missing {name}"));
                }
            }
            let props = obj.get("properties").and_then(Value::as_object);
            for (key, value) in map {
                match props.and_then(|p| p.get(key)) {
                    Some(sub) => validate(root, sub, value, &format!("{at}.{key}"), errors),
                    None if obj.get("additionalProperties") == Some(&Value::Bool(false)) => {
                        errors.push(format!("{at}: unknown {key}"));
                    }
                    None => {}
                }
            }
        }
        if let Some(items) = doc.as_array() {
            if let Some(min) = obj.get("minItems").and_then(Value::as_u64) {
                if (items.len() as u64) < min {
                    errors.push(format!("{at}: fewer than {min} items"));
                }
            }
            if let Some(sub) = obj.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate(root, sub, item, &format!("{at}[{i}]"), errors);
                }
            }
        }
    }

    fn schema_errors(schema: &Value, doc: &str) -> Vec<String> {
        let doc: Value = serde_json::from_str(doc).expect("test document is JSON");
        let mut errors = Vec::new();
        validate(schema, schema, &doc, "$", &mut errors);
        errors
    }

    #[test]
    fn default_policy_follows_the_schema_and_the_spec() {
        let schema = schema();
        assert_eq!(schema_errors(&schema, BUILTIN_JSON), Vec::<String>::new());
        let doc: Value = serde_json::from_str(BUILTIN_JSON).expect("default is JSON");
        assert_eq!(doc["$schema"], schema["$id"]);
        // Every host option spelled out, all strict, so that operators see them.
        let host = doc["host"].as_object().expect("host");
        assert_eq!(sorted(host.keys()), sorted(HOST_OPTIONS));
        assert!(host.values().all(|v| *v == Value::Bool(false)), "{host:?}");
        let rules = doc["rules"].as_array().expect("rules");
        let summary: Vec<(Value, Value, Value, Value)> = rules
            .iter()
            .map(|r| {
                (
                    r["roles"].clone(),
                    r["methods"].clone(),
                    r["paths"].clone(),
                    r["effect"].clone(),
                )
            })
            .collect();
        let j = |s: &str| -> Value { serde_json::from_str(s).expect("literal") };
        assert_eq!(
            summary,
            vec![
                (
                    j(r#"["admin"]"#),
                    j(r#"["*"]"#),
                    j(r#"["/**"]"#),
                    j(r#""allow""#)
                ),
                (
                    j(r#"["basic"]"#),
                    j(r#"["*"]"#),
                    j(r#"["/admin/**", "/manage/admin/**"]"#),
                    j(r#""deny""#)
                ),
                (
                    j(r#"["basic"]"#),
                    j(r#"["*"]"#),
                    j(r#"["/**"]"#),
                    j(r#""allow""#)
                ),
                (
                    j(r#"["limited"]"#),
                    j(r#"["GET"]"#),
                    j(r#"["/persona/**", "/agents/**"]"#),
                    j(r#""allow""#)
                ),
                (
                    j(r#"["limited"]"#),
                    j(r#"["POST"]"#),
                    j(r#"["/chat/*/**"]"#),
                    j(r#""allow""#)
                ),
            ]
        );
    }

    #[test]
    fn schema_and_loader_agree() {
        let schema = schema();
        let rule = r#""roles": ["basic"], "methods": ["GET"], "paths": ["/x"], "effect": "allow""#;
        let accepted = [
            r#"{"version": 1, "rules": []}"#.to_string(),
            format!(
                r#"{{"$schema": "s", "description": "d", "version": 1, "rules": [{{{rule}, "description": "r"}}]}}"#
            ),
            format!(r#"{{"version": 1, "rules": [{{{rule}}}, {{{rule}}}]}}"#),
            r#"{"version": 1, "host": {}, "rules": []}"#.to_string(),
            r#"{"host": {"semicolons_are_literal": true, "non_ascii_paths_are_literal": false, "trailing_dots_are_literal": true, "case_sensitive_paths": false}, "version": 1, "rules": []}"#.to_string(),
            r#"{"version": 1, "rules": [], "host": {"case_sensitive_paths": true}}"#.to_string(),
        ];
        let rejected = [
            r#"{"rules": []}"#.to_string(),
            r#"{"version": 1}"#.to_string(),
            r#"{"version": 2, "rules": []}"#.to_string(),
            r#"{"version": "1", "rules": []}"#.to_string(),
            r#"{"version": 1, "rules": {}}"#.to_string(),
            r#"{"version": 1, "rules": [], "extra": true}"#.to_string(),
            r#"{"version": 1, "rules": [], "description": 5}"#.to_string(),
            r#"[]"#.to_string(),
            format!(r#"{{"version": 1, "rules": [{{{rule}, "extra": 1}}]}}"#),
            format!(r#"{{"version": 1, "rules": [{{{rule}, "description": []}}]}}"#),
            r#"{"version": 1, "rules": [{"roles": ["root"], "methods": ["GET"], "paths": ["/x"], "effect": "allow"}]}"#.to_string(),
            r#"{"version": 1, "rules": [{"roles": [], "methods": ["GET"], "paths": ["/x"], "effect": "allow"}]}"#.to_string(),
            r#"{"version": 1, "rules": [{"roles": ["basic"], "methods": [], "paths": ["/x"], "effect": "allow"}]}"#.to_string(),
            r#"{"version": 1, "rules": [{"roles": ["basic"], "methods": ["GET"], "paths": [], "effect": "allow"}]}"#.to_string(),
            r#"{"version": 1, "rules": [{"roles": ["basic"], "methods": ["GET"], "paths": ["/x"], "effect": "maybe"}]}"#.to_string(),
            r#"{"version": 1, "rules": [{"roles": ["basic"], "methods": ["GET"], "paths": ["/x"]}]}"#.to_string(),
            r#"{"version": 1, "rules": [{"roles": "basic", "methods": ["GET"], "paths": ["/x"], "effect": "allow"}]}"#.to_string(),
            r#"{"version": 1, "rules": [], "host": {"strip_matrix_params": true}}"#.to_string(),
            r#"{"version": 1, "rules": [], "host": {"semicolons_are_literal": "true"}}"#.to_string(),
            r#"{"version": 1, "rules": [], "host": {"case_sensitive_paths": 1}}"#.to_string(),
            r#"{"version": 1, "rules": [], "host": {"trailing_dots_are_literal": null}}"#.to_string(),
            r#"{"version": 1, "rules": [], "host": null}"#.to_string(),
            r#"{"version": 1, "rules": [], "host": []}"#.to_string(),
            r#"{"version": 1, "rules": [], "host": true}"#.to_string(),
            format!(r#"{{"version": 1, "rules": [{{{rule}, "host": {{}}}}]}}"#),
        ];
        for doc in &accepted {
            assert_eq!(schema_errors(&schema, doc), Vec::<String>::new(), "{doc}");
            policy(doc);
        }
        for doc in &rejected {
            assert!(
                !schema_errors(&schema, doc).is_empty(),
                "schema accepts {doc}"
            );
            error(doc);
        }
    }
}
