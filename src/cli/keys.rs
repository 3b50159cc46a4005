//! `keyledger keys …`: API keys through `/v1/admin/api-keys` (create, list, show, rename,
//! set-role, set-expiry, regenerate, disable, enable, delete).

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use super::client::{Answer, Client, Listing, fetch_list};
use super::output::{self, Table};
use super::{ClientOpts, Confirm, Format, IfMatch, ListOpts, Result};

/// The roles an API key takes.
const KEY_ROLES: [&str; 3] = ["admin", "basic", "limited"];
/// The statuses a key list can be narrowed to.
const KEY_STATUSES: [&str; 4] = ["active", "disabled", "expired", "deleted"];
/// The collection route.
const KEYS: &str = "/v1/admin/api-keys";

/// `keyledger keys`.
#[derive(Args)]
pub struct KeysArgs {
    #[command(flatten)]
    client: ClientOpts,
    #[command(subcommand)]
    command: KeysCommand,
}

/// The `keys` subcommands.
#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create an API key (and its service account); prints its secret once.
    Create {
        /// The key's name (unique among live keys).
        name: String,
        /// admin, basic or limited.
        #[arg(long, value_parser = KEY_ROLES)]
        role: String,
        /// When it expires (RFC 3339, e.g. 2030-01-01T00:00:00Z); default never.
        #[arg(long, value_name = "TIME")]
        expires_at: Option<String>,
    },
    /// List API keys: every page, or one with --limit.
    List {
        #[command(flatten)]
        list: ListOpts,
        /// Only keys with this status.
        #[arg(long, value_parser = KEY_STATUSES)]
        status: Option<String>,
    },
    /// Show one API key (deleted ones included).
    Show {
        /// The key's id.
        id: Uuid,
    },
    /// Rename an API key.
    Rename {
        /// The key's id.
        id: Uuid,
        /// The new name.
        name: String,
        #[command(flatten)]
        if_match: IfMatch,
    },
    /// Change an API key's role.
    SetRole {
        /// The key's id.
        id: Uuid,
        /// admin, basic or limited.
        #[arg(value_parser = KEY_ROLES)]
        role: String,
        #[command(flatten)]
        if_match: IfMatch,
    },
    /// Change when an API key expires (`never` removes the expiry).
    SetExpiry {
        /// The key's id.
        id: Uuid,
        /// An RFC 3339 time in the future (e.g. 2030-01-01T00:00:00Z), or `never`.
        when: String,
        #[command(flatten)]
        if_match: IfMatch,
    },
    /// Give an API key a new secret, printed once; the old one stops now or after
    /// --grace-seconds.
    Regenerate {
        /// The key's id.
        id: Uuid,
        /// How long the previous secret keeps working (at most 7 days); default 0.
        #[arg(long, value_name = "SECONDS",
              value_parser = clap::value_parser!(u32).range(0..=604_800))]
        grace_seconds: Option<u32>,
        #[command(flatten)]
        if_match: IfMatch,
    },
    /// Disable an API key (it is refused until enabled again).
    Disable {
        /// The key's id.
        id: Uuid,
        #[command(flatten)]
        if_match: IfMatch,
    },
    /// Enable a disabled API key.
    Enable {
        /// The key's id.
        id: Uuid,
        #[command(flatten)]
        if_match: IfMatch,
    },
    /// Delete an API key for good (asks first; --yes when not on a terminal).
    Delete {
        /// The key's id.
        id: Uuid,
        #[command(flatten)]
        if_match: IfMatch,
        #[command(flatten)]
        confirm: Confirm,
    },
}

