//! `keyledger users …`: users through `/v1/admin/users` (register, list, show, set-role,
//! deactivate).

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use super::client::{Answer, Client, Listing, fetch_list};
use super::output::{self, Table};
use super::{ClientOpts, Confirm, Format, IfMatch, ListOpts, Result};

/// The roles a user takes.
const USER_ROLES: [&str; 4] = ["admin", "basic", "limited", "auditor"];
/// The statuses a user list can be narrowed to.
const USER_STATUSES: [&str; 2] = ["active", "deactivated"];
/// The collection route.
const USERS: &str = "/v1/admin/users";

/// `keyledger users`.
#[derive(Args)]
pub struct UsersArgs {
    #[command(flatten)]
    client: ClientOpts,
    #[command(subcommand)]
    command: UsersCommand,
}

/// The `users` subcommands.
#[derive(Subcommand)]
pub enum UsersCommand {
    /// Register a user (a person, who then holds personal access tokens).
    Register {
        /// The user's e-mail address.
        email: String,
        /// admin, basic, limited or auditor.
        #[arg(long, value_parser = USER_ROLES)]
        role: String,
    },
    /// List users: every page, or one with --limit (--q searches e-mail addresses).
    List {
        #[command(flatten)]
        list: ListOpts,
        /// Only users with this status.
        #[arg(long, value_parser = USER_STATUSES)]
        status: Option<String>,
    },
    /// Show one user (deactivated ones included).
    Show {
        /// The user's id.
        id: Uuid,
    },
    /// Change a user's role.
    SetRole {
        /// The user's id.
        id: Uuid,
        /// admin, basic, limited or auditor.
        #[arg(value_parser = USER_ROLES)]
        role: String,
        #[command(flatten)]
        if_match: IfMatch,
    },
    /// Deactivate a user for good, which revokes their tokens (asks first; --yes when not
    /// on a terminal).
    Deactivate {
        /// The user's id.
        id: Uuid,
        #[command(flatten)]
        if_match: IfMatch,
        #[command(flatten)]
        confirm: Confirm,
    },
}

/// Runs a `users` subcommand.
pub async fn run(args: UsersArgs) -> Result<()> {
    let format = args.client.format;
    let ask = match &args.command {
        UsersCommand::Deactivate { id, confirm, .. } => {
            super::must_ask(*confirm, &format!("deactivate user {id}"))?
        }
        _ => false,
    };
    let client = Client::new(&args.client)?;
    match args.command {
        UsersCommand::Register { email, role } => {
            let body = json!({"email": email, "role": role});
            let answer = client
                .send(Method::POST, USERS, &[], Some(&body), None)
                .await?;
            one(format, &answer)
        }
        UsersCommand::List { list, status } => {
            let listing = Listing {
                path: USERS,
                items: "users",
                cursor: "next_after",
                param: "after",
            };
            let body = fetch_list(&client, &listing, &list, status.as_deref()).await?;
            output::list(format, &body, "users", table)
        }
        UsersCommand::Show { id } => one(format, &client.get(&path(id), &[]).await?),
        UsersCommand::SetRole { id, role, if_match } => {
            let answer = client
                .send(
                    Method::PATCH,
                    &path(id),
                    &[],
                    Some(&json!({"role": role})),
                    if_match.if_match.as_deref(),
                )
                .await?;
            one(format, &answer)
        }
        UsersCommand::Deactivate { id, if_match, .. } => {
            if ask {
                let user = client.get(&path(id), &[]).await?.json()?;
                let email = output::text(&user["user"]["email"]);
                super::ask(&format!(
                    "Deactivate user {id} ({email}) for good, revoking their tokens"
                ))?;
            }
            client
                .send(
                    Method::DELETE,
                    &path(id),
                    &[],
                    None,
                    if_match.if_match.as_deref(),
                )
                .await?;
            if format == Format::Table {
                output::print(&format!("deactivated user {id}"))?;
            }
            Ok(())
        }
    }
}

fn path(id: Uuid) -> String {
    format!("{USERS}/{id}")
}

/// Prints a `{"user": …}` answer.
fn one(format: Format, answer: &Answer) -> Result<()> {
    match format {
        Format::Json => output::json(&answer.body),
        Format::Table => {
            let user = &answer.json()?["user"];
            output::print(&output::fields(&[
                ("id", output::text(&user["id"])),
                ("email", output::text(&user["email"])),
                ("role", output::text(&user["role"])),
                ("status", output::text(&user["status"])),
                ("created", output::time_or(&user["created_at"], "-")),
                ("created by", output::text(&user["created_by"])),
                ("last used", output::time_or(&user["last_used_at"], "never")),
                ("version", output::text(&user["version"])),
            ]))
        }
    }
}

/// Users as a table.
fn table(users: &[Value]) -> String {
    let mut table = Table::new(&["ID", "EMAIL", "ROLE", "STATUS", "CREATED", "LAST USED"]);
    for user in users {
        table.row(vec![
            output::text(&user["id"]),
            output::text(&user["email"]),
            output::text(&user["role"]),
            output::text(&user["status"]),
            output::time_or(&user["created_at"], "-"),
            output::time_or(&user["last_used_at"], "never"),
        ]);
    }
    table.render()
}
