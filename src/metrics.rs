//! What `/metrics` exposes, in the OpenMetrics text format, through `prometheus-client`.
//!
//! [`Metrics`] holds the live families (counters and histograms updated on the request and
//! commit paths: an atomic add, or a read lock and an atomic add once a label set exists).
//! Gauges that describe the current state — log size, keys by status, the process's CPU and
//! memory — are read when `/metrics` is scraped, into a registry built for that one answer,
//! so nothing here holds a handle back to the ledger.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::access::VerifyCode;

/// `code` of a verify answer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: &'static str,
}

/// `method`, `route` (the route pattern, never a raw path) and `status` of an HTTP answer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

/// `method` and `route` of an HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

/// `surface` where a client over its failed-authentication limit was refused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SurfaceLabel {
    surface: &'static str,
}

/// `reason` of a connection or request cut short by the HTTP layer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Latency buckets from 50 µs to about 13 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 19))
}

/// Batch-size buckets: 1, 2, 4 … 1024.
fn batch_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 11))
}

/// The live metric families of one server.
pub struct Metrics {
    verify: Family<CodeLabel, Counter>,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<RouteLabels, Histogram, fn() -> Histogram>,
    http_refusals: Family<ReasonLabel, Counter>,
    rate_limited: Family<SurfaceLabel, Counter>,
    connections: Gauge,
    commits: Counter,
    entries: Counter,
    commit_seconds: Histogram,
    sync_seconds: Histogram,
    batch_commands: Histogram,
    batch_entries: Histogram,
    /// Commits whose store write failed (the writer then refuses further writes).
    commit_failures: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            verify: Family::default(),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram),
            http_refusals: Family::default(),
            rate_limited: Family::default(),
            connections: Gauge::default(),
            commits: Counter::default(),
            entries: Counter::default(),
            commit_seconds: latency_histogram(),
            sync_seconds: latency_histogram(),
            batch_commands: batch_histogram(),
            batch_entries: batch_histogram(),
            commit_failures: AtomicU64::new(0),
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Figures read at scrape time from the ledger and the server.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Entries covered by the latest checkpoint.
    pub log_entries: u64,
    /// Whether the ledger can commit.
    pub writer_available: bool,
    /// Whether the server is draining before a shutdown.
    pub draining: bool,
    /// Credentials by status.
    pub by_status: Vec<StatusCounts>,
}

/// One gauge family of credentials by status.
#[derive(Debug, Default)]
pub struct StatusCounts {
    /// Metric name after `keyledger_`.
    pub name: &'static str,
    /// Its help text.
    pub help: &'static str,
    /// `(status, count)` pairs.
    pub counts: Vec<(&'static str, u64)>,
}

impl Metrics {
    /// Counts one `/v1/verify` (or forward-auth) answer.
    pub fn count_verify(&self, code: VerifyCode) {
        self.verify
            .get_or_create(&CodeLabel {
                code: code.as_str(),
            })
            .inc();
    }

