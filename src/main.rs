//! The `keyledger` command: parse the command line, set up logging, run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use keyledger::domain::SystemClock;
use keyledger::http::{AppState, ServerConfig};
use keyledger::policy::Policy;
use keyledger::server;
use keyledger::store::SledStore;

#[derive(Parser)]
#[command(
    name = "keyledger",
    version,
    about = "Event-sourced, signed ledger for API keys and service accounts"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the HTTP API (creates the log and a bootstrap admin key on an empty data dir).
    Serve {
        /// Where the log and the signing key live.
        #[arg(long, env = "KEYLEDGER_DATA_DIR", default_value = "./keyledger-data")]
        data_dir: PathBuf,
        /// Address to listen on.
        #[arg(long, env = "KEYLEDGER_LISTEN", default_value = "127.0.0.1:8080")]
        listen: String,
        /// Host-application policy file (JSON; see schemas/policy.schema.json).
        #[arg(long, env = "KEYLEDGER_POLICY")]
        policy: Option<PathBuf>,
        /// Checkpoint origin of a new log (fixed once the log exists).
        #[arg(long, env = "KEYLEDGER_ORIGIN")]
        origin: Option<String>,
        /// Length of an activity window, in seconds.
        #[arg(long, env = "KEYLEDGER_ACTIVITY_WINDOW", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        activity_window: u64,
    },
    /// Verify an exported log offline: signatures, seq chain, stream versions, Merkle root.
    Verify {
        /// The export (NDJSON, one entry per line, starting at seq 0).
        file: PathBuf,
        /// The verifier key, `<origin>+<keyid>+<base64>` (from /v1/audit/public-key).
        #[arg(long)]
        vkey: String,
        /// A checkpoint note (from /v1/audit/checkpoint) the file must match.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
    },
    /// Check a stopped server's data dir: every entry, signature, version and the Merkle root.
    Check {
        /// The data dir to check.
        #[arg(long, env = "KEYLEDGER_DATA_DIR", default_value = "./keyledger-data")]
        data_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Serve {
            data_dir,
            listen,
            policy,
            origin,
            activity_window,
        } => run_serve(data_dir, listen, policy, origin, activity_window),
        Cmd::Verify {
            file,
            vkey,
            checkpoint,
        } => run_verify(file, vkey, checkpoint),
        Cmd::Check { data_dir } => run_check(data_dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyledger: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_serve(
    data_dir: PathBuf,
    listen: String,
    policy: Option<PathBuf>,
    origin: Option<String>,
    activity_window: u64,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let policy = match &policy {
        Some(path) => Policy::load(path)?,
        None => Policy::builtin(),
    };
    runtime.block_on(async move {
        let shutdown = server::shutdown_signal().context("installing signal handlers")?;
        let clock = Arc::new(SystemClock);
        let (ledger, bootstrap) = server::open_ledger(&data_dir, origin.as_deref(), clock).await?;
        if let Some(bootstrap) = &bootstrap {
            println!("{}", bootstrap_banner(bootstrap));
        }
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        let addr = listener.local_addr().context("reading the listening address")?;
        println!("keyledger listening on http://{addr} (data dir {})", data_dir.display());
        tracing::info!(%addr, origin = ledger.origin(), size = ledger.checkpoint().checkpoint.size, "serving");
        let config = ServerConfig {
            activity_window_secs: activity_window,
        };
        let state = AppState::new(ledger, config, policy);
        server::serve(listener, state, shutdown).await
    })
}

fn bootstrap_banner(bootstrap: &server::Bootstrap) -> String {
    let rule = "=".repeat(78);
    format!(
        "{rule}\n  keyledger created a new log and a bootstrap ADMIN API key.\n  \
         This secret is shown ONCE and is not stored anywhere. Copy it now.\n\n  \
         key id: {}\n  secret: {}\n{rule}",
        bootstrap.key_id,
        bootstrap.secret.expose()
    )
}

fn run_check(data_dir: PathBuf) -> anyhow::Result<()> {
    let key_path = data_dir.join(keyledger::ledger::KEY_FILE);
    if !key_path.exists() {
        anyhow::bail!(
            "{} has no signing key: not a keyledger data dir",
            data_dir.display()
        );
    }
    let (signer, _) = keyledger::ledger::load_or_create(&data_dir, None, server::DEFAULT_ORIGIN)?;
    let log_dir = data_dir.join(server::LOG_DIR);
    let store = SledStore::open(&log_dir).with_context(|| {
        format!(
            "opening {} (is a server still running on it?)",
            log_dir.display()
        )
    })?;
    let report = keyledger::ledger::check(&store, &signer)?;
    println!(
        "ok: {} entries, every signature, version and the Merkle root check",
        report.size
    );
    print!("{}", report.checkpoint);
    Ok(())
}

fn run_verify(file: PathBuf, vkey: String, checkpoint: Option<PathBuf>) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let note = checkpoint
        .as_ref()
        .map(|p| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display())))
        .transpose()?;
    let handle =
        std::fs::File::open(&file).with_context(|| format!("opening {}", file.display()))?;
    let total = handle.metadata().map(|m| m.len()).unwrap_or(0).max(1);
    let show_progress = std::io::stderr().is_terminal() && total > 1 << 20;
    let mut shown = 0;
    let progress = |read: u64| {
        let percent = read * 100 / total;
        if show_progress && percent > shown {
            shown = percent;
            let bar = "#".repeat((percent / 2) as usize);
            eprint!("\rverifying [{bar:<50}] {percent:>3}%");
        }
    };
    let reader = std::io::BufReader::with_capacity(1 << 20, handle);
    let outcome = keyledger::offline::verify_export(reader, &vkey, note.as_deref(), progress);
    if show_progress {
        eprintln!();
    }
    let report = outcome.map_err(|e| anyhow::anyhow!("{} does not verify: {e}", file.display()))?;
    match &report.checkpoint {
        Some(cp) => {
            println!(
                "ok: {} entries verified; signatures, seq chain and stream versions hold, and the Merkle root of the first {} matches the checkpoint",
                report.entries, cp.size
            );
            if report.uncovered > 0 {
                println!(
                    "note: {} entries past the checkpoint (seq {}..{}) verified but not yet covered by it",
                    report.uncovered,
                    cp.size,
                    report.entries - 1
                );
            }
        }
        None => println!(
            "ok: {} entries verified; signatures, seq chain and stream versions hold (no checkpoint given, so the Merkle root was not compared)",
            report.entries
        ),
    }
    Ok(())
}
