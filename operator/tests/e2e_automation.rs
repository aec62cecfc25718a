//! The example AutomationRules through the operator: it validates them (templates included),
//! runs the automation worker with a Role that reads exactly the Secrets they name, and the
//! real `xin-automation` binary — with the environment and service account the operator
//! rendered — runs them (their URLs pointed at local stand-ins) and reports in their status;
//! the event rule fires on a handoff the real orchestrator records.

mod common;

use std::sync::OnceLock;

use common::*;
use serde_json::json;
use xin_e2e::local::{
    Overrides, automation_env, orchestrator_env, orchestrator_post, service_account_kubeconfig,
};
use xin_e2e::workload::{Answer, StandIn, Workload, free_port};

/// One operator for the file; the stand-ins listen on loopback, which the platform allows
/// here (`XIN_OUTBOUND_ALLOW`), as a platform team would allow an on-premises receiver.
fn operator() -> &'static OperatorProcess {
    static OP: OnceLock<OperatorProcess> = OnceLock::new();
    OP.get_or_init(|| OperatorProcess::start(OPERATOR, &[("XIN_OUTBOUND_ALLOW", "127.0.0.1/32")]))
}

fn patch_rule(name: &str, patch: serde_json::Value) {
    kubectl_ok(&[
        "patch",
        "automationrule",
        name,
        "-n",
        "xin-acme",
        "--type=merge",
        "-p",
        &patch.to_string(),
    ]);
}

