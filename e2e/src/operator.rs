//! Runs the operator binary as a local process against the local control plane, the way the
//! demo does: out of cluster, through the admin kubeconfig.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::{get_json, kubectl_ok, wait_until};

/// The repository root (the e2e crate is one level below it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Installs the generated CRDs and waits until they are established. Idempotent.
pub fn install_crds() {
    let dir = repo_root().join("crds");
    kubectl_ok(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        dir.to_str().unwrap(),
    ]);
    crate::wait_crds_established(&[
        "tenants.xin.dev",
        "channels.xin.dev",
        "automationrules.xin.dev",
        "ingestionjobs.xin.dev",
    ]);
    if get_json(&["namespace", "xin-system"]).is_none() {
        let _ = crate::kubectl(&["create", "namespace", "xin-system"]);
    }
}

use crate::workload::free_port;

static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// How many [`OperatorProcess`]es this test process has started and not yet killed or dropped.
/// Objects with a finalizer of the operator use it on drop: with none running, nothing would
/// ever remove the finalizer.
pub fn operators_running() -> usize {
    RUNNING.load(Ordering::SeqCst)
}

/// One operator process. Its stdin is a pipe held by this test process: when the test
/// process exits, the operator exits too (`XIN_EXIT_ON_STDIN_CLOSE`).
pub struct OperatorProcess {
    child: Child,
    /// Counted in [`operators_running`] (until killed).
    counted: bool,
    pub metrics_addr: String,
    pub log: PathBuf,
}

impl OperatorProcess {
    pub fn start(bin: &str, env: &[(&str, &str)]) -> Self {
        install_crds();
        let port = free_port();
        let metrics_addr = format!("127.0.0.1:{port}");
        let logs = repo_root().join("target/e2e-logs");
        std::fs::create_dir_all(&logs).unwrap();
        let log = logs.join(format!("operator-{}-{port}.log", std::process::id()));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(bin);
        cmd.env("XIN_METRICS_ADDR", &metrics_addr)
            .env("XIN_EXIT_ON_STDIN_CLOSE", "true")
            .env("XIN_LEADER_ELECT", "false")
            .env("XIN_RESYNC_SECONDS", "30")
            .stdin(Stdio::piped())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        // No Telegram here: registrations fail at once (a refused port) unless a suite points
        // the operator at a stand-in.
        cmd.env("XIN_TELEGRAM_API_BASE", "http://127.0.0.1:9");
        // Platform-managed tenant databases on the test PostgreSQL, when there is one.
        if let Ok(url) = std::env::var("XIN_TEST_DATABASE_URL") {
            cmd.env("XIN_DATABASE_ADMIN_URL", url);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start the operator binary");
        RUNNING.fetch_add(1, Ordering::SeqCst);
        let op = OperatorProcess {
            child,
            counted: true,
            metrics_addr,
            log,
        };
        wait_until(
            "the operator's /readyz",
            Duration::from_secs(60),
            || match op.get("/readyz") {
                Some((200, _)) => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
        op
    }

    /// `GET path` on the metrics server: `(status, body)`.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut s = TcpStream::connect(&self.metrics_addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n",
            self.metrics_addr
        )
        .ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).ok()?;
        let status = buf.split_whitespace().nth(1)?.parse().ok()?;
        let body = buf
            .split_once("\r\n\r\n")
            .map(|x| x.1.to_string())
            .unwrap_or_default();
        Some((status, body))
    }

    /// Sum of the samples of `metric` whose label set contains every `filter` and none of
    /// `exclude`.
    pub fn metric_sum(&self, metric: &str, exclude: &[&str]) -> f64 {
        let (_, body) = self.get("/metrics").expect("scrape /metrics");
        body.lines()
            .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with(['{', ' ']))
            .filter(|l| !exclude.iter().any(|e| l.contains(e)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Write requests sent to the API server, leader-election Lease renewals excluded.
    pub fn writes(&self) -> u64 {
        self.metric_sum(
            "xin_operator_write_requests_total",
            &["resource=\"leases\""],
        ) as u64
    }

    /// Requests sent to the API server other than watches, leader-election Lease renewals and
    /// Events (they are not part of a reconcile's reads and writes).
    pub fn requests(&self) -> u64 {
        self.metric_sum(
            "xin_operator_api_requests_total",
            &[
                "verb=\"WATCH\"",
                "resource=\"leases\"",
                "resource=\"events\"",
            ],
        ) as u64
    }

    /// SIGKILL: no chance to finish anything in flight.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::mem::take(&mut self.counted) {
            RUNNING.fetch_sub(1, Ordering::SeqCst);
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
