//! The `keyledger` command: parse the command line, set up logging, run.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use keyledger::domain::SystemClock;
use keyledger::http::client_addr::TrustedProxies;
use keyledger::http::{AppState, HttpLimits, ServerConfig};
use keyledger::policy::Policy;
use keyledger::server;

#[derive(Parser)]
#[command(
    name = "keyledger",
    version,
    about = "Event-sourced, signed ledger for API keys and service accounts",
    after_help = keyledger::cli::EXIT_CODES
)]
struct Cli {
    /// Log format: `json` (one object per line), `text`, or `auto` (text on a terminal,
    /// JSON otherwise). Logs go to standard error.
    #[arg(long, env = "KEYLEDGER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Auto,
    Json,
    Text,
}

/// Where a node's log, key and caches are.
#[derive(clap::Args, Clone)]
struct NodeArgs {
    /// The data dir: the log and the signing key on the default store; node-local caches
    /// (the projection snapshot) always.
    #[arg(long, env = "KEYLEDGER_DATA_DIR", default_value = "./keyledger-data")]
    data_dir: PathBuf,
    /// Where the log lives: a PostgreSQL URI shared by several nodes
    /// (`postgres://user@host:port/db`, several hosts and `target_session_attrs=read-write`
    /// accepted); without it, sled in the data dir.
    #[arg(long, env = "KEYLEDGER_STORE")]
    store: Option<String>,
    /// The signing key file (default `<data dir>/signing.key`).
    #[arg(long, env = "KEYLEDGER_SIGNING_KEY")]
    signing_key: Option<PathBuf>,
    /// On a shared store, seconds a node may go without confirming it has applied
    /// everything committed before it answers 503 instead.
    #[arg(long, env = "KEYLEDGER_MAX_STALENESS", default_value_t = 2.0, value_parser = parse_staleness)]
    max_staleness: f64,
}

impl NodeArgs {
    fn config(&self, origin: Option<String>) -> anyhow::Result<server::NodeConfig> {
        Ok(server::NodeConfig {
            data_dir: self.data_dir.clone(),
            store: match &self.store {
                Some(raw) => server::StoreChoice::parse(raw)?,
                None => server::StoreChoice::Sled,
            },
            signing_key: self.signing_key.clone(),
            origin,
            max_staleness: Duration::from_secs_f64(self.max_staleness),
        })
    }
}

fn parse_staleness(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(v) if (0.05..=600.0).contains(&v) => Ok(v),
        _ => Err("a number of seconds between 0.05 and 600".into()),
    }
}

#[derive(clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    node: NodeArgs,
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
    /// Seconds to keep serving after SIGTERM with /readyz at 503, so load balancers drain
    /// (a second signal ends it).
    #[arg(long, env = "KEYLEDGER_SHUTDOWN_GRACE", default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=3600))]
    shutdown_grace: u64,
    /// Seconds a client has to send a complete request head (also the keep-alive idle limit).
    #[arg(long, env = "KEYLEDGER_HEADER_READ_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    header_read_timeout: u64,
    /// Seconds a client has to send a request body.
    #[arg(long, env = "KEYLEDGER_BODY_READ_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    body_read_timeout: u64,
    /// Seconds from a request's head to its response's head before it is answered 503.
    #[arg(long, env = "KEYLEDGER_REQUEST_DEADLINE", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    request_deadline: u64,
    /// A proxy or host application (CIDR or address) whose X-Forwarded-For, and whose
    /// /v1/verify client_ip, names the client; repeat, or separate with commas. Default:
    /// none, so every client is the address it connects from.
    #[arg(
        long = "trusted-proxy",
        env = "KEYLEDGER_TRUSTED_PROXY",
        value_delimiter = ','
    )]
    trusted_proxies: Vec<String>,
    /// A request header the forward-auth endpoints also read the credential from, such as
    /// X-API-Key (Authorization: Bearer is always read).
    #[arg(long, env = "KEYLEDGER_API_KEY_HEADER")]
    api_key_header: Option<String>,
    /// Failed authentications (unknown or malformed credentials) allowed per client address
    /// and minute before it gets 429 (0: no limit).
    #[arg(long, env = "KEYLEDGER_AUTH_FAILURE_LIMIT", default_value_t = 30, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    auth_failure_limit: u32,
    /// Connections served at once; one more is answered 503 and closed.
    #[arg(long, env = "KEYLEDGER_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections: u64,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the HTTP API (creates the log and a bootstrap admin key on an empty data dir).
    Serve(ServeArgs),
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
    /// Check a log completely (a stopped server's data dir, or a shared store): every
    /// entry, signature, version, Merkle node and the root.
    Check {
        #[command(flatten)]
        node: NodeArgs,
        /// Check against this verifier key instead of the signing key file's public half.
        #[arg(long)]
        vkey: Option<String>,
    },
    /// Break glass: append a signed `system` event creating a new admin API key and print
    /// its secret once (on sled the server must be stopped).
    RecoverAdmin {
        #[command(flatten)]
        node: NodeArgs,
        /// Name of the new key (default `recovery-admin-<UTC time>`).
        #[arg(long)]
        name: Option<String>,
    },
    /// The admin CLI: clients of a running server's HTTP API.
    #[command(flatten)]
    Client(keyledger::cli::ClientCommand),
}

