//! `keyledger audit …`: the signed log through `/v1/audit/*` (events, a key's history, a
//! principal's activity, the NDJSON export and the checkpoint).
//!
//! `audit export -o FILE` writes the export to a private temporary file next to FILE,
//! checks that every entry the server announced arrived, renames it into place, and then
//! prints the exact `keyledger verify FILE --vkey …` command that checks it offline, with
//! the verifier key fetched from `/v1/audit/public-key`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use reqwest::header;
use serde_json::{Value, json};
use uuid::Uuid;

use super::client::{Client, Listing, list_all, not_the_api};
use super::output::{self, Table};
use super::{CliError, ClientOpts, Exit, Format, Result};

/// Exports of more entries than this show progress (when standard error is a terminal).
const PROGRESS_ABOVE: u64 = 2_000;

/// `keyledger audit`.
#[derive(Args)]
pub struct AuditArgs {
    #[command(flatten)]
    client: ClientOpts,
    #[command(subcommand)]
    command: AuditCommand,
}

/// The `audit` subcommands.
#[derive(Subcommand)]
pub enum AuditCommand {
    /// Entries of the log, as signed: one page (oldest first by default), or every page
    /// with --all.
    Events {
        /// Only entries with seq > N (ascending pages continue from `next_after`).
        #[arg(long, value_name = "SEQ")]
        after: Option<u64>,
        /// Only entries with seq < N (descending pages continue from `next_before`).
        #[arg(long, value_name = "SEQ")]
        before: Option<u64>,
        /// asc (oldest first, the default) or desc (newest first).
        #[arg(long, value_parser = ["asc", "desc"])]
        order: Option<String>,
        /// Page size, 1 to 1000 (the server's default: 100).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: Option<u32>,
        /// Only entries of this event type (e.g. api_key.created).
        #[arg(long = "type", value_name = "TYPE")]
        event_type: Option<String>,
        /// Only entries of this stream (ledger, api_key/ID, user/ID, pat/ID, activity/ID).
        #[arg(long)]
        stream: Option<String>,
        /// Only entries whose actor id is this.
        #[arg(long, value_name = "ID")]
        actor: Option<String>,
        /// Only entries at or after this instant (RFC 3339).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only entries before this instant (RFC 3339).
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// Follow the cursor through every page.
        #[arg(long)]
        all: bool,
    },
    /// An API key's lifecycle entries, in order.
    History {
        /// The key's id.
        id: Uuid,
    },
    /// A service account's or user's daily activity counts.
    Activity {
        /// The service account (= API key) id or user id.
        id: Uuid,
        /// First UTC day (RFC 3339 instant).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Last UTC day (RFC 3339 instant).
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
    },
    /// Export the log as NDJSON (to standard output, or -o FILE, created mode 0600), then
    /// print the `keyledger verify` command that checks it offline.
    Export {
        /// Write to FILE (replaced only once the whole export arrived).
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
        /// Only entries with seq > N.
        #[arg(long, value_name = "SEQ")]
        after: Option<u64>,
        /// Only entries with seq <= N.
        #[arg(long, value_name = "SEQ")]
        until: Option<u64>,
    },
    /// The latest signed checkpoint note (printed as served, whatever --format says).
    Checkpoint,
}