#[tokio::test(flavor = "multi_thread")]
async fn example_rules_run_through_the_rendered_worker_and_report_in_their_status() {
    operator();
    let _examples = Examples::apply();
    let hook = StandIn::start(|_| Answer::json(200, json!({})));
    let crm = StandIn::start(|_| Answer::json(201, json!({"ticket": "T-1"})));
    // The examples' receivers are made-up hosts: point the rules at the stand-ins.
    patch_rule(
        "weekday-digest",
        json!({"spec": {"action": {"webhook": {"url": format!("{}/digest", hook.url())}}}}),
    );
    patch_rule(
        "handoff-to-crm",
        json!({"spec": {"action": {"crm": {"endpoint": format!("{}/api/tickets", crm.url())}}}}),
    );
    for r in ["weekday-digest", "handoff-to-crm"] {
        wait_condition("automationrule", r, "xin-acme", "Ready", "True", MINUTE);
    }
    // The worker's Role reads exactly the Secret the rules name.
    wait_until(
        "the worker's Role to name the rules' Secret",
        MINUTE,
        || {
            let role =
                get_json(&["role", "xin-automation", "-n", "xin-acme"]).ok_or("no Role yet")?;
            let secrets: Vec<_> = role["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| r["resources"] == json!(["secrets"]))
                .cloned()
                .collect();
            if secrets
                == [
                    json!({"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["acme-automation"], "verbs": ["get"]}),
                ]
            {
                Ok(())
            } else {
                Err(role["rules"].to_string())
            }
        },
    );

    // The worker as its Deployment is configured, with its service account.
    let a = automation_env("xin-acme", None, Some("127.0.0.1/32")).unwrap();
    let (mut env, ready) = (a.env, a.http);
    let dir = std::env::temp_dir().join(format!("xin-automation-e2e-{}", std::process::id()));
    let kubeconfig = service_account_kubeconfig("xin-acme", "xin-automation", &dir).unwrap();
    env.push(("KUBECONFIG".into(), kubeconfig.display().to_string()));
    let denied = kubectl(&[
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "get",
        "secret",
        "xin-database",
        "-n",
        "xin-acme",
    ]);
    assert!(
        !denied.ok && denied.stderr.contains("forbidden"),
        "{denied:?}"
    );
    let mut worker = Workload::start("xin-automation", "automation-e2e", &env);
    worker.wait_ready(&ready, "/ready");

    // The scheduled rule, run now: signed with the key of the Secret it names.
    kubectl_ok(&[
        "annotate",
        "automationrule",
        "weekday-digest",
        "-n",
        "xin-acme",
        "xin.dev/run-now=e2e",
        "--overwrite",
    ]);
    let got = hook.wait_for("the digest webhook", MINUTE, |r| !r.is_empty());
    let key = secret_value("xin-acme", "acme-automation", "signingKey").unwrap();
    let ts = got[0].header("x-xin-timestamp").unwrap();
    let want = {
        use hmac::{Hmac, KeyInit, Mac};
        let mut m = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
        m.update(format!("{ts}.").as_bytes());
        m.update(&got[0].body);
        format!("sha256={}", hex::encode(m.finalize().into_bytes()))
    };
    assert_eq!(got[0].header("x-xin-signature-256"), Some(want.as_str()));
    let rule = wait_until("the digest's run in its status", MINUTE, || {
        let r = get_json(&["automationrule", "weekday-digest", "-n", "xin-acme"]).unwrap();
        if r["status"]["succeeded"] == 1 {
            Ok(r)
        } else {
            Err(r["status"].to_string())
        }
    });
    let s = &rule["status"];
    assert_eq!(s["recentRuns"][0]["state"], "Succeeded");
    assert!(
        s["lastRunTime"].is_string() && s["nextRunTime"].is_string(),
        "{s}"
    );
    // The operator's conditions stand beside the worker's fields.
    assert_eq!(condition_status(&rule, "Ready"), Some("True"));
    let columns = kubectl_ok(&["get", "automationrules", "-n", "xin-acme"]);
    assert!(
        columns.contains("LAST RUN") && columns.contains("NEXT RUN"),
        "{columns}"
    );

    // The event rule: a handoff the orchestrator (run as rendered) records on a web conversation.
    let o = Overrides {
        database_url: None,
        gateway_port: free_port(),
        gateway_metrics_port: free_port(),
        orchestrator_port: free_port(),
        orchestrator_metrics_port: free_port(),
        routes_file: std::path::PathBuf::from("/nonexistent"),
        llm_endpoint: None,
        embedding_endpoint: None,
        telegram_api_base: hook.url(),
        meta_graph_api_base: hook.url(),
    };
    let addr = format!("127.0.0.1:{}", o.orchestrator_port);
    let mut orch = Workload::start(
        "xin-orchestrator",
        "automation-orchestrator",
        &orchestrator_env("xin-acme", &o).unwrap(),
    );
    orch.wait_ready(&addr, "/ready");
    let signing = secret_value("xin-acme", "xin-tenant-signing", "key").unwrap();
    let conv = orchestrator_post(
        &addr,
        &signing,
        "/v1/conversations",
        &json!({"channel": "web", "external_user": "e2e-1"}),
    );
    let id = conv["id"].as_str().unwrap().to_string();
    let text = "I need a human, \"now\" {\"urgent\": true}";
    orchestrator_post(
        &addr,
        &signing,
        &format!("/v1/conversations/{id}/messages"),
        &json!({"text": text}),
    );
    let tickets = crm.wait_for("the CRM ticket", MINUTE, |r| !r.is_empty());
    let body = tickets[0].json();
    assert_eq!(
        body,
        json!({"subject": format!("Handoff {id}"), "text": text, "channel": "web"})
    );
    let token = secret_value("xin-acme", "acme-automation", "crmToken").unwrap();
    assert_eq!(
        tickets[0].header("authorization"),
        Some(format!("Bearer {token}").as_str())
    );
    wait_until("the handoff rule's run in its status", MINUTE, || {
        let r = get_json(&["automationrule", "handoff-to-crm", "-n", "xin-acme"]).unwrap();
        if r["status"]["succeeded"] == 1 && r["status"]["recentRuns"][0]["trigger"] == "Event" {
            Ok(())
        } else {
            Err(r["status"].to_string())
        }
    });
    assert!(
        worker.terminate(),
        "the worker exits cleanly on SIGTERM:\n{}",
        worker.logs()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A template in the old quoted form is refused with the reason, before any run.
#[test]
fn a_template_that_does_not_render_json_is_reported() {
    operator();
    let t = TestTenant::create("auto-tpl", "");
    ready("tenant", &t.name, "");
    apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: crm, namespace: {ns}}}\nstringData: {{token: t}}\n---\n\
         apiVersion: xin.dev/v1alpha1\nkind: AutomationRule\nmetadata: {{name: quoted, namespace: {ns}}}\n\
         spec:\n  trigger: {{event: {{types: [MessageReceived]}}}}\n  action:\n    crm:\n      \
           endpoint: https://crm.example/api\n      authSecretRef: {{name: crm, key: token}}\n      \
           bodyTemplate: '{{\"text\": \"{{{{ message.text }}}}\"}}'\n",
        ns = t.ns
    ));
    let r = wait_condition("automationrule", "quoted", &t.ns, "Ready", "False", MINUTE);
    assert_eq!(condition_reason(&r, "Ready"), "InvalidTemplate");
    let msg = condition_message(&r, "Ready");
    assert!(
        msg.starts_with("spec.action.crm.bodyTemplate does not render valid JSON"),
        "{msg}"
    );
    // Fixed in place: Ready.
    kubectl_ok(&[
        "patch",
        "automationrule",
        "quoted",
        "-n",
        &t.ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"action":{"crm":{"bodyTemplate":"{\"text\": {{ message.text }}}"}}}}"#,
    ]);
    wait_condition("automationrule", "quoted", &t.ns, "Ready", "True", MINUTE);
}
