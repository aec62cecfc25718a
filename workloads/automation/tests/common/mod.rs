//! The worker as a real process against the local control plane (its AutomationRules and
//! Secrets in a namespace of its own) and a tenant database provisioned as the operator does
//! it; local stand-ins for the webhook receiver and the CRM.
#![allow(dead_code)]

pub mod smtp;

use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;
use xin_e2e::workload::{Workload, free_port};
use xin_e2e::{TestNamespace, apply, get_json, kubectl_ok, wait_until};

pub const MINUTE: Duration = Duration::from_secs(60);
pub const TENANT: &str = "acme";

/// A namespace with rules, and a tenant database.
pub struct Env {
    pub ns: TestNamespace,
    pub db: xin_store::TestDatabase,
    pub pool: PgPool,
}

impl Env {
    pub async fn new(prefix: &str) -> Env {
        xin_e2e::operator::install_crds();
        let ns = TestNamespace::create(prefix);
        let db = xin_store::TestDatabase::new().await;
        let pool = xin_store::connect(&db.url, 4).await.unwrap();
        Env { ns, db, pool }
    }

    pub fn ns(&self) -> &str {
        &self.ns.name
    }

    /// A worker process for this namespace and database; `extra` overrides the defaults.
    pub fn worker(&self, extra: &[(&str, &str)]) -> Worker {
        let http = free_port();
        let metrics = free_port();
        let mut env: Vec<(String, String)> = [
            ("XIN_TENANT", TENANT),
            ("XIN_NAMESPACE", self.ns()),
            ("TENANT_TIME_ZONE", "Europe/Berlin"),
            ("DATABASE_URL", self.db.url.as_str()),
            ("AUTOMATION_HTTP_HOST", "127.0.0.1"),
            ("AUTOMATION_METRICS_HOST", "127.0.0.1"),
            ("AUTOMATION_REPORT_SECONDS", "1"),
            ("AUTOMATION_POLL_MILLISECONDS", "100"),
            ("AUTOMATION_SECRET_CACHE_SECONDS", "1"),
            // The stand-ins listen on loopback.
            ("XIN_OUTBOUND_ALLOW", "127.0.0.1/32"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        env.push(("AUTOMATION_HTTP_PORT".into(), http.to_string()));
        env.push(("AUTOMATION_METRICS_PORT".into(), metrics.to_string()));
        for (k, v) in extra {
            env.retain(|(n, _)| n != k);
            env.push((k.to_string(), v.to_string()));
        }
        let mut w = Workload::start("xin-automation", "automation", &env);
        let addr = format!("127.0.0.1:{http}");
        w.wait_ready(&addr, "/ready");
        Worker {
            process: w,
            metrics: format!("127.0.0.1:{metrics}"),
        }
    }

    pub fn apply(&self, yaml: &str) {
        apply(&yaml.replace("NS", self.ns()));
    }

    pub fn rule(&self, name: &str) -> Value {
        get_json(&["automationrule", name, "-n", self.ns()]).expect("the rule exists")
    }

    pub fn uid(&self, name: &str) -> String {
        self.rule(name)["metadata"]["uid"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub fn annotate(&self, name: &str, key: &str, value: &str) {
        kubectl_ok(&[
            "annotate",
            "automationrule",
            name,
            "-n",
            self.ns(),
            &format!("{key}={value}"),
            "--overwrite",
        ]);
    }

    /// Waits until the rule's status satisfies `pred`; returns the rule.
    pub fn wait_status(&self, name: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        wait_until(what, MINUTE, || {
            let r = self.rule(name);
            if pred(&r["status"]) {
                Ok(r)
            } else {
                Err(format!("status: {}", r["status"]))
            }
        })
    }

    /// The runs of a rule, newest first.
    pub async fn runs(&self, rule_uid: &str) -> Vec<xin_automation::queue::RunRow> {
        xin_automation::queue::runs_of(&self.pool, rule_uid)
            .await
            .unwrap()
    }
}

/// A worker process; killed on drop.
pub struct Worker {
    pub process: Workload,
    pub metrics: String,
}

impl Worker {
    pub fn metrics(&self) -> String {
        xin_e2e::http_get(&self.metrics, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    /// The value of a metric series (its full name and labels as printed), 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

/// The most recent run in a rule's status.
pub fn last_run(status: &Value) -> &Value {
    &status["recentRuns"][0]
}

/// Waits for an async condition (`f` returns `Ok` when it holds).
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match f().await {
            Ok(t) => return t,
            Err(e) if std::time::Instant::now() >= deadline => {
                panic!("{what}: not within {timeout:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