    /// Counts one HTTP answer and its latency.
    pub fn count_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_string(),
                route: route.to_string(),
                status,
            })
            .inc();
        self.request_seconds
            .get_or_create(&RouteLabels {
                method: method.to_string(),
                route: route.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a connection or request the HTTP layer cut short (`reason`: why).
    pub fn count_http_refusal(&self, reason: &'static str) {
        self.http_refusals
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts a request refused because its client failed authentication too often.
    pub fn count_rate_limited(&self, surface: &'static str) {
        self.rate_limited
            .get_or_create(&SurfaceLabel { surface })
            .inc();
    }

    /// One more (`+1`) or one fewer (`-1`) open connection.
    pub fn connections(&self, delta: i64) {
        self.connections.inc_by(delta);
    }

    /// Counts one durable group commit.
    pub fn count_commit(&self, commands: usize, entries: usize, total: Duration, sync: Duration) {
        self.commits.inc();
        self.entries.inc_by(entries as u64);
        self.commit_seconds.observe(total.as_secs_f64());
        self.sync_seconds.observe(sync.as_secs_f64());
        self.batch_commands.observe(commands as f64);
        self.batch_entries.observe(entries as f64);
    }

    /// Counts a failed commit.
    pub fn count_commit_failure(&self) {
        self.commit_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Renders every metric, the live families and `now`'s figures, as OpenMetrics text.
    pub fn render(&self, now: &Snapshot) -> String {
        let mut registry = Registry::with_prefix("keyledger");
        registry.register(
            "build",
            "The running build",
            Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION")),
                ("rustc_edition", "2024"),
            ]),
        );
        registry.register(
            "verify",
            "Verification answers (POST /v1/verify and forward-auth) by code",
            self.verify.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP answers by method, route pattern and status",
            self.requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time from request head to response head, by method and route pattern",
            Unit::Seconds,
            self.request_seconds.clone(),
        );
        registry.register(
            "http_refused",
            "Connections and requests cut short by the HTTP layer, by reason",
            self.http_refusals.clone(),
        );
        registry.register(
            "auth_rate_limited",
            "Requests refused because their client failed authentication too often, by surface",
            self.rate_limited.clone(),
        );
        registry.register(
            "http_connections",
            "Open client connections",
            self.connections.clone(),
        );
        registry.register(
            "commits",
            "Group commits made durable",
            self.commits.clone(),
        );
        registry.register(
            "committed_entries",
            "Entries made durable by this process",
            self.entries.clone(),
        );
        registry.register(
            "commit_failures",
            "Commits the store refused (the writer stops after the first)",
            ConstGauge::new(self.commit_failures.load(Ordering::Relaxed) as i64),
        );
        registry.register_with_unit(
            "commit_duration",
            "Time to write and make durable one group commit",
            Unit::Seconds,
            self.commit_seconds.clone(),
        );
        registry.register_with_unit(
            "commit_sync_duration",
            "Time spent making one group commit durable (flush and fsync, or COMMIT)",
            Unit::Seconds,
            self.sync_seconds.clone(),
        );
        registry.register(
            "commit_batch_commands",
            "Commands per group commit",
            self.batch_commands.clone(),
        );
        registry.register(
            "commit_batch_entries",
            "Entries per group commit",
            self.batch_entries.clone(),
        );
        registry.register(
            "log_entries",
            "Entries covered by the latest checkpoint",
            ConstGauge::new(now.log_entries as i64),
        );
        registry.register(
            "writer_available",
            "1 while the ledger can commit",
            ConstGauge::new(i64::from(now.writer_available)),
        );
        registry.register(
            "draining",
            "1 while the server drains before shutting down",
            ConstGauge::new(i64::from(now.draining)),
        );
        for gauge in &now.by_status {
            let family = Family::<StatusLabel, Gauge>::default();
            for (status, count) in &gauge.counts {
                family
                    .get_or_create(&StatusLabel { status })
                    .set(*count as i64);
            }
            registry.register(gauge.name, gauge.help, family);
        }
        process::register(registry.sub_registry_with_prefix("process"));
        let mut out = String::with_capacity(8192);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        // `Registry::with_prefix("keyledger")` prefixes the process metrics too; the
        // conventional names have no prefix.
        out.replace("keyledger_process_", "process_")
    }
}

/// `status` of a credential gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

/// The `process_*` metrics every Prometheus client exposes, read from `/proc/self`.
mod process {
    use prometheus_client::metrics::counter::ConstCounter;
    use prometheus_client::metrics::gauge::ConstGauge;
    use prometheus_client::registry::{Registry, Unit};

    /// Registers what could be read; on a system without `/proc`, nothing.
    pub fn register(registry: &mut Registry) {
        let ticks = rustix::param::clock_ticks_per_second() as f64;
        let page = rustix::param::page_size() as i64;
        if let Some(stat) = read_stat() {
            let cpu = (stat.utime + stat.stime) as f64 / ticks;
            registry.register_with_unit(
                "cpu",
                "Total user and system CPU time spent",
                Unit::Seconds,
                ConstCounter::new(cpu),
            );
            registry.register_with_unit(
                "resident_memory",
                "Resident memory size",
                Unit::Bytes,
                ConstGauge::new(stat.rss_pages * page),
            );
            registry.register_with_unit(
                "virtual_memory",
                "Virtual memory size",
                Unit::Bytes,
                ConstGauge::new(stat.vsize as i64),
            );
            registry.register(
                "threads",
                "OS threads in the process",
                ConstGauge::new(stat.threads),
            );
            if let Some(boot) = boot_time() {
                registry.register_with_unit(
                    "start_time",
                    "Start time of the process since the Unix epoch",
                    Unit::Seconds,
                    ConstGauge::new(boot + (stat.start_ticks as f64 / ticks) as i64),
                );
            }
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            registry.register(
                "open_fds",
                "Open file descriptors",
                ConstGauge::new(dir.count() as i64),
            );
        }
        if let Some(max) = max_fds() {
            registry.register(
                "max_fds",
                "Limit on open file descriptors",
                ConstGauge::new(max),
            );
        }
    }

    struct Stat {
        utime: u64,
        stime: u64,
        threads: i64,
        start_ticks: u64,
        vsize: u64,
        rss_pages: i64,
    }

    /// `/proc/self/stat`, fields after the parenthesised command name (which may hold
    /// spaces), numbered as in proc(5).
    fn read_stat() -> Option<Stat> {
        let text = std::fs::read_to_string("/proc/self/stat").ok()?;
        let rest = &text[text.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // `rest` starts at field 3 (state).
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
        Some(Stat {
            utime: field(14)?,
            stime: field(15)?,
            threads: field(20)? as i64,
            start_ticks: field(22)?,
            vsize: field(23)?,
            rss_pages: field(24)? as i64,
        })
    }

    fn boot_time() -> Option<i64> {
        let text = std::fs::read_to_string("/proc/stat").ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix("btime "))
            .and_then(|v| v.trim().parse().ok())
    }

    fn max_fds() -> Option<i64> {
        let text = std::fs::read_to_string("/proc/self/limits").ok()?;
        let line = text.lines().find(|l| l.starts_with("Max open files"))?;
        line.split_whitespace().nth(3)?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_histograms_and_process_figures() {
        let metrics = Metrics::default();
        metrics.count_verify(VerifyCode::Valid);
        metrics.count_verify(VerifyCode::Valid);
        metrics.count_verify(VerifyCode::Forbidden);
        metrics.count_request("GET", "/v1/me", 200, Duration::from_millis(3));
        metrics.count_commit(3, 4, Duration::from_millis(2), Duration::from_millis(1));
        let text = metrics.render(&Snapshot {
            log_entries: 7,
            writer_available: true,
            draining: false,
            by_status: vec![StatusCounts {
                name: "api_keys",
                help: "API keys by status",
                counts: vec![("active", 2)],
            }],
        });
        for line in [
            "keyledger_verify_total{code=\"VALID\"} 2",
            "keyledger_verify_total{code=\"FORBIDDEN\"} 1",
            "keyledger_http_requests_total{method=\"GET\",route=\"/v1/me\",status=\"200\"} 1",
            "keyledger_http_request_duration_seconds_count{method=\"GET\",route=\"/v1/me\"} 1",
            "keyledger_commit_batch_commands_sum 3.0",
            "keyledger_commit_batch_entries_sum 4.0",
            "keyledger_log_entries 7",
            "keyledger_api_keys{status=\"active\"} 2",
            "keyledger_writer_available 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(text.contains("keyledger_build_info{version=\""), "{text}");
        assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
        assert!(text.contains("\nprocess_cpu_seconds_total "), "{text}");
        assert!(text.contains("\nprocess_open_fds "), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
