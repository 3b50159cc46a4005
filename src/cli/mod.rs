//! The admin CLI: `keyledger keys|users|tokens|audit|whoami`, a client of the HTTP API in
//! the same binary as the server.
//!
//! This module owns the command line of the client commands (the clap types that
//! `main.rs` flattens into its own), the options every one of them shares (address,
//! credential, output format, timeout), the exit status of a client command ([`Exit`]), and
//! the confirmation asked before destructive commands. The HTTP side is in [`client`],
//! rendering in [`output`], and each command group in its own module.

pub mod audit;
pub mod client;
pub mod keys;
pub mod output;
pub mod tokens;
pub mod users;

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

use self::client::Client;

/// The exit statuses of the client commands, as shown in `--help` (and the README).
pub const EXIT_CODES: &str = "\
Exit codes of the client commands (keys, users, tokens, audit, whoami):
  0  ok
  1  the server refused the request (409 conflict, 412 version mismatch, 422 invalid, other
     4xx), or another failure (e.g. writing the output file)
  2  usage: bad flags or arguments, no credential, a token file open to others, or a
     destructive command without confirmation (pass --yes when stdin is not a terminal)
  3  not found (404): no such key, user or token
  4  authentication or authorisation refused (401, 403), or this address locked out after
     too many failed authentications (429)
  5  server unreachable or unavailable: connection refused, timeout, 5xx (503 included)

Environment: KEYLEDGER_ADDR (--addr), KEYLEDGER_TOKEN (--token; prefer --token-file, which
must not be readable by group or others).";

/// How a client command ended: its process exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// 0: done.
    Ok = 0,
    /// 1: the server refused (409, 412, 422, other 4xx), or another failure.
    Refused = 1,
    /// 2: bad usage, a missing credential or a missing confirmation; nothing was sent.
    Usage = 2,
    /// 3: the server answered 404.
    NotFound = 3,
    /// 4: the server answered 401, 403 or 429 (the failed-authentication lock-out).
    Auth = 4,
    /// 5: the server could not be reached, timed out, or answered 5xx.
    Unavailable = 5,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// An error that decides the exit status; any other error exits [`Exit::Refused`].
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    /// The exit status it causes.
    pub exit: Exit,
    /// What to tell the user (never a secret).
    pub message: String,
}

impl CliError {
    /// An error with exit status `exit`.
    pub fn new(exit: Exit, message: impl Into<String>) -> CliError {
        CliError {
            exit,
            message: message.into(),
        }
    }

    /// A usage error (exit 2): nothing was sent to the server.
    pub fn usage(message: impl Into<String>) -> CliError {
        CliError::new(Exit::Usage, message)
    }
}

/// The result type of the client commands.
pub type Result<T> = anyhow::Result<T>;

/// The output format of the client commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people; secrets only where shown once.
    Table,
    /// The API's JSON answer, unchanged, as one document on standard output.
    Json,
}

/// The options every client command takes (before or after the subcommand).
#[derive(Args, Clone)]
pub struct ClientOpts {
    /// The server's base URL (`http://` or `https://`; a bare `host:port` means `http://`).
    #[arg(
        long,
        env = "KEYLEDGER_ADDR",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub addr: String,
    /// The secret to authenticate with (an API key or a personal access token). Prefer the
    /// environment variable or --token-file: other local users can see a command line.
    #[arg(
        long,
        env = "KEYLEDGER_TOKEN",
        hide_env_values = true,
        global = true,
        value_name = "SECRET"
    )]
    pub token: Option<String>,
    /// Read the secret from FILE (surrounding whitespace stripped). Refused when group or
    /// others have any permission on it, like ssh does. Takes precedence over --token.
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Output format: `table` for people, `json` for scripts (the API's answer unchanged).
    #[arg(long, value_enum, default_value_t = Format::Table, global = true)]
    pub format: Format,
    /// Seconds to wait for an answer (connecting included) before giving up with exit 5.
    #[arg(long, default_value_t = 30, global = true, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
}

