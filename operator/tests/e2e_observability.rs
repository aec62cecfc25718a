//! Observability against the real components (`e2e/observability.sh`, built by `cluster.sh
//! build-tools`): the example tenants run as in `make demo` (`xin-demo-messages`, holding its
//! workloads), the operator and the workloads export their spans to a real Jaeger, and a real
//! Prometheus scrapes the operator and every workload (static targets carrying the `tenant`
//! and `component` labels the chart's PodMonitor would add: the fake pods have no reachable
//! address) and evaluates the chart's rules (every `for` shortened for the test). Then:
//! - every dashboard panel's query returns data for the demo's tenant (the panels listed in
//!   [`EMPTY_WHEN_HEALTHY`] excepted: they list what is wrong, and nothing is);
//! - one message's spans, from the gateway and the orchestrator, come back under one trace
//!   id, and the operator's reconcile spans are there too;
//! - stopping acme's orchestrator takes `OrchestratorHealthCheckFailed` from inactive to
//!   pending or firing, for acme only.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use xin_e2e::operator::repo_root;
use xin_e2e::workload::free_port;

/// Table panels that list only what is wrong (objects not Ready): empty for a healthy tenant.
const EMPTY_WHEN_HEALTHY: &[&str] = &[
    "Object conditions False",
    "IngestionJobs not Ready",
    "AutomationRules not Ready",
];

fn script(env: &[(&str, String)], args: &[&str]) -> String {
    let out = Command::new(repo_root().join("e2e/observability.sh"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("run e2e/observability.sh");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "e2e/observability.sh {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// `key=value` of a line the script printed.
fn field(line: &str, key: &str) -> String {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
        .to_string()
}

/// Jaeger and Prometheus on free ports, stopped on drop.
struct Components {
    env: Vec<(&'static str, String)>,
}

impl Drop for Components {
    fn drop(&mut self) {
        for stop in ["stop-prometheus", "stop-jaeger"] {
            let _ = Command::new(repo_root().join("e2e/observability.sh"))
                .arg(stop)
                .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
                .output();
        }
    }
}

/// `GET url` with curl (`--get` and the form `data` URL-encoded): the JSON answered.
fn get(url: &str, data: &[(&str, &str)]) -> Value {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "--get", url]);
    for (k, v) in data {
        cmd.args(["--data-urlencode", &format!("{k}={v}")]);
    }
    let out = cmd.output().expect("curl");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{url} {data:?}: not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn query(prom: &str, expr: &str) -> Value {
    get(&format!("{prom}/api/v1/query"), &[("query", expr)])
}

/// The chart's rules with every `for` shortened to `5s` (the test cannot wait minutes).
fn rules_for_the_test() -> String {
    let raw = std::fs::read_to_string(repo_root().join("charts/xin/files/prometheus-rules.yaml"))
        .expect("the chart's rules");
    raw.lines()
        .map(|l| match l.split_once("for: ") {
            Some((indent, _)) if indent.trim().is_empty() => format!("{indent}for: 5s"),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The Prometheus configuration: the operator and each held workload, scraped every second,
/// with the labels the chart's monitors give them.
fn prometheus_config(operator: &str, targets: &Value, rules: &Path) -> String {
    let mut scrape = vec![json!({
        "job_name": "xin-operator",
        "honor_labels": true,
        "static_configs": [{"targets": [operator], "labels": {"component": "operator", "namespace": "xin-system"}}],
    })];
    for t in targets["targets"].as_array().unwrap() {
        let tenant = t["tenant"].as_str().unwrap();
        scrape.push(json!({
            "job_name": format!("{tenant}-{}", t["component"].as_str().unwrap()),
            "static_configs": [{"targets": [t["metrics"]], "labels": {
                "tenant": tenant, "component": t["component"], "namespace": format!("xin-{tenant}")}}],
            "metric_relabel_configs": [{"action": "labeldrop", "regex": "exported_tenant"}],
        }));
    }
    json!({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [rules],
        "scrape_configs": scrape,
    })
    .to_string()
}

/// Every target expression of every dashboard panel: (dashboard, panel title, panel type,
/// expr).
fn panel_queries() -> Vec<(String, String, String, String)> {
    let dir = repo_root().join("charts/xin/files/dashboards");
    let mut out = vec![];
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 5, "{files:?}");
    for f in files {
        let d: Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        let title = d["title"].as_str().unwrap().to_string();
        let mut panels: Vec<Value> = vec![];
        for p in d["panels"].as_array().unwrap() {
            panels.push(p.clone());
            panels.extend(p["panels"].as_array().cloned().unwrap_or_default());
        }
        for p in panels {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    out.push((
                        title.clone(),
                        p["title"].as_str().unwrap_or_default().to_string(),
                        p["type"].as_str().unwrap_or_default().to_string(),
                        expr.to_string(),
                    ));
                }
            }
        }
    }
    out
}

/// The metric names an expression selects: the project's own (`xin_`, `gateway_`,
/// `orchestrator_`, `http_` prefixes) and `up`; recording rules (with a `:`) are not metrics.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = vec![];
    let mut word = String::new();
    let mut quoted = false;
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c == '"' {
            quoted = !quoted;
            word.clear();
            continue;
        }
        if quoted {
            continue; // a label value, such as outcome="http_5xx"
        }
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
            continue;
        }
        let name = std::mem::take(&mut word);
        let ours = ["xin_", "gateway_", "orchestrator_", "http_"]
            .iter()
            .any(|p| name.starts_with(p))
            || name == "up";
        // A label name is followed by `=`/`!`/`~` (`tenant=~`); a metric by `{`, `[`, `)` ...
        if ours && !name.contains(':') && !matches!(c, '=' | '!' | '~') {
            out.push(name);
        }
    }
    out
}