/// Runs an `audit` subcommand.
pub async fn run(args: AuditArgs) -> Result<()> {
    let format = args.client.format;
    let client = Client::new(&args.client)?;
    match args.command {
        AuditCommand::Events {
            after,
            before,
            order,
            limit,
            event_type,
            stream,
            actor,
            since,
            until,
            all,
        } => {
            let descending = order.as_deref() == Some("desc");
            let mut query: Vec<(&'static str, String)> = Vec::new();
            for (name, value) in [
                ("order", order),
                ("type", event_type),
                ("stream", stream),
                ("actor", actor),
                ("since", since),
                ("until", until),
            ] {
                if let Some(value) = value {
                    query.push((name, value));
                }
            }
            let body = if all {
                // The pager owns the cursor of the chosen order; the other bound filters.
                let (cursor, param, start, bound) = if descending {
                    ("next_before", "before", before, ("after", after))
                } else {
                    ("next_after", "after", after, ("before", before))
                };
                if let (name, Some(value)) = bound {
                    query.push((name, value.to_string()));
                }
                let listing = Listing {
                    path: "/v1/audit/events",
                    items: "events",
                    cursor,
                    param,
                };
                let size = limit.unwrap_or(1000);
                let start = start.map(|s| s.to_string());
                list_all(&client, &listing, &query, size, start)
                    .await?
                    .into_bytes()
            } else {
                for (name, value) in [("after", after), ("before", before)] {
                    if let Some(value) = value {
                        query.push((name, value.to_string()));
                    }
                }
                if let Some(limit) = limit {
                    query.push(("limit", limit.to_string()));
                }
                client.get("/v1/audit/events", &query).await?.body.to_vec()
            };
            output::list(format, &body, "events", events_table)
        }
        AuditCommand::History { id } => {
            let answer = client
                .get(&format!("/v1/audit/api-keys/{id}/history"), &[])
                .await?;
            match format {
                Format::Json => output::json(&answer.body),
                Format::Table => {
                    let history = answer.json()?;
                    output::print(&history_table(output::items(&history, "events")))
                }
            }
        }
        AuditCommand::Activity { id, since, until } => {
            let mut query = Vec::new();
            if let Some(since) = since {
                query.push(("since", since));
            }
            if let Some(until) = until {
                query.push(("until", until));
            }
            let answer = client
                .get(&format!("/v1/audit/principals/{id}/activity"), &query)
                .await?;
            match format {
                Format::Json => output::json(&answer.body),
                Format::Table => {
                    let activity = answer.json()?;
                    let mut text = output::fields(&[
                        ("principal", output::text(&activity["principal_id"])),
                        (
                            "last used",
                            output::time_or(&activity["last_used_at"], "never"),
                        ),
                    ]);
                    text.push('\n');
                    text.push_str(&activity_table(output::items(&activity, "counts")));
                    output::print(&text)
                }
            }
        }
        AuditCommand::Export {
            output,
            after,
            until,
        } => export(&client, format, output.as_deref(), after, until).await,
        AuditCommand::Checkpoint => {
            let answer = client.get("/v1/audit/checkpoint", &[]).await?;
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&answer.body)?;
            stdout.flush()?;
            Ok(())
        }
    }
}

/// Where an export goes: standard output, or a private temporary file renamed into place
/// at the end.
enum Sink {
    Stdout(std::io::StdoutLock<'static>),
    File {
        file: std::io::BufWriter<std::fs::File>,
        partial: PathBuf,
        target: PathBuf,
    },
}

impl Sink {
    fn open(target: Option<&Path>) -> Result<Sink> {
        let Some(target) = target else {
            return Ok(Sink::Stdout(std::io::stdout().lock()));
        };
        let name = target
            .file_name()
            .ok_or_else(|| CliError::usage(format!("-o {}: not a file name", target.display())))?;
        let partial = target.with_file_name(format!(
            ".{}.partial-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&partial)
        }
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", partial.display()))?;
        Ok(Sink::File {
            file: std::io::BufWriter::with_capacity(1 << 20, file),
            partial,
            target: target.to_path_buf(),
        })
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Stdout(out) => out.write_all(bytes),
            Sink::File { file, .. } => file.write_all(bytes),
        }
    }

    /// Flushes; a file is synced, then renamed to its target.
    fn finish(self) -> Result<()> {
        match self {
            Sink::Stdout(mut out) => Ok(out.flush()?),
            Sink::File {
                file,
                partial,
                target,
            } => {
                let done = file
                    .into_inner()
                    .map_err(|e| e.into_error())
                    .and_then(|f| f.sync_all())
                    .and_then(|()| std::fs::rename(&partial, &target));
                done.map_err(|e| {
                    let _ = std::fs::remove_file(&partial);
                    anyhow::anyhow!("writing {}: {e}", target.display())
                })
            }
        }
    }

