//! The alerts and SLI recording rules (`charts/xin/files/prometheus-rules.yaml`): promtool
//! checks them and runs their unit tests (`e2e/promtool/prometheus-rules.test.yaml`); every
//! alert is labelled, linked to its section of `docs/runbook.md` and tested both firing and
//! quiet; and the chart renders them as a PrometheusRule only where the Prometheus Operator's
//! API exists. promtool is built from the Go module proxy by
//! `e2e/controlplane/cluster.sh build-tools prometheus`; helm comes with the control plane
//! (`eval "$(e2e/controlplane/cluster.sh env)"`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const RULES: &str = "charts/xin/files/prometheus-rules.yaml";
const RULE_TESTS: &str = "e2e/promtool/prometheus-rules.test.yaml";
const RUNBOOK: &str = "docs/runbook.md";
/// The runbook link in the rule file, which the chart replaces with
/// `metrics.prometheusRule.runbookUrl`.
const RUNBOOK_URL: &str = "https://github.com/xin-dev/xin/blob/main/docs/runbook.md";

/// The alerts the runbook pages or tickets on, and those the chaos drills expect.
const REQUIRED_ALERTS: [&str; 9] = [
    "ApiErrorBudgetBurn",
    "ApiLatencyP95Breached",
    "GatewayHealthCheckFailed",
    "IngestionLagHigh",
    "AutomationBacklog",
    "AutomationFailuresSpike",
    "HighLatencyLLM",
    "ForwardingBacklog",
    "EndToEndLatencyHigh",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the repository root exists")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(text: &str, what: &str) -> Value {
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("{what} is not valid YAML: {e}"))
}

/// Where `build-tools prometheus` puts promtool:
/// `${XDG_CACHE_HOME:-~/.cache}/xin/prometheus-<version>/bin/promtool`, the version pinned in
/// `e2e/controlplane/versions.env`. `XIN_PROMTOOL` overrides it.
fn promtool() -> PathBuf {
    xin_e2e::wait_for_observability_build();
    let versions = read("e2e/controlplane/versions.env");
    let version = versions
        .lines()
        .find_map(|l| l.strip_prefix("PROMETHEUS_VERSION="))
        .expect("versions.env pins PROMETHEUS_VERSION")
        .trim();
    let bin = match std::env::var_os("XIN_PROMTOOL") {
        Some(p) => PathBuf::from(p),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache")
            })
            .join(format!("xin/prometheus-{version}/bin/promtool")),
    };
    assert!(
        bin.is_file(),
        "promtool (Prometheus module {version}) is not at {}: build it with \
         `e2e/controlplane/cluster.sh build-tools prometheus` (`make test` does it), or point \
         XIN_PROMTOOL at a promtool binary",
        bin.display()
    );
    bin
}

/// Runs a command in the repository root: whether it succeeded, its stdout, and both outputs.
fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let both = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.success(), stdout, both)
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// Every rule of the rule file.
fn rules(file: &Value) -> Vec<&Value> {
    file["groups"]
        .as_array()
        .expect("the rule file has `groups`")
        .iter()
        .flat_map(|g| {
            g["rules"]
                .as_array()
                .unwrap_or_else(|| panic!("group {} has `rules`", g["name"]))
        })
        .collect()
}

#[test]
fn promtool_checks_the_rules() {
    let (ok, _, out) = run(Command::new(promtool()).args(["check", "rules", RULES]));
    // A lint finding (duplicate rules) prints FAILED but exits 0.
    assert!(
        ok && !out.contains("FAILED"),
        "promtool check rules:\n{out}"
    );
}

#[test]
fn promtool_unit_tests_pass() {
    let (ok, _, out) = run(Command::new(promtool()).args(["test", "rules", RULE_TESTS]));
    assert!(ok && out.contains("SUCCESS"), "promtool test rules:\n{out}");
}