fn main() -> ExitCode {
    // Whatever keyledger (or sled under it) creates is private to its user: the log holds
    // names, emails and secret hashes; even `check` makes sled write its files.
    private_umask();
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Cmd::Serve(args) => run_serve(args),
        Cmd::Verify {
            file,
            vkey,
            checkpoint,
        } => run_verify(file, vkey, checkpoint),
        Cmd::Check { node, vkey } => run_check(node, vkey),
        Cmd::RecoverAdmin { node, name } => run_recover_admin(node, name),
        Cmd::Client(command) => return keyledger::cli::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyledger: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to standard error, filtered by `RUST_LOG` (default `info`); colours only on a
/// terminal.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let terminal = std::io::stderr().is_terminal();
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !terminal,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init();
    } else {
        builder.with_ansi(terminal).init();
    }
}

/// Files and directories keyledger creates are private to its user (0600 and 0700): the
/// log holds names, emails and secret hashes, and sled creates files as the umask says.
fn private_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    // Everything that can be refused is checked before anything is created, so a failed
    // start leaves the data dir untouched (and a bootstrap secret is never printed by a
    // start that then fails).
    let policy = match &args.policy {
        Some(path) => Policy::load(path)?,
        None => Policy::builtin(),
    };
    let trusted_proxies = TrustedProxies::parse(&args.trusted_proxies)
        .map_err(|e| anyhow::anyhow!("--trusted-proxy: {e}"))?;
    let api_key_header = args
        .api_key_header
        .as_deref()
        .map(|name| match axum::http::HeaderName::try_from(name.trim()) {
            Ok(header) if header == axum::http::header::AUTHORIZATION => Err(anyhow::anyhow!(
                "--api-key-header: Authorization: Bearer is always read; name another header"
            )),
            Ok(header) => Ok(header),
            Err(_) => Err(anyhow::anyhow!(
                "--api-key-header {name:?} is not a header name"
            )),
        })
        .transpose()?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let shutdown = server::Shutdown::on_signals().context("installing signal handlers")?;
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let addr = listener.local_addr().context("reading the listening address")?;
        let clock = Arc::new(SystemClock);
        let config = args.node.config(args.origin.clone())?;
        let (ledger, bootstrap) = server::open_node(&config, clock).await?;
        if let Some(bootstrap) = &bootstrap {
            println!("{}", banner("a new log and a bootstrap", bootstrap));
        }
        println!(
            "keyledger listening on http://{addr} (data dir {}, {})",
            args.node.data_dir.display(),
            ledger.store().describe()
        );
        tracing::info!(%addr, origin = ledger.origin(), size = ledger.checkpoint().checkpoint.size, "serving");
        let config = ServerConfig {
            activity_window_secs: args.activity_window,
            http: HttpLimits {
                header_read_timeout: Duration::from_secs(args.header_read_timeout),
                body_read_timeout: Duration::from_secs(args.body_read_timeout),
                request_deadline: Duration::from_secs(args.request_deadline),
                max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
            },
            shutdown_grace: Duration::from_secs(args.shutdown_grace),
            trusted_proxies,
            api_key_header,
            auth_failures_per_minute: args.auth_failure_limit,
        };
        let state = AppState::new(ledger, config, policy);
        server::serve(listener, state, shutdown).await
    })
}

fn banner(what: &str, key: &server::Bootstrap) -> String {
    let rule = "=".repeat(78);
    format!(
        "{rule}\n  keyledger created {what} ADMIN API key.\n  \
         This secret is shown ONCE and is not stored anywhere. Copy it now.\n\n  \
         key id: {}\n  secret: {}\n{rule}",
        key.key_id,
        key.secret.expose()
    )
}

fn run_recover_admin(node: NodeArgs, name: Option<String>) -> anyhow::Result<()> {
    let config = node.config(None)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let key = runtime.block_on(server::recover_admin(
        &config,
        name.as_deref(),
        Arc::new(SystemClock),
    ))?;
    eprintln!("warning: the secret below is shown once; store it, then start the server");
    println!("{}", banner("a recovery", &key));
    Ok(())
}

fn run_check(node: NodeArgs, vkey: Option<String>) -> anyhow::Result<()> {
    let config = node.config(None)?;
    let verifier = server::check_verifier(&config, vkey.as_deref())?;
    let report = server::check_log(&config, &verifier)?;
    println!(
        "ok: {} entries, every signature, version, Merkle node and the root check",
        report.size
    );
    print!("{}", report.checkpoint);
    Ok(())
}

fn run_verify(file: PathBuf, vkey: String, checkpoint: Option<PathBuf>) -> anyhow::Result<()> {
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