/// The client commands, flattened into the `keyledger` command by `main.rs`.
#[derive(Subcommand)]
pub enum ClientCommand {
    /// Manage API keys on a running server: create, list, show, rename, set-role,
    /// set-expiry, regenerate, disable, enable, delete.
    #[command(after_help = EXIT_CODES)]
    Keys(keys::KeysArgs),
    /// Manage users on a running server: register, list, show, set-role, deactivate.
    #[command(after_help = EXIT_CODES)]
    Users(users::UsersArgs),
    /// Manage personal access tokens: a user's (`--user ID`, admin) or your own (`--mine`).
    #[command(after_help = EXIT_CODES)]
    Tokens(tokens::TokensArgs),
    /// Read the audit log: events, a key's history, a principal's activity, the export
    /// and the checkpoint.
    #[command(after_help = EXIT_CODES)]
    Audit(audit::AuditArgs),
    /// Show who the credential in use belongs to (GET /v1/me).
    #[command(after_help = EXIT_CODES)]
    Whoami(WhoamiArgs),
}

/// `keyledger whoami`.
#[derive(Args)]
pub struct WhoamiArgs {
    #[command(flatten)]
    client: ClientOpts,
}

/// Runs a client command and returns its exit status; errors are printed on standard
/// error as `keyledger: error: …`.
pub fn run(command: ClientCommand) -> ExitCode {
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(dispatch(command)));
    match outcome {
        Ok(()) => Exit::Ok.into(),
        Err(e) => {
            eprintln!("keyledger: error: {e:#}");
            exit_of(&e).into()
        }
    }
}

/// The exit status an error causes: its [`CliError`]'s, else [`Exit::Refused`].
pub fn exit_of(error: &anyhow::Error) -> Exit {
    error
        .chain()
        .find_map(|cause| cause.downcast_ref::<CliError>())
        .map_or(Exit::Refused, |e| e.exit)
}

async fn dispatch(command: ClientCommand) -> Result<()> {
    match command {
        ClientCommand::Keys(args) => keys::run(args).await,
        ClientCommand::Users(args) => users::run(args).await,
        ClientCommand::Tokens(args) => tokens::run(args).await,
        ClientCommand::Audit(args) => audit::run(args).await,
        ClientCommand::Whoami(args) => whoami(args).await,
    }
}

async fn whoami(args: WhoamiArgs) -> Result<()> {
    let client = Client::new(&args.client)?;
    let answer = client.get("/v1/me", &[]).await?;
    match args.client.format {
        Format::Json => output::json(&answer.body),
        Format::Table => {
            let me = answer.json()?;
            let principal = &me["principal"];
            let credential = &me["credential"];
            let name = if principal["kind"] == "user" {
                ("email", output::text(&principal["email"]))
            } else {
                ("name", output::text(&principal["name"]))
            };
            output::print(&output::fields(&[
                ("kind", output::text(&principal["kind"])),
                ("id", output::text(&principal["id"])),
                name,
                ("role", output::text(&principal["role"])),
                ("credential", output::text(&credential["kind"])),
                ("credential id", output::text(&credential["id"])),
                ("display", output::text(&credential["display"])),
                (
                    "expires",
                    output::time_or(&credential["expires_at"], "never"),
                ),
            ]))
        }
    }
}

/// Options of the commands that delete or revoke.
#[derive(Args, Clone, Copy)]
pub struct Confirm {
    /// Do it without asking (required when standard input is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// Whether a destructive action must still be confirmed by asking: not with `--yes`; yes
/// on a terminal; otherwise it is refused with [`Exit::Usage`] before anything is sent.
pub fn must_ask(confirm: Confirm, action: &str) -> Result<bool> {
    if confirm.yes {
        return Ok(false);
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::usage(format!(
            "refusing to {action} without confirmation: standard input is not a terminal; \
             pass --yes to confirm"
        ))
        .into());
    }
    Ok(true)
}

