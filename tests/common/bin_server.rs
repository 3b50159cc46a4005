//! A harness for the real `keyledger serve` binary as a child process, shared by the `api`
//! and `ledger` test binaries (each includes this file with `#[path]`).
//!
//! The child gets no `KEYLEDGER_*` variable from the test's environment (settings come from
//! the command line only), its stdout is read line by line on a thread until the
//! `listening on http://ADDR` line, its stderr goes to a file, and it is killed when the
//! [`BinServer`] is dropped, so a failing test leaves no process behind.

// Each test binary compiles its own copy of this module and uses a different subset of it
// (e.g. only `api` starts with extra arguments or SIGKILLs, only `ledger` names its stderr
// file); what one of them leaves unused must not fail `-D warnings`.
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// `keyledger serve --data-dir <data_dir> --listen 127.0.0.1:0 --shutdown-grace 0`, with
/// every `KEYLEDGER_*` variable removed; the caller adds arguments, environment and stdio.
/// No drain period: no load balancer stands in front of a test server.
pub fn serve_command(data_dir: &Path) -> Process {
    serve_command_with(data_dir, &[])
}

/// Like [`serve_command`] with `extra` arguments after the defaults, where a `--listen` or
/// `--shutdown-grace` in `extra` replaces the default one (clap refuses a flag given twice,
/// so the default is left out rather than overridden).
pub fn serve_command_with(data_dir: &Path, extra: &[&str]) -> Process {
    let mut command = Process::new(env!("CARGO_BIN_EXE_keyledger"));
    // Settings come from the command line only.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("KEYLEDGER_") {
            command.env_remove(key);
        }
    }
    command.arg("serve").arg("--data-dir").arg(data_dir);
    for (flag, default) in [("--listen", "127.0.0.1:0"), ("--shutdown-grace", "0")] {
        let given = extra
            .iter()
            .any(|a| *a == flag || a.starts_with(&format!("{flag}=")));
        if !given {
            command.arg(flag).arg(default);
        }
    }
    command.args(extra);
    command
}

/// How to start a [`BinServer`]: `BinServer::builder(dir).args(..).start()`.
pub struct BinServerBuilder<'a> {
    data_dir: &'a Path,
    extra: &'a [&'a str],
    rust_log: &'a str,
    stderr_path: Option<PathBuf>,
}

impl<'a> BinServerBuilder<'a> {
    /// Extra arguments after the defaults; a `--listen` or `--shutdown-grace` among them
    /// replaces the default one.
    pub fn args(mut self, extra: &'a [&'a str]) -> Self {
        self.extra = extra;
        self
    }

    /// The child's `RUST_LOG` (default `warn`).
    pub fn rust_log(mut self, rust_log: &'a str) -> Self {
        self.rust_log = rust_log;
        self
    }

    /// Writes the child's stderr to `path`, which is kept after the server is dropped. By
    /// default it goes to a uniquely named file next to the data dir, removed on drop.
    pub fn stderr_file(mut self, path: PathBuf) -> Self {
        self.stderr_path = Some(path);
        self
    }

    /// Starts the server and waits for its listening line. `Err` (with stdout and stderr)
    /// when it does not start.
    pub fn start(self) -> Result<BinServer, String> {
        let (stderr_path, remove_stderr) = match self.stderr_path {
            Some(path) => (path, false),
            None => {
                let path = self.data_dir.with_extension(format!(
                    "stderr.{}",
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_nanos())
                        .unwrap_or(0)
                ));
                (path, true)
            }
        };
        let stderr = File::create(&stderr_path).expect("create stderr file");
        let mut child = serve_command_with(self.data_dir, self.extra)
            .env("RUST_LOG", self.rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn keyledger serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = BinServer {
            child,
            addr: String::new(),
            secret: None,
            banner: Vec::new(),
            stderr_path,
            remove_stderr,
            lines: rx,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match server.lines.recv_timeout(left) {
                Ok(line) => {
                    if server.secret.is_none() {
                        if let Some(secret) = line.trim_start().strip_prefix("secret:") {
                            server.secret = Some(secret.trim().to_string());
                        }
                    }
                    let listening = line
                        .split_once("listening on http://")
                        .map(|(_, rest)| rest.split_whitespace().next().unwrap_or("").to_string());
                    server.banner.push(line);
                    if let Some(addr) = listening {
                        server.addr = addr;
                        return Ok(server);
                    }
                }
                Err(e) => {
                    // Give a refusing process a moment to finish writing its error.
                    std::thread::sleep(Duration::from_millis(100));
                    let status = server.child.try_wait().ok().flatten();
                    return Err(format!(
                        "keyledger serve did not start: no `listening on` line ({e:?}, exit \
                         {status:?}); stdout: {:?}; stderr: {}",
                        server.banner,
                        server.stderr()
                    ));
                }
            }
        }
    }
}

/// A running `keyledger serve`; killed (SIGKILL) when dropped, so a failing test leaves no
/// process behind.
pub struct BinServer {
    child: Child,
    /// `127.0.0.1:port`.
    pub addr: String,
    /// The bootstrap admin secret (the banner's `secret:` line), when this start created the
    /// log.
    pub secret: Option<String>,
    /// The stdout lines up to and including the `listening` line.
    pub banner: Vec<String>,
    stderr_path: PathBuf,
    /// Whether the stderr file is the harness's own, removed on drop.
    remove_stderr: bool,
    /// Keeps the rest of stdout drained (a closed pipe would break a later println).
    lines: mpsc::Receiver<String>,
}

impl BinServer {
    /// A builder for `keyledger serve --data-dir <data_dir> --listen 127.0.0.1:0`.
    pub fn builder(data_dir: &Path) -> BinServerBuilder<'_> {
        BinServerBuilder {
            data_dir,
            extra: &[],
            rust_log: "warn",
            stderr_path: None,
        }
    }

    /// Starts `keyledger serve --data-dir <data_dir> --listen 127.0.0.1:0 <extra...>` and
    /// waits for its listening line. `Err` (with stdout and stderr) when it does not start.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Result<BinServer, String> {
        BinServer::builder(data_dir).args(extra).start()
    }

    /// What the server wrote on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends `signal` (e.g. `-KILL`, `-TERM`) with `kill`, without waiting.
    pub fn signal(&self, signal: &str) {
        let status = Process::new("kill")
            .arg(signal)
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed");
    }

    fn wait(&mut self, why: &str) -> ExitStatus {
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for server") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not stop after {why}; stderr: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The exit status, once the process has exited within `limit`; `None` while it still
    /// runs after that.
    pub fn wait_for_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for server") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        self.signal("-KILL");
        self.wait("SIGKILL");
    }

    /// SIGTERM (a clean shutdown), and wait for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("-TERM");
        self.wait("SIGTERM")
    }
}

impl Drop for BinServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if self.remove_stderr {
            let _ = std::fs::remove_file(&self.stderr_path);
        }
    }
}

/// A client that ignores proxy settings and never hangs for long.
pub fn bin_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("build HTTP client")
}
