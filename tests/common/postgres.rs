//! A real PostgreSQL server for tests, started by the test itself: `initdb` in a temporary
//! directory, `postgres` on `127.0.0.1` and a free port, `fsync=on`, as an unprivileged
//! user (PostgreSQL refuses to run as root: when the tests run as root, the server runs as
//! the `postgres` user, or `nobody`, through `setpriv`).
//!
//! A watchdog shell process stops the server (`pg_ctl stop -m immediate`) and removes its
//! directory as soon as the test process is gone, however it ends, so a failing or killed
//! test leaves no server behind. [`Postgres`] also stops it when dropped.
//!
//! The binaries come from `KEYLEDGER_PG_BIN` if set, else the newest
//! `/usr/lib/postgresql/<version>/bin` (Debian's `postgresql` package), else `PATH`. A
//! machine without them fails the test with a message saying what to install: the tests
//! that need PostgreSQL are not skipped.

#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The directory holding `initdb`, `pg_ctl`, `postgres`.
pub fn pg_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("KEYLEDGER_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|d| {
            let version = d.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = d.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        if Path::new(dir).join("pg_ctl").exists() {
            return PathBuf::from(dir);
        }
    }
    panic!(
        "PostgreSQL's server binaries were not found (install Debian's `postgresql` package, \
         or set KEYLEDGER_PG_BIN to the directory holding initdb, pg_ctl and postgres)"
    );
}

/// The user the server runs as when the tests run as root: `(uid, gid)`.
fn run_as() -> Option<(u32, u32)> {
    if rustix::process::geteuid().as_raw() != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    for name in ["postgres", "nobody"] {
        for line in passwd.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.first() == Some(&name) && fields.len() > 3 {
                if let (Ok(uid), Ok(gid)) = (fields[2].parse(), fields[3].parse()) {
                    return Some((uid, gid));
                }
            }
        }
    }
    panic!("tests run as root, and there is no `postgres` or `nobody` user to run PostgreSQL as");
}

/// A command as the server's user.
fn as_server_user(program: &Path) -> Command {
    match run_as() {
        Some((uid, gid)) => {
            let mut command = Command::new("setpriv");
            command
                .arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups")
                .arg("--")
                .arg(program);
            command
        }
        None => Command::new(program),
    }
}