#[test]
fn every_alert_is_labelled_documented_and_tested() {
    let file = yaml(&read(RULES), RULES);
    let tests = yaml(&read(RULE_TESTS), RULE_TESTS);
    let runbook = read(RUNBOOK);
    let headings: BTreeSet<&str> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(str::trim)
        .collect();

    let mut alerts = BTreeSet::new();
    let mut problems = Vec::new();
    for rule in rules(&file) {
        let Some(name) = str_of(rule, "alert") else {
            continue;
        };
        alerts.insert(name.to_string());
        let severity = rule["labels"].get("severity").and_then(Value::as_str);
        if !matches!(severity, Some("critical" | "warning")) {
            problems.push(format!(
                "{name}: severity {severity:?}, not critical or warning"
            ));
        }
        for key in ["summary", "description"] {
            if str_of(&rule["annotations"], key).is_none_or(|s| s.trim().is_empty()) {
                problems.push(format!("{name}: no {key} annotation"));
            }
        }
        let want = format!("{RUNBOOK_URL}#{}", name.to_lowercase());
        match str_of(&rule["annotations"], "runbook_url") {
            Some(url) if url == want => {}
            other => problems.push(format!("{name}: runbook_url {other:?}, want {want}")),
        }
        // GitHub's anchor of `## ApiErrorBudgetBurn` is `#apierrorbudgetburn`.
        if !headings.contains(name) {
            problems.push(format!("{name}: {RUNBOOK} has no heading `## {name}`"));
        }
    }
    for required in REQUIRED_ALERTS {
        if !alerts.contains(required) {
            problems.push(format!("{required}: missing from {RULES}"));
        }
    }

    // alertname → (a case where it fires, a case where it does not).
    let mut cases: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for group in tests["tests"]
        .as_array()
        .expect("the test file has `tests`")
    {
        for case in group
            .get("alert_rule_test")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = str_of(case, "alertname").expect("every alert test names its alert");
            let fires = case
                .get("exp_alerts")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty());
            let entry = cases.entry(name.to_string()).or_default();
            if fires {
                entry.0 = true;
            } else {
                entry.1 = true;
            }
        }
    }
    for name in &alerts {
        match cases.get(name) {
            Some((true, true)) => {}
            Some(&(fires, _)) => problems.push(format!(
                "{name}: {RULE_TESTS} lacks a case where it {}",
                if fires { "does not fire" } else { "fires" }
            )),
            None => problems.push(format!("{name}: not in {RULE_TESTS}")),
        }
    }
    for name in cases.keys() {
        if !alerts.contains(name) {
            problems.push(format!(
                "{RULE_TESTS} tests {name}, which {RULES} does not define"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `helm template xin charts/xin` with `args`; the rendered documents.
fn helm_template(args: &[&str]) -> Vec<Value> {
    let (ok, stdout, out) = run(Command::new("helm")
        .args(["template", "xin", "charts/xin", "--namespace", "xin-system"])
        .args(["--kube-version", "v1.37.2"])
        .args(args));
    assert!(
        ok,
        "helm template {args:?} (helm must be on PATH: \
         eval \"$(e2e/controlplane/cluster.sh env)\"):\n{out}"
    );
    serde_saphyr::from_multiple::<Value>(&stdout)
        .unwrap_or_else(|e| panic!("helm template {args:?} renders invalid YAML: {e}"))
}

fn prometheus_rules(docs: &[Value]) -> Vec<&Value> {
    docs.iter()
        .filter(|d| str_of(d, "kind") == Some("PrometheusRule"))
        .collect()
}

#[test]
fn the_chart_renders_the_rules_only_with_the_prometheus_operator_api() {
    const API: &str = "monitoring.coreos.com/v1/PrometheusRule";
    const URL: &str = "https://runbooks.example/xin.md";

    let docs = helm_template(&[
        "--api-versions",
        API,
        "--set",
        &format!("metrics.prometheusRule.runbookUrl={URL}"),
    ]);
    let rendered = prometheus_rules(&docs);
    assert_eq!(rendered.len(), 1, "one PrometheusRule with its API present");
    let raw = read(RULES);
    assert!(raw.contains(RUNBOOK_URL), "{RULES} links the runbook");
    let want = yaml(&raw.replace(RUNBOOK_URL, URL), RULES);
    assert!(
        rendered[0]["spec"] == want,
        "the PrometheusRule's spec is not {RULES} with the runbook URL replaced"
    );
    assert_eq!(
        str_of(&rendered[0]["metadata"], "namespace"),
        Some("xin-system")
    );

    let docs = helm_template(&[]);
    assert!(
        prometheus_rules(&docs).is_empty(),
        "no PrometheusRule without the monitoring.coreos.com/v1 API"
    );

    let docs = helm_template(&[
        "--api-versions",
        API,
        "--set",
        "metrics.prometheusRule.enabled=false",
    ]);
    assert!(
        prometheus_rules(&docs).is_empty(),
        "no PrometheusRule with metrics.prometheusRule.enabled=false"
    );
}