/// Asks `question` on the terminal; anything but `y` or `yes` refuses with
/// [`Exit::Usage`].
pub fn ask(question: &str) -> Result<()> {
    let mut stderr = std::io::stderr().lock();
    write!(stderr, "{question}? [y/N] ")?;
    stderr.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err(CliError::usage("not confirmed; nothing was changed").into()),
    }
}

/// Options of the commands that change an existing resource.
#[derive(Args, Clone)]
pub struct IfMatch {
    /// Only if the resource is still at this version: its ETag (`"3.9f86d081884c7d65"`),
    /// `"3"` or `3` (quotes optional), or `*`; sent as If-Match. A stale one is refused
    /// with `version_mismatch` (exit 1).
    #[arg(long, value_name = "ETAG", value_parser = parse_if_match)]
    pub if_match: Option<String>,
}

/// Normalises `--if-match`: `*`, or a version with or without its digest, quoted.
fn parse_if_match(raw: &str) -> std::result::Result<String, String> {
    let raw = raw.trim();
    if raw == "*" {
        return Ok(raw.to_string());
    }
    let inner = raw
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or(raw);
    let (version, digest) = inner.split_once('.').unwrap_or((inner, ""));
    let version_ok = !version.is_empty() && version.bytes().all(|b| b.is_ascii_digit());
    let digest_ok = !inner.contains('.')
        || (!digest.is_empty() && digest.bytes().all(|b| b.is_ascii_hexdigit()));
    if version_ok && digest_ok {
        Ok(format!("\"{inner}\""))
    } else {
        Err("an ETag (\"3.9f86d081884c7d65\"), a version (3) or *".into())
    }
}

/// The sort orders every list takes.
pub const SORTS: [&str; 6] = [
    "created",
    "-created",
    "name",
    "-name",
    "last_used",
    "-last_used",
];

/// Options of the list commands (`keys list`, `users list`, `tokens list`).
#[derive(Args, Clone)]
pub struct ListOpts {
    /// One page of at most N items (1 to 1000) instead of every page; the answer's
    /// `next_after` continues it.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
    /// Start after this id (a previous page's `next_after`).
    #[arg(long, value_name = "ID")]
    pub after: Option<uuid::Uuid>,
    /// Only items whose name (users: email) contains TEXT, compared without case.
    #[arg(long, value_name = "TEXT")]
    pub q: Option<String>,
    /// Order: created, name or last_used; prefix `-` for descending.
    #[arg(long, value_name = "ORDER", allow_hyphen_values = true,
          value_parser = clap::builder::PossibleValuesParser::new(SORTS))]
    pub sort: Option<String>,
    /// Page size used while reading every page (without --limit).
    #[arg(long, value_name = "N", default_value_t = 1000, conflicts_with = "limit",
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub page_size: u32,
}

impl ListOpts {
    /// The query parameters these options ask for (paging aside), plus `status`.
    pub fn query(&self, status: Option<&str>) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        if let Some(q) = &self.q {
            query.push(("q", q.clone()));
        }
        if let Some(sort) = &self.sort {
            query.push(("sort", sort.clone()));
        }
        if let Some(status) = status {
            query.push(("status", status.to_string()));
        }
        query
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_takes_etags_versions_and_star() {
        for (raw, sent) in [
            ("3", "\"3\""),
            ("\"3\"", "\"3\""),
            ("3.9f86d081884c7d65", "\"3.9f86d081884c7d65\""),
            ("\"12.9f86d081884c7d65\"", "\"12.9f86d081884c7d65\""),
            ("*", "*"),
        ] {
            assert_eq!(parse_if_match(raw).as_deref(), Ok(sent), "{raw}");
        }
        for raw in ["", "\"\"", "v3", "3.", "3.xyz", ".abc", "3 4", "\"3"] {
            assert!(parse_if_match(raw).is_err(), "{raw}");
        }
    }
}