/// A dashboard expression as Grafana would send it for tenant `acme` over the last minutes.
fn resolve(expr: &str) -> String {
    expr.replace("${tenant:regex}", "acme")
        .replace("${tenant}", "acme")
        .replace("$tenant", "acme")
        .replace("$__rate_interval", "1m")
        .replace("${__rate_interval}", "1m")
        .replace("$__interval", "5s")
        .replace("$__range", "5m")
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!("timed out waiting for {what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// `xin-demo-messages` holding its workloads; stopped (and its workloads with it) on drop.
struct Demo {
    child: Child,
    hold: PathBuf,
    log: PathBuf,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.hold);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self.child.kill();
    }
}

#[test]
fn prometheus_scrapes_every_panel_and_alert_and_one_message_is_one_trace() {
    xin_e2e::wait_for_observability_build();
    let env = vec![
        ("XIN_JAEGER_OTLP_PORT", free_port().to_string()),
        ("XIN_JAEGER_QUERY_PORT", free_port().to_string()),
        ("XIN_JAEGER_GRPC_PORT", free_port().to_string()),
        ("XIN_PROMETHEUS_PORT", free_port().to_string()),
    ];
    let components = Components { env: env.clone() };
    let jaeger = script(&components.env, &["start-jaeger"]);
    let (otlp, traces) = (field(&jaeger, "otlp"), field(&jaeger, "query"));

    // The operator exports its own spans and renders the endpoint into every workload.
    let op = OperatorProcess::start(
        OPERATOR,
        &[
            ("XIN_OUTBOUND_ALLOW", "127.0.0.1/32"),
            ("XIN_OTEL_EXPORTER_ENDPOINT", &otlp),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp),
        ],
    );
    let _examples = Examples::apply();
    for t in ["acme", "globex"] {
        ready("tenant", t, "");
    }
    for (c, ns) in [
        ("web", "xin-acme"),
        ("telegram", "xin-acme"),
        ("whatsapp", "xin-globex"),
        ("instagram", "xin-globex"),
    ] {
        ready("channel", c, ns);
    }

    // The demo's messages, its workloads then held for scraping.
    let scratch =
        std::env::temp_dir().join(format!("xin-e2e-observability-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let hold = scratch.join("targets.json");
    let log = repo_root().join(format!(
        "target/e2e-logs/demo-messages-observability-{}.log",
        std::process::id()
    ));
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let bin = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("xin-demo-messages");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(&bin)
        .env("XIN_DEMO_HOLD", &hold)
        // As `make demo-observability`: an ingestion run's metrics stay up to be scraped.
        .env("XIN_DEMO_INGEST_METRICS", "1")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (`cargo build -p xin-e2e --bins`)", bin.display()));
    let mut demo = Demo {
        child,
        hold: hold.clone(),
        log: log.clone(),
    };
    let targets: Value = wait_for("the demo's workloads", Duration::from_secs(300), || {
        if let Ok(Some(s)) = demo.child.try_wait() {
            panic!(
                "xin-demo-messages exited ({s}) before holding: {}",
                std::fs::read_to_string(&demo.log).unwrap_or_default()
            );
        }
        std::fs::read(&hold)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| "not yet".to_string())
    });
    let n_targets = targets["targets"].as_array().unwrap().len();
    assert_eq!(n_targets, 6, "{targets}");

    // Prometheus, with the chart's rules.
    let rules = scratch.join("rules.yaml");
    std::fs::write(&rules, rules_for_the_test()).unwrap();
    let config = scratch.join("prometheus.yml");
    std::fs::write(
        &config,
        prometheus_config(&op.metrics_addr, &targets, &rules),
    )
    .unwrap();
    let prom = field(
        &script(
            &components.env,
            &["start-prometheus", config.to_str().unwrap()],
        ),
        "url",
    );
    wait_for("every target up", Duration::from_secs(60), || {
        let r = query(&prom, "sum(up)");
        let up = r.pointer("/data/result/0/value/1").and_then(Value::as_str);
        if up == Some(&(n_targets + 1).to_string()) {
            Ok(())
        } else {
            Err(r.to_string())
        }
    });

    // A request the gateway refuses (no Telegram secret token), so the refusals' series exist.
    let gw = targets["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tenant"] == "acme" && t["component"] == "gateway")
        .and_then(|t| t["http"].as_str())
        .unwrap()
        .to_string();
    let refused = xin_e2e::http(&gw, "POST", "/webhooks/telegram", &[], b"{}").unwrap();
    assert_eq!(refused.status, 401, "{}", refused.body);

    // Every panel's query returns data for acme (rates need a few samples in their window).
    let panels = panel_queries();
    assert!(panels.len() >= 40, "{} panel queries", panels.len());
    let results = wait_for(
        "every panel to return data",
        Duration::from_secs(90),
        || {
            let mut empty = vec![];
            for (dashboard, title, kind, expr) in &panels {
                let r = query(&prom, &resolve(expr));
                assert_eq!(r["status"], "success", "{dashboard} / {title}: {expr}: {r}");
                let none = r["data"]["result"].as_array().is_none_or(|a| a.is_empty());
                let excepted = kind == "table" && EMPTY_WHEN_HEALTHY.contains(&title.as_str());
                if none && !excepted {
                    empty.push(format!("{dashboard} / {title}: {expr}"));
                }
            }
            if empty.is_empty() {
                Ok(panels.len())
            } else {
                Err(format!("no data:\n{}", empty.join("\n")))
            }
        },
    );
    println!("{results} panel queries returned data");
    // Every metric a panel names has series of its own: a panel's fallback (`or vector(0)`,
    // `or on (...) 0 * ...`) would hide a misspelt metric.
    let mut names: Vec<String> = panels
        .iter()
        .flat_map(|(_, _, _, expr)| metric_names(expr))
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() >= 20, "{names:?}");
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| {
            query(&prom, &format!("count({n})"))["data"]["result"]
                .as_array()
                .is_none_or(|a| a.is_empty())
        })
        .collect();
    assert!(
        missing.is_empty(),
        "panels name metrics that have no series: {missing:?}"
    );
    // The operator's view: acme's objects by condition, and its ingestion lag.
    let r = query(
        &prom,
        "xin_operator_object_condition{kind=\"Tenant\",name=\"acme\",condition=\"Ready\"}",
    );
    assert_eq!(
        r.pointer("/data/result/0/metric/status"),
        Some(&json!("True")),
        "{r}"
    );
    assert_eq!(
        query(&prom, "xin_operator_ingestion_lag_seconds{tenant=\"acme\"}")["data"]["result"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    // One message, one trace: the gateway's spans and the orchestrator's under one id.
    let trace = wait_for(
        "a trace through the gateway and the orchestrator",
        Duration::from_secs(60),
        || {
            let r = get(
                &format!("{traces}/api/traces"),
                &[
                    ("service", "xin-gateway"),
                    ("limit", "100"),
                    ("lookback", "1h"),
                ],
            );
            r["data"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|t| {
                    let services: Vec<&str> = t["processes"]
                        .as_object()
                        .into_iter()
                        .flat_map(|p| p.values())
                        .filter_map(|p| p["serviceName"].as_str())
                        .collect();
                    services.contains(&"xin-gateway") && services.contains(&"xin-orchestrator")
                })
                .cloned()
                .ok_or_else(|| r.to_string())
        },
    );
    let id = trace["traceID"].as_str().unwrap();
    let spans = trace["spans"].as_array().unwrap();
    assert!(
        spans.iter().all(|s| s["traceID"] == id),
        "one trace id: {trace}"
    );
    let names: Vec<&str> = spans
        .iter()
        .filter_map(|s| s["operationName"].as_str())
        .collect();
    assert!(names.contains(&"forward"), "{names:?}");
    // The operator: a reconcile's log lines carry its trace id, and that trace is in Jaeger
    // with the reconcile's span.
    let logged: Vec<Value> = std::fs::read_to_string(&op.log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l.pointer("/span/name") == Some(&json!("reconcile")))
        .collect();
    assert!(
        !logged.is_empty(),
        "no reconcile log line in {}",
        op.log.display()
    );
    for l in &logged {
        let id = l.pointer("/span/trace_id").and_then(Value::as_str);
        assert!(
            id.is_some_and(|id| id.len() == 32 && id != "0".repeat(32)),
            "a reconcile log line without its trace id: {l}"
        );
    }
    let id = logged[0]["span"]["trace_id"].as_str().unwrap().to_string();
    let reconcile = wait_for("the reconcile's trace", Duration::from_secs(60), || {
        let r = get(&format!("{traces}/api/traces/{id}"), &[]);
        let spans = r
            .pointer("/data/0/spans")
            .and_then(Value::as_array)
            .cloned();
        spans
            .filter(|s| s.iter().any(|s| s["operationName"] == "reconcile"))
            .ok_or_else(|| r.to_string())
    });
    assert!(
        reconcile.iter().all(|s| s["traceID"] == id.as_str()),
        "{reconcile:?}"
    );

    // Stopping acme's orchestrator: OrchestratorHealthCheckFailed goes from inactive (the rule
    // evaluated, nothing firing) to pending or firing, for acme only.
    let rule_state = || {
        let r = get(&format!("{prom}/api/v1/rules"), &[("type", "alert")]);
        r["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .find(|r| r["name"] == "OrchestratorHealthCheckFailed")
            .unwrap_or_else(|| panic!("no OrchestratorHealthCheckFailed rule: {r}"))
    };
    wait_for("the rule to be evaluated", Duration::from_secs(30), || {
        let r = rule_state();
        if r["health"] == "ok"
            && r["lastEvaluation"]
                .as_str()
                .is_some_and(|t| !t.starts_with("0001"))
        {
            Ok(())
        } else {
            Err(r.to_string())
        }
    });
    let r = rule_state();
    assert_eq!(r["state"], "inactive", "{r}");
    let pid = targets["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tenant"] == "acme" && t["component"] == "orchestrator")
        .and_then(|t| t["pid"].as_u64())
        .unwrap();
    assert!(
        Command::new("kill")
            .arg(pid.to_string())
            .status()
            .unwrap()
            .success()
    );
    let alert = wait_for("the alert", Duration::from_secs(60), || {
        let r = get(&format!("{prom}/api/v1/alerts"), &[]);
        r["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["labels"]["alertname"] == "OrchestratorHealthCheckFailed")
            .cloned()
            .ok_or_else(|| r.to_string())
    });
    assert!(
        alert["state"] == "pending" || alert["state"] == "firing",
        "{alert}"
    );
    assert_eq!(alert["labels"]["tenant"], "acme", "{alert}");
    assert_eq!(alert["labels"]["severity"], "critical", "{alert}");
    assert!(
        alert["annotations"]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("acme")),
        "{alert}"
    );
    let firing = wait_for("the alert to fire", Duration::from_secs(60), || {
        let r = get(&format!("{prom}/api/v1/alerts"), &[]);
        let all = r["data"]["alerts"].as_array().cloned().unwrap_or_default();
        all.iter()
            .find(|a| {
                a["labels"]["alertname"] == "OrchestratorHealthCheckFailed"
                    && a["state"] == "firing"
            })
            .map(|_| all.clone())
            .ok_or_else(|| r.to_string())
    });
    assert!(
        firing
            .iter()
            .filter(|a| a["labels"]["alertname"] == "OrchestratorHealthCheckFailed")
            .all(|a| a["labels"]["tenant"] == "acme"),
        "globex's orchestrator still runs: {firing:?}"
    );
    drop(demo);
    drop(components);
    let _ = std::fs::remove_dir_all(&scratch);
}
