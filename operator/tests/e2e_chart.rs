//! The Helm chart: lints, renders, installs into the local control plane, and its ClusterRole
//! is enough for the operator (the operator runs with the chart ServiceAccount's token and a
//! tenant still becomes Ready), proving least privilege is not too little.

mod common;

use std::process::Command;

use common::*;

fn helm(args: &[&str]) -> (bool, String) {
    let chart = xin_e2e::operator::repo_root().join("charts/xin");
    let mut full: Vec<&str> = args.to_vec();
    full.push(chart.to_str().unwrap());
    outcome(
        Command::new("helm")
            .args(&full)
            .output()
            .expect("helm must be on PATH (make test puts the built one first)"),
    )
}

/// Whether a command succeeded, and its stdout and stderr.
fn outcome(out: std::process::Output) -> (bool, String) {
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn chart_lints_and_renders_with_and_without_options() {
    let (ok, out) = helm(&["lint", "--strict", "--kube-version", "v1.37.2"]);
    assert!(ok && !out.contains("[ERROR]"), "helm lint failed:\n{out}");
    let (ok, plain) = helm(&[
        "template",
        "xin",
        "--namespace",
        "xin-system",
        "--kube-version",
        "v1.37.2",
    ]);
    assert!(ok, "{plain}");
    // The Prometheus Operator's objects only where its CRDs are (monitoring.coreos.com/v1);
    // the dashboards' ConfigMaps always (Grafana's sidecar needs no CRD).
    for kind in ["ServiceMonitor", "PodMonitor", "PrometheusRule"] {
        assert!(
            !plain.contains(&format!("kind: {kind}")),
            "{kind} rendered without its CRD"
        );
    }
    assert_eq!(plain.matches("grafana_dashboard: \"1\"").count(), 5);
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
    ] {
        assert!(
            plain.contains(&format!("kind: {kind}\n")),
            "no {kind} rendered"
        );
    }
    let (ok, with_sm) = helm(&[
        "template",
        "xin",
        "--namespace",
        "xin-system",
        "--kube-version",
        "v1.37.2",
        "--api-versions",
        "monitoring.coreos.com/v1/ServiceMonitor",
        "--api-versions",
        "monitoring.coreos.com/v1/PodMonitor",
        "--api-versions",
        "monitoring.coreos.com/v1/PrometheusRule",
        "--set",
        "workloads.gateway.repository=registry.example/gw",
        "--set",
        "workloads.gateway.tag=2",
        "--set",
        "workloads.orchestrator.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ]);
    assert!(ok, "{with_sm}");
    for kind in ["ServiceMonitor", "PodMonitor", "PrometheusRule"] {
        assert!(with_sm.contains(&format!("kind: {kind}\n")), "no {kind}");
    }
    // One value each turns them off.
    let (ok, off) = helm(&[
        "template",
        "xin",
        "--namespace",
        "xin-system",
        "--kube-version",
        "v1.37.2",
        "--api-versions",
        "monitoring.coreos.com/v1/ServiceMonitor",
        "--api-versions",
        "monitoring.coreos.com/v1/PodMonitor",
        "--api-versions",
        "monitoring.coreos.com/v1/PrometheusRule",
        "--set",
        "metrics.serviceMonitor.enabled=false",
        "--set",
        "metrics.podMonitor.enabled=false",
        "--set",
        "metrics.prometheusRule.enabled=false",
        "--set",
        "metrics.dashboards.enabled=false",
    ]);
    assert!(ok, "{off}");
    for kind in ["ServiceMonitor", "PodMonitor", "PrometheusRule"] {
        assert!(
            !off.contains(&format!("kind: {kind}")),
            "{kind} still rendered"
        );
    }
    assert!(
        !off.contains("grafana_dashboard"),
        "dashboards still rendered"
    );
    assert!(
        with_sm.contains(r#"{name: XIN_GATEWAY_IMAGE, value: "registry.example/gw:2"}"#),
        "workload images come from values"
    );
    assert!(
        with_sm.contains(r#"{name: XIN_ORCHESTRATOR_IMAGE, value: "ghcr.io/xin-dev/xin-orchestrator:0.1.0@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}"#),
        "a digest pins the image"
    );
    assert!(
        with_sm.contains(r#"image: "ghcr.io/xin-dev/xin-operator:0.1.0""#),
        "the operator's tag defaults to the appVersion"
    );
    let (ok, bad) = helm(&[
        "template",
        "xin",
        "--namespace",
        "xin-system",
        "--kube-version",
        "v1.37.2",
        "--set",
        "image.digest=latest",
    ]);
    assert!(
        !ok && bad.contains("must be sha256:<64 hex digits>"),
        "{bad}"
    );
    // The platform endpoints of the tenants' NetworkPolicies reach the operator's settings.
    assert!(plain.contains(r#"{name: XIN_NETPOL_API_SERVER_PORTS, value: "443,6443"}"#));
    assert!(
        !plain.contains("XIN_NETPOL_DATABASE_NAMESPACE"),
        "unset stays unset"
    );
    let (ok, netpol) = helm(&[
        "template",
        "xin",
        "--namespace",
        "xin-system",
        "--kube-version",
        "v1.37.2",
        "--set",
        "networkPolicy.database.namespace=postgres",
        "--set",
        r"networkPolicy.database.podLabels.app\.kubernetes\.io/name=postgresql",
        "--set",
        "networkPolicy.apiServer.cidrs={172.18.0.2/32,10.0.0.0/30}",
        "--set",
        "networkPolicy.allowPrivateDestinations=true",
    ]);
    assert!(ok, "{netpol}");
    for env in [
        r#"{name: XIN_NETPOL_DATABASE_NAMESPACE, value: "postgres"}"#,
        r#"{name: XIN_NETPOL_DATABASE_POD_LABELS, value: "app.kubernetes.io/name=postgresql"}"#,
        r#"{name: XIN_NETPOL_API_SERVER_CIDRS, value: "172.18.0.2/32,10.0.0.0/30"}"#,
        r#"{name: XIN_NETPOL_ALLOW_PRIVATE_DESTINATIONS, value: "true"}"#,
    ] {
        assert!(netpol.contains(env), "{env} not rendered");
    }
    // No secret access beyond what the operator manages: no wildcard verbs or resources.
    assert!(!plain.contains("'*'") && !plain.contains("\"*\"") && !plain.contains("- \"*\""));

    // `helm test`'s smoke Job: the operator's image and ServiceAccount, its Service's /readyz;
    // off with smokeTest.enabled=false (e2e_realnode runs it on a real node).
    assert!(plain.contains("helm.sh/hook: test"), "{plain}");
    for arg in [
        "- smoke\n",
        "- --operator-url=http://xin-operator-metrics.xin-system.svc.cluster.local:8080/readyz\n",
        "- --timeout-seconds=120\n",
    ] {
        assert!(plain.contains(arg), "{arg} not in the smoke Job");
    }
    let (ok, without) = helm(&[
        "template",
        "xin",
        "--namespace",
        "xin-system",
        "--kube-version",
        "v1.37.2",
        "--set",
        "smokeTest.enabled=false",
    ]);
    assert!(ok && !without.contains("helm.sh/hook: test"), "{without}");
}

#[test]
fn chart_installs_and_its_cluster_role_is_enough_for_the_operator() {
    install_crds();
    let release = unique_name("chart");
    let ns = TestNamespace::create("xin-chart");
    // The chart's cluster-scoped RBAC, deleted after the operator that uses it has stopped.
    let sa = format!("{release}-operator");
    let _cluster_scoped = DeleteOnDrop::new(&[
        &format!("clusterrole/{sa}"),
        &format!("clusterrole/{sa}-tenant"),
        &format!("clusterrolebinding/{sa}"),
        &format!("validatingadmissionpolicy/{sa}-limits"),
        &format!("validatingadmissionpolicybinding/{sa}-limits"),
    ]);
    let (ok, manifest) = helm(&[
        "template",
        &release,
        "--namespace",
        &ns.name,
        "--kube-version",
        "v1.37.2",
    ]);
    assert!(ok, "{manifest}");
    let run = kubectl_stdin(
        &["apply", "--server-side", "-n", &ns.name, "-f", "-"],
        Some(&manifest),
    );
    assert!(
        run.ok,
        "installing the rendered chart failed: {}",
        run.stderr
    );
    wait_until(
        "the operator Deployment to be available",
        2 * MINUTE,
        || {
            let d = get_json(&["deployment", &sa, "-n", &ns.name]).ok_or("missing")?;
            match d
                .pointer("/status/availableReplicas")
                .and_then(Value::as_i64)
            {
                Some(n) if n >= 1 => Ok(()),
                other => Err(format!("available {other:?}")),
            }
        },
    );

    // Run the operator with exactly the chart's permissions.
    let token = kubectl_ok(&["create", "token", &sa, "-n", &ns.name, "--duration=1h"]);
    let admin = std::fs::read_to_string(std::env::var("KUBECONFIG").unwrap()).unwrap();
    let field = |k: &str| {
        admin
            .lines()
            .find_map(|l| l.trim().strip_prefix(k))
            .unwrap()
            .trim()
            .to_string()
    };
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: '{}', certificate-authority: '{}'}}\n\
         users:\n- name: u\n  user: {{token: '{}'}}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n",
        field("server:"),
        field("certificate-authority:"),
        token.trim()
    );
    let dir = xin_e2e::operator::repo_root().join("target/e2e-logs");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{release}.kubeconfig"));
    std::fs::write(&path, kubeconfig).unwrap();
    // The settings the chart's Deployment gives the operator about itself.
    let access_role = format!("{sa}-tenant");
    for env in [
        format!(r#"{{name: XIN_OPERATOR_SERVICE_ACCOUNT, value: "{sa}"}}"#),
        format!(r#"{{name: XIN_TENANT_ACCESS_CLUSTER_ROLE, value: "{access_role}"}}"#),
    ] {
        assert!(manifest.contains(&env), "{env} not rendered");
    }
    let _op = OperatorProcess::start(
        OPERATOR,
        &[
            ("KUBECONFIG", path.to_str().unwrap()),
            ("XIN_LEADER_ELECT", "true"),
            ("XIN_LEASE_NAMESPACE", ns.name.as_str()),
            ("XIN_LEASE_NAME", release.as_str()),
            ("XIN_OPERATOR_NAMESPACE", ns.name.as_str()),
            ("XIN_OPERATOR_SERVICE_ACCOUNT", sa.as_str()),
            ("XIN_TENANT_ACCESS_CLUSTER_ROLE", access_role.as_str()),
        ],
    );
    // kubectl as the operator: what the chart's RBAC and admission policy let it do.
    let as_operator = |args: &[&str]| -> (bool, String) {
        outcome(
            Command::new("kubectl")
                .args(args)
                .env("KUBECONFIG", &path)
                .output()
                .expect("kubectl"),
        )
    };
    let can = |args: &[&str]| {
        let mut full = vec!["auth", "can-i"];
        full.extend(args);
        as_operator(&full).1.trim() == "yes"
    };
    let t = TestTenant::create("rbac", "");
    apply(&t.telegram_secret("tg"));
    apply(&t.channel("bot", "tg"));
    apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: faq, namespace: {ns}}}\ndata: {{a.md: '# A'}}\n---\n\
         apiVersion: xin.dev/v1alpha1\nkind: IngestionJob\nmetadata: {{name: faq, namespace: {ns}}}\nspec: {{source: {{configMap: {{name: faq}}}}}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: hook, namespace: {ns}}}\nstringData: {{k: signing-key}}\n---\n\
         apiVersion: xin.dev/v1alpha1\nkind: AutomationRule\nmetadata: {{name: r, namespace: {ns}}}\nspec:\n  trigger: {{event: {{types: [MessageReceived]}}}}\n  \
           action: {{webhook: {{url: 'https://h.example', signingSecretRef: {{name: hook, key: k}}}}}}\n",
        ns = t.ns
    ));
    ready("tenant", &t.name, "");
    ready("channel", "bot", &t.ns);
    ready("automationrule", "r", &t.ns);
    // The worker reads the ConfigMap and reports with the Role the operator granted it.
    ingest(&t.ns, "faq");
    // Including `get` on the Secret the rule names: the operator holds that right in the
    // tenant namespace, so RBAC lets it grant it.
    wait_until("the automation worker's Role", MINUTE, || {
        let role = get_json(&["role", "xin-automation", "-n", &t.ns]).ok_or("no Role")?;
        let named = role["rules"].as_array().into_iter().flatten().any(|r| {
            r["resources"] == serde_json::json!(["secrets"])
                && r["resourceNames"] == serde_json::json!(["hook"])
        });
        if named {
            Ok(())
        } else {
            Err(role["rules"].to_string())
        }
    });

    // Its Secret rights are its tenant namespaces' only, through the RoleBinding it made there.
    let binding = get_json(&["rolebinding", "xin-operator-access", "-n", &t.ns])
        .expect("the operator's RoleBinding in the tenant namespace");
    assert_eq!(str_at(&binding, "/roleRef/name"), access_role);
    assert!(can(&["get", "secrets", "-n", &t.ns]));
    assert!(can(&["delete", "secrets", "-n", &t.ns]));
    for (verb, ns) in [
        ("get", "kube-system"),
        ("list", "default"),
        ("create", "default"),
        ("delete", ns.name.as_str()),
    ] {
        assert!(!can(&[verb, "secrets", "-n", ns]), "{verb} secrets in {ns}");
    }
    assert!(!can(&["list", "secrets", "--all-namespaces"]));
    assert!(
        !can(&["delete", "namespaces"]),
        "no namespace deletes cluster-wide"
    );
    let (ok, out) = as_operator(&["get", "secrets", "-n", "kube-system"]);
    assert!(!ok && out.contains("forbidden"), "{out}");
    // What RBAC allows but the admission policy refuses: binding its tenant role, or writing
    // a namespace, outside the tenant namespaces (server-side dry runs, admitted or refused
    // exactly like the real thing, and harmless if a check were missing).
    for target in ["default", "kube-system", ns.name.as_str()] {
        let (ok, out) = as_operator(&[
            "create",
            "rolebinding",
            "grab",
            "-n",
            target,
            &format!("--clusterrole={access_role}"),
            &format!("--serviceaccount={}:{sa}", ns.name),
            "--dry-run=server",
        ]);
        assert!(
            !ok && out.contains("only in tenant namespaces"),
            "binding its role in {target}: {out}"
        );
    }
    // In a tenant namespace the policy lets it bind only what RBAC lets it: not `admin`.
    let (ok, out) = as_operator(&[
        "create",
        "rolebinding",
        "grab",
        "-n",
        &t.ns,
        "--clusterrole=admin",
        &format!("--serviceaccount={}:{sa}", ns.name),
        "--dry-run=server",
    ]);
    assert!(!ok && out.contains("forbidden"), "binding admin: {out}");
    let (ok, out) = as_operator(&["delete", "namespace", "default", "--dry-run=server"]);
    assert!(
        !ok && out.contains("forbidden"),
        "deleting namespace default: {out}"
    );
    for args in [
        vec!["create", "namespace", "kube-grab", "--dry-run=server"],
        vec![
            "label",
            "namespace",
            "default",
            "grab=1",
            "--dry-run=server",
        ],
    ] {
        let (ok, out) = as_operator(&args);
        assert!(
            !ok && out.contains("only in tenant namespaces"),
            "{args:?}: {out}"
        );
    }

    // Deleting the Tenant (finalizer, namespace deletion) works with these permissions too.
    kubectl_ok(&["delete", "tenant", &t.name, "--wait=false"]);
    wait_until("the Tenant to go", 2 * MINUTE, || {
        match get_json(&["tenant", &t.name]) {
            None => Ok(()),
            Some(o) => Err(o["status"]["conditions"].to_string()),
        }
    });
}

use xin_e2e::operator::install_crds;

/// The Prometheus Operator's own CRDs (from its Go module, `cluster.sh build-tools
/// prometheus-operator-crds`), installed in the test cluster, accept the ServiceMonitor,
/// PodMonitor and PrometheusRule the chart renders (server-side dry run, strict field
/// validation), and refuse a misspelt field (so the check has teeth). The CRDs stay installed:
/// they change nothing for the other tests, which render the chart client-side.
#[test]
fn the_monitors_and_rules_fit_the_prometheus_operators_crds() {
    let paths = Command::new(xin_e2e::operator::repo_root().join("e2e/observability.sh"))
        .arg("crds")
        .output()
        .expect("e2e/observability.sh crds");
    let paths = String::from_utf8_lossy(&paths.stdout).to_string();
    let crds = paths
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("crds="))
        .unwrap_or_else(|| panic!("no crds= from e2e/observability.sh crds: {paths}"));
    for kind in ["servicemonitors", "podmonitors", "prometheusrules"] {
        let file = format!("{crds}/monitoring.coreos.com_{kind}.yaml");
        kubectl_ok(&["apply", "--server-side", "--force-conflicts", "-f", &file]);
        xin_e2e::wait_crds_established(&[&format!("{kind}.monitoring.coreos.com")]);
    }
    let ns = TestNamespace::create("xin-monitors");
    let (ok, manifest) = helm(&[
        "template",
        "xin",
        "--namespace",
        &ns.name,
        "--kube-version",
        "v1.37.2",
        "--api-versions",
        "monitoring.coreos.com/v1/ServiceMonitor",
        "--api-versions",
        "monitoring.coreos.com/v1/PodMonitor",
        "--api-versions",
        "monitoring.coreos.com/v1/PrometheusRule",
    ]);
    assert!(ok, "{manifest}");
    let monitors: Vec<&str> = manifest
        .split("\n---")
        .filter(|d| {
            ["ServiceMonitor", "PodMonitor", "PrometheusRule"]
                .iter()
                .any(|k| d.contains(&format!("\nkind: {k}\n")))
        })
        .collect();
    assert_eq!(monitors.len(), 3, "{manifest}");
    let dry_run = |docs: &str| {
        kubectl_stdin(
            &[
                "apply",
                "--server-side",
                "--dry-run=server",
                "--validate=strict",
                "-n",
                &ns.name,
                "-f",
                "-",
            ],
            Some(docs),
        )
    };
    let run = dry_run(&monitors.join("\n---"));
    assert!(
        run.ok,
        "the CRDs refused the chart's objects: {}",
        run.stderr
    );
    for kind in ["servicemonitor", "podmonitor", "prometheusrule"] {
        assert!(run.stdout.contains(kind), "{}", run.stdout);
    }
    let typo = monitors
        .iter()
        .find(|d| d.contains("kind: PodMonitor"))
        .unwrap()
        .replace("podMetricsEndpoints:", "podMetricEndpoints:");
    let run = dry_run(&typo);
    assert!(
        !run.ok && run.stderr.contains("podMetricEndpoints"),
        "a misspelt field must be refused: {} {}",
        run.stdout,
        run.stderr
    );
}