fn chown_to_server_user(path: &Path) {
    if let Some((uid, gid)) = run_as() {
        let status = Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{gid}"))
            .arg(path)
            .status()
            .expect("run chown");
        assert!(status.success(), "chown {}", path.display());
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

static DATABASES: AtomicU32 = AtomicU32::new(0);

/// A running PostgreSQL server of one test.
pub struct Postgres {
    /// Holds the data dir, the socket dir and the log.
    root: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
    /// Extra `-c name=value` settings the server is started with.
    settings: Vec<String>,
}

impl Postgres {
    /// `initdb` and start a server.
    pub fn start() -> Postgres {
        Postgres::start_with(&[])
    }

    /// `initdb` and start a server with extra `-c` settings.
    pub fn start_with(settings: &[&str]) -> Postgres {
        let server = Postgres::init(free_port(), settings);
        server.launch();
        server
    }

    /// A data dir made by `initdb` (not started).
    pub fn init(port: u16, settings: &[&str]) -> Postgres {
        let root = tempfile::Builder::new()
            .prefix("keyledger-pg")
            .tempdir()
            .expect("temp dir for PostgreSQL");
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        chown_to_server_user(root.path());
        let bin = pg_bin();
        let out = as_server_user(&bin.join("initdb"))
            .arg("-D")
            .arg(root.path().join("data"))
            .args(["-U", "keyledger", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .stdin(Stdio::null())
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let server = Postgres {
            root,
            port,
            bin,
            settings: settings.iter().map(|s| s.to_string()).collect(),
        };
        server.watchdog();
        server
    }

    /// A standby of `primary` made with `pg_basebackup -R` (streaming replication), on its
    /// own port, started. `name` is its `application_name` (for `synchronous_standby_names`).
    pub fn standby_of(primary: &Postgres, name: &str) -> Postgres {
        Postgres::standby_of_on(primary, name, free_port())
    }

    /// Like [`Postgres::standby_of`], on a given port (a failed primary's, say).
    pub fn standby_of_on(primary: &Postgres, name: &str, port: u16) -> Postgres {
        let root = tempfile::Builder::new()
            .prefix("keyledger-pg-standby")
            .tempdir()
            .expect("temp dir for PostgreSQL");
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        chown_to_server_user(root.path());
        let bin = pg_bin();
        let out = as_server_user(&bin.join("pg_basebackup"))
            .arg("-D")
            .arg(root.path().join("data"))
            .args(["-h", "127.0.0.1", "-p", &primary.port.to_string()])
            .args([
                "-U",
                "keyledger",
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ])
            .arg(format!("--dbname=application_name={name}"))
            .stdin(Stdio::null())
            .output()
            .expect("run pg_basebackup");
        assert!(
            out.status.success(),
            "pg_basebackup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let standby = Postgres {
            root,
            port,
            bin,
            settings: primary.settings.clone(),
        };
        standby.watchdog();
        standby.launch();
        standby
    }

    /// Stops the server when this test process ends, whatever the reason. The watchdog
    /// runs as this process's user (so it may watch it); only `pg_ctl` runs as the
    /// server's.
    fn watchdog(&self) {
        let as_user = match run_as() {
            Some((uid, gid)) => format!("setpriv --reuid={uid} --regid={gid} --clear-groups -- "),
            None => String::new(),
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
             {as_user}{pg_ctl} -D {data} stop -m immediate >/dev/null 2>&1; rm -rf {root}",
            pid = std::process::id(),
            pg_ctl = self.bin.join("pg_ctl").display(),
            data = self.data_dir().display(),
            root = self.root.path().display(),
        );
        // Started in the background of a shell that exits at once, so the watchdog is
        // nobody's child to wait for (init reaps it).
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("( {script} ) >/dev/null 2>&1 &"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("start the PostgreSQL watchdog");
        assert!(status.success(), "starting the PostgreSQL watchdog");
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.root.path().join("server.log")
    }

    /// What the server logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    /// Starts (or restarts) the server on its port and waits until it accepts connections.
    pub fn launch(&self) {
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on \
             -c max_connections=200 -c wal_level=replica -c max_wal_senders=10 \
             -c shared_buffers=32MB",
            self.port,
            self.root.path().display()
        );
        for setting in &self.settings {
            options.push_str(&format!(" -c {setting}"));
        }
        let out = as_server_user(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .arg("-o")
            .arg(options)
            .args(["-w", "-t", "60", "start"])
            .stdin(Stdio::null())
            .output()
            .expect("run pg_ctl start");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// Stops the server: `mode` is `smart`, `fast` or `immediate` (a crash, as far as the
    /// data on disk knows).
    pub fn stop(&self, mode: &str) {
        let _ = as_server_user(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", mode, "-w", "-t", "60", "stop"])
            .stdin(Stdio::null())
            .output();
    }

    /// SIGKILLs the postmaster (and so every backend).
    pub fn kill(&self) {
        if let Ok(pid) = std::fs::read_to_string(self.data_dir().join("postmaster.pid")) {
            if let Some(pid) = pid.lines().next() {
                let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
            }
        }
        // The backends die with the postmaster; give them a moment to release the port.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Promotes a standby to primary.
    pub fn promote(&self) {
        let out = as_server_user(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data_dir())
            .args(["-w", "-t", "60", "promote"])
            .stdin(Stdio::null())
            .output()
            .expect("run pg_ctl promote");
        assert!(
            out.status.success(),
            "pg_ctl promote failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs SQL with `psql` against `db` and returns its output (rows, `|`-separated).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args([
                "-U",
                "keyledger",
                "-d",
                db,
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .arg("-c")
            .arg(sql)
            .stdin(Stdio::null())
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A new, empty database; returns its name.
    pub fn create_database(&self) -> String {
        let name = format!(
            "kl_{}_{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::SeqCst)
        );
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        name
    }

    /// The URI of database `db` on this server.
    pub fn uri(&self, db: &str) -> String {
        format!("postgres://keyledger@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop("immediate");
    }
}