    /// Removes the temporary file of an export that failed.
    fn abandon(self) {
        if let Sink::File { file, partial, .. } = self {
            drop(file);
            let _ = std::fs::remove_file(&partial);
        }
    }
}

/// The number of entries an export announces in its `Content-Disposition` file name
/// (`keyledger-<first>-<last>.ndjson`, or `keyledger-empty.ndjson`).
fn announced_entries(response: &reqwest::Response) -> Option<(u64, Option<(u64, u64)>)> {
    let value = response
        .headers()
        .get(header::CONTENT_DISPOSITION)?
        .to_str()
        .ok()?;
    let name = value.split("filename=\"").nth(1)?.split('"').next()?;
    let range = name.strip_prefix("keyledger-")?.strip_suffix(".ndjson")?;
    if range == "empty" {
        return Some((0, None));
    }
    let (first, last) = range.split_once('-')?;
    let (first, last): (u64, u64) = (first.parse().ok()?, last.parse().ok()?);
    Some((
        last.checked_sub(first)?.checked_add(1)?,
        Some((first, last)),
    ))
}

async fn export(
    client: &Client,
    format: Format,
    target: Option<&Path>,
    after: Option<u64>,
    until: Option<u64>,
) -> Result<()> {
    let mut query = Vec::new();
    if let Some(after) = after {
        query.push(("after", after.to_string()));
    }
    if let Some(until) = until {
        query.push(("until", until.to_string()));
    }
    let mut response = client.stream("/v1/audit/export", &query).await?;
    let (expected, range) = announced_entries(&response)
        .ok_or_else(|| not_the_api("an export without its keyledger-<first>-<last> name"))?;
    let show_progress = std::io::stderr().is_terminal() && expected > PROGRESS_ABOVE;
    let mut sink = Sink::open(target)?;
    let mut lines: u64 = 0;
    let mut shown = 0;
    let received = loop {
        let chunk = match client.chunk(&mut response).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        if let Err(e) = sink.write(&chunk) {
            break Err(anyhow::anyhow!("writing the export: {e}"));
        }
        lines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
        if show_progress {
            let percent = lines.min(expected) * 100 / expected;
            if percent > shown {
                shown = percent;
                let bar = "#".repeat((percent / 2) as usize);
                eprint!("\rexporting [{bar:<50}] {percent:>3}% ({lines} of {expected} entries)");
            }
        }
    };
    if show_progress {
        eprintln!();
    }
    let complete = received.and_then(|()| {
        if lines == expected {
            Ok(())
        } else {
            Err(CliError::new(
                Exit::Unavailable,
                format!("the export ended early: {lines} of {expected} entries arrived"),
            )
            .into())
        }
    });
    if let Err(e) = complete {
        sink.abandon();
        return Err(e);
    }
    sink.finish()?;
    let key = client.get("/v1/audit/public-key", &[]).await?.json()?;
    let vkey = key["vkey"]
        .as_str()
        .ok_or_else(|| not_the_api("a public key without `vkey`"))?;
    let file = target.map_or("EXPORT.ndjson".to_string(), |p| p.display().to_string());
    // `keyledger verify` checks a log from its genesis: a tail of it cannot verify alone.
    let whole = range.is_some_and(|(first, _)| first == 0);
    let command = whole.then(|| {
        format!(
            "keyledger verify {} --vkey {}",
            output::shell_word(&file),
            output::shell_word(vkey)
        )
    });
    let follow_up = match &command {
        Some(command) => format!("verify it offline with:\n  {command}"),
        None => {
            "not verifiable on its own: `keyledger verify` needs an export from seq 0".to_string()
        }
    };
    let seqs = range.map_or("none".to_string(), |(first, last)| {
        format!("{first}..{last}")
    });
    match (target, format) {
        (None, _) => eprintln!("exported {lines} entries (seq {seqs}); {follow_up}"),
        (Some(_), Format::Json) => output::print(
            &json!({"file": file, "entries": lines, "vkey": vkey, "verify": command}).to_string(),
        )?,
        (Some(_), Format::Table) => output::print(&format!(
            "exported {lines} entries (seq {seqs}) to {file}\n{follow_up}"
        ))?,
    }
    Ok(())
}

/// A short description of what an entry changed: `from -> to` when it says, else the
/// name and role it created.
fn change(entry: &Value) -> String {
    let data = &entry["data"];
    if let (Some(from), Some(to)) = (data.get("from"), data.get("to")) {
        return format!("{} -> {}", output::text(from), output::text(to));
    }
    match (data.get("name"), data.get("role")) {
        (Some(name), Some(role)) => format!("{} ({})", output::text(name), output::text(role)),
        _ => String::new(),
    }
}

/// Log entries as a table.
fn events_table(events: &[Value]) -> String {
    let mut table = Table::new(&["SEQ", "AT", "TYPE", "STREAM", "ACTOR"]);
    for entry in events {
        table.row(vec![
            output::text(&entry["seq"]),
            output::time_or(&entry["at"], "-"),
            output::text(&entry["type"]),
            output::text(&entry["stream"]),
            output::text(&entry["actor"]["id"]),
        ]);
    }
    table.render()
}

/// A key's history as a table.
fn history_table(events: &[Value]) -> String {
    let mut table = Table::new(&["SEQ", "AT", "TYPE", "ACTOR", "CHANGE"]);
    for entry in events {
        table.row(vec![
            output::text(&entry["seq"]),
            output::time_or(&entry["at"], "-"),
            output::text(&entry["type"]),
            output::text(&entry["actor"]["id"]),
            change(entry),
        ]);
    }
    table.render()
}

/// Daily activity counts as a table.
fn activity_table(counts: &[Value]) -> String {
    let mut table = Table::new(&["DAY", "METHOD", "ROUTE", "OUTCOME", "COUNT"]);
    for count in counts {
        table.row(vec![
            output::text(&count["day"]),
            output::text(&count["method"]),
            output::text(&count["route"]),
            output::text(&count["outcome"]),
            output::text(&count["count"]),
        ]);
    }
    table.render()
}
