//! `keyledger tokens …`: personal access tokens, a user's through
//! `/v1/admin/users/{id}/tokens` and `/v1/admin/tokens/{id}` (`--user ID`, admins), or the
//! caller's own through `/v1/me/tokens` (`--mine`, users).

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use super::client::{Answer, Client, Listing, fetch_list};
use super::output::{self, Table};
use super::{ClientOpts, Confirm, Format, ListOpts, Result};

/// The statuses a token list can be narrowed to.
const TOKEN_STATUSES: [&str; 3] = ["active", "expired", "revoked"];

/// `keyledger tokens`.
#[derive(Args)]
pub struct TokensArgs {
    #[command(flatten)]
    client: ClientOpts,
    #[command(subcommand)]
    command: TokensCommand,
}

/// Whose tokens: a user's (admin routes) or the caller's own.
#[derive(Args, Clone, Copy)]
#[group(required = true, multiple = false)]
pub struct Owner {
    /// The tokens of this user (an admin's credential).
    #[arg(long, value_name = "ID")]
    user: Option<Uuid>,
    /// Your own tokens (/v1/me/tokens; a user's personal access token).
    #[arg(long)]
    mine: bool,
}

/// Whether a single token is reached through the caller's own routes.
#[derive(Args, Clone, Copy)]
pub struct Mine {
    /// One of your own tokens (/v1/me/tokens/ID) instead of any token (/v1/admin/tokens/ID).
    #[arg(long)]
    mine: bool,
}

/// The `tokens` subcommands.
#[derive(Subcommand)]
pub enum TokensCommand {
    /// Issue a personal access token; prints its secret once.
    Create {
        /// The token's name.
        name: String,
        #[command(flatten)]
        owner: Owner,
        /// Days until it expires, 1 to 365 (the server's default: 90).
        #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..=365))]
        expires_in_days: Option<u32>,
    },
    /// List a user's tokens, or your own: every page, or one with --limit.
    List {
        #[command(flatten)]
        owner: Owner,
        #[command(flatten)]
        list: ListOpts,
        /// Only tokens with this status.
        #[arg(long, value_parser = TOKEN_STATUSES)]
        status: Option<String>,
    },
    /// Show one token.
    Show {
        /// The token's id.
        id: Uuid,
        #[command(flatten)]
        mine: Mine,
    },
    /// Revoke a token for good (asks first; --yes when not on a terminal).
    Revoke {
        /// The token's id.
        id: Uuid,
        #[command(flatten)]
        mine: Mine,
        #[command(flatten)]
        confirm: Confirm,
    },
}

/// Runs a `tokens` subcommand.
pub async fn run(args: TokensArgs) -> Result<()> {
    let format = args.client.format;
    let ask = match &args.command {
        TokensCommand::Revoke { id, confirm, .. } => {
            super::must_ask(*confirm, &format!("revoke token {id}"))?
        }
        _ => false,
    };
    let client = Client::new(&args.client)?;
    match args.command {
        TokensCommand::Create {
            name,
            owner,
            expires_in_days,
        } => {
            let mut body = json!({"name": name});
            if let Some(days) = expires_in_days {
                body["expires_in_days"] = json!(days);
            }
            let answer = client
                .send(Method::POST, &collection(owner), &[], Some(&body), None)
                .await?;
            match format {
                Format::Json => output::json(&answer.body)?,
                Format::Table => {
                    let created = answer.json()?;
                    let mut fields = rows(&created["token"]);
                    fields.push(("secret", output::text(&created["secret"])));
                    output::print(&output::fields(&fields))?;
                }
            }
            output::warn_shown_once("token");
            Ok(())
        }
        TokensCommand::List {
            owner,
            list,
            status,
        } => {
            let path = collection(owner);
            let listing = Listing {
                path: &path,
                items: "tokens",
                cursor: "next_after",
                param: "after",
            };
            let body = fetch_list(&client, &listing, &list, status.as_deref()).await?;
            output::list(format, &body, "tokens", table)
        }
        TokensCommand::Show { id, mine } => one(format, &client.get(&item(id, mine), &[]).await?),
        TokensCommand::Revoke { id, mine, .. } => {
            if ask {
                let token = client.get(&item(id, mine), &[]).await?.json()?;
                let name = output::text(&token["token"]["name"]);
                super::ask(&format!("Revoke token {id} ({name}) for good"))?;
            }
            client
                .send(Method::DELETE, &item(id, mine), &[], None, None)
                .await?;
            if format == Format::Table {
                output::print(&format!("revoked token {id}"))?;
            }
            Ok(())
        }
    }
}

fn collection(owner: Owner) -> String {
    match owner.user {
        Some(user) if !owner.mine => format!("/v1/admin/users/{user}/tokens"),
        _ => "/v1/me/tokens".to_string(),
    }
}

fn item(id: Uuid, mine: Mine) -> String {
    if mine.mine {
        format!("/v1/me/tokens/{id}")
    } else {
        format!("/v1/admin/tokens/{id}")
    }
}

/// Prints a `{"token": …}` answer.
fn one(format: Format, answer: &Answer) -> Result<()> {
    match format {
        Format::Json => output::json(&answer.body),
        Format::Table => output::print(&details(&answer.json()?["token"])),
    }
}

/// One token as a field list.
fn details(token: &Value) -> String {
    output::fields(&rows(token))
}

/// The fields shown for one token.
fn rows(token: &Value) -> Vec<(&'static str, String)> {
    vec![
        ("id", output::text(&token["id"])),
        ("user", output::text(&token["user_id"])),
        ("name", output::text(&token["name"])),
        ("status", output::text(&token["status"])),
        ("token", output::text(&token["display"])),
        ("created", output::time_or(&token["created_at"], "-")),
        ("created by", output::text(&token["created_by"])),
        ("expires", output::time_or(&token["expires_at"], "never")),
        (
            "last used",
            output::time_or(&token["last_used_at"], "never"),
        ),
        ("version", output::text(&token["version"])),
    ]
}

/// Tokens as a table.
fn table(tokens: &[Value]) -> String {
    let mut table = Table::new(&[
        "ID",
        "USER",
        "NAME",
        "STATUS",
        "TOKEN",
        "EXPIRES",
        "LAST USED",
    ]);
    for token in tokens {
        table.row(vec![
            output::text(&token["id"]),
            output::text(&token["user_id"]),
            output::text(&token["name"]),
            output::text(&token["status"]),
            output::text(&token["display"]),
            output::time_or(&token["expires_at"], "never"),
            output::time_or(&token["last_used_at"], "never"),
        ]);
    }
    table.render()
}