/// Runs a `keys` subcommand.
pub async fn run(args: KeysArgs) -> Result<()> {
    let format = args.client.format;
    // A refused confirmation is decided before the credential is even read.
    let ask = match &args.command {
        KeysCommand::Delete { id, confirm, .. } => {
            super::must_ask(*confirm, &format!("delete API key {id}"))?
        }
        _ => false,
    };
    let client = Client::new(&args.client)?;
    match args.command {
        KeysCommand::Create {
            name,
            role,
            expires_at,
        } => {
            let mut body = json!({"name": name, "role": role});
            if let Some(at) = expires_at {
                body["expires_at"] = json!(at);
            }
            let answer = client
                .send(Method::POST, KEYS, &[], Some(&body), None)
                .await?;
            with_secret(format, &answer)
        }
        KeysCommand::List { list, status } => {
            let listing = Listing {
                path: KEYS,
                items: "api_keys",
                cursor: "next_after",
                param: "after",
            };
            let body = fetch_list(&client, &listing, &list, status.as_deref()).await?;
            output::list(format, &body, "api_keys", table)
        }
        KeysCommand::Show { id } => {
            let answer = client.get(&path(id, ""), &[]).await?;
            one(format, &answer)
        }
        KeysCommand::Rename { id, name, if_match } => {
            patch(&client, format, id, json!({"name": name}), &if_match).await
        }
        KeysCommand::SetRole { id, role, if_match } => {
            patch(&client, format, id, json!({"role": role}), &if_match).await
        }
        KeysCommand::SetExpiry { id, when, if_match } => {
            let at = if when.eq_ignore_ascii_case("never") {
                Value::Null
            } else {
                json!(when)
            };
            patch(&client, format, id, json!({"expires_at": at}), &if_match).await
        }
        KeysCommand::Regenerate {
            id,
            grace_seconds,
            if_match,
        } => {
            let body = match grace_seconds {
                Some(s) => json!({"grace_seconds": s}),
                None => json!({}),
            };
            let answer = client
                .send(
                    Method::POST,
                    &path(id, "/regenerate"),
                    &[],
                    Some(&body),
                    if_match.if_match.as_deref(),
                )
                .await?;
            with_secret(format, &answer)
        }
        KeysCommand::Disable { id, if_match } => {
            action(&client, format, id, "/disable", &if_match).await
        }
        KeysCommand::Enable { id, if_match } => {
            action(&client, format, id, "/enable", &if_match).await
        }
        KeysCommand::Delete { id, if_match, .. } => {
            if ask {
                let key = client.get(&path(id, ""), &[]).await?.json()?;
                let name = output::text(&key["api_key"]["name"]);
                super::ask(&format!("Delete API key {id} ({name}) for good"))?;
            }
            client
                .send(
                    Method::DELETE,
                    &path(id, ""),
                    &[],
                    None,
                    if_match.if_match.as_deref(),
                )
                .await?;
            if format == Format::Table {
                output::print(&format!("deleted API key {id}"))?;
            }
            Ok(())
        }
    }
}

fn path(id: Uuid, rest: &str) -> String {
    format!("{KEYS}/{id}{rest}")
}

async fn patch(
    client: &Client,
    format: Format,
    id: Uuid,
    body: Value,
    if_match: &IfMatch,
) -> Result<()> {
    let answer = client
        .send(
            Method::PATCH,
            &path(id, ""),
            &[],
            Some(&body),
            if_match.if_match.as_deref(),
        )
        .await?;
    one(format, &answer)
}

async fn action(
    client: &Client,
    format: Format,
    id: Uuid,
    rest: &str,
    if_match: &IfMatch,
) -> Result<()> {
    let answer = client
        .send(
            Method::POST,
            &path(id, rest),
            &[],
            None,
            if_match.if_match.as_deref(),
        )
        .await?;
    one(format, &answer)
}

/// Prints an `{"api_key": …}` answer.
fn one(format: Format, answer: &Answer) -> Result<()> {
    match format {
        Format::Json => output::json(&answer.body),
        Format::Table => output::print(&details(&answer.json()?["api_key"])),
    }
}

/// Prints an `{"api_key": …, "secret": …}` answer: the secret once, on standard output,
/// and the warning on standard error.
fn with_secret(format: Format, answer: &Answer) -> Result<()> {
    match format {
        Format::Json => output::json(&answer.body)?,
        Format::Table => {
            let created = answer.json()?;
            let mut fields = rows(&created["api_key"]);
            fields.push(("secret", output::text(&created["secret"])));
            output::print(&output::fields(&fields))?;
        }
    }
    output::warn_shown_once("API key");
    Ok(())
}

/// One key as a field list.
fn details(key: &Value) -> String {
    output::fields(&rows(key))
}

/// The fields shown for one key.
fn rows(key: &Value) -> Vec<(&'static str, String)> {
    vec![
        ("id", output::text(&key["id"])),
        ("name", output::text(&key["name"])),
        ("role", output::text(&key["role"])),
        ("status", output::text(&key["status"])),
        ("key", output::text(&key["display"])),
        ("created", output::time_or(&key["created_at"], "-")),
        ("created by", output::text(&key["created_by"])),
        ("updated", output::time_or(&key["updated_at"], "-")),
        ("expires", output::time_or(&key["expires_at"], "never")),
        ("last used", output::time_or(&key["last_used_at"], "never")),
        (
            "previous valid until",
            output::time_or(&key["previous_valid_until"], "-"),
        ),
        ("version", output::text(&key["version"])),
    ]
}

/// Keys as a table.
fn table(keys: &[Value]) -> String {
    let mut table = Table::new(&[
        "ID",
        "NAME",
        "ROLE",
        "STATUS",
        "KEY",
        "EXPIRES",
        "LAST USED",
    ]);
    for key in keys {
        table.row(vec![
            output::text(&key["id"]),
            output::text(&key["name"]),
            output::text(&key["role"]),
            output::text(&key["status"]),
            output::text(&key["display"]),
            output::time_or(&key["expires_at"], "never"),
            output::time_or(&key["last_used_at"], "never"),
        ]);
    }
    table.render()
}
