//! The operator killed mid-reconcile (SIGKILL, holding the leader Lease) and restarted:
//! the new process waits for the Lease, then converges without duplicates or new keys.

mod common;

use common::*;

#[test]
fn killed_mid_reconcile_and_restarted_converges_without_duplicates() {
    let lease = unique_name("xin-restart");
    let env = [
        ("XIN_LEADER_ELECT", "true"),
        ("XIN_LEASE_NAME", lease.as_str()),
    ];
    // Held by the operators: deleted once they are gone.
    let _lease = DeleteOnDrop::new(&["lease", &lease, "-n", "xin-system"]);
    let mut first = OperatorProcess::start(OPERATOR, &env);
    // Declared before the Tenant so it is dropped after it (locals drop in reverse order): the
    // restarted operator must still run when the Tenant's drop deletes it, or nothing would
    // remove its finalizer.
    let mut second_slot = None;
    let t = TestTenant::create("restart", "");
    apply(&t.telegram_secret("tg"));
    apply(&t.channel("bot", "tg"));
    apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: faq, namespace: {ns}}}\ndata: {{a.md: '# A'}}\n---\n\
         apiVersion: xin.dev/v1alpha1\nkind: IngestionJob\nmetadata: {{name: faq, namespace: {ns}}}\nspec: {{source: {{configMap: {{name: faq}}}}}}\n",
        ns = t.ns
    ));

    // Kill as soon as the first children appear: the reconcile is under way.
    wait_until("the first children", MINUTE, || {
        get_json(&["serviceaccount", "xin-orchestrator", "-n", &t.ns])
            .map(|_| ())
            .ok_or_else(|| "none yet".to_string())
    });
    first.kill();
    assert!(!first.is_running());
    let signing_before = secret_value(&t.ns, "xin-tenant-signing", "key");
    let webhook_before = secret_value(&t.ns, "bot-webhook", "current");

    let second: &OperatorProcess = second_slot.insert(OperatorProcess::start(OPERATOR, &env));
    // The killed leader never released the Lease: the new process takes it once it expires.
    let holder = wait_until("the new process to hold the Lease", MINUTE, || {
        let l = get_json(&["lease", &lease, "-n", "xin-system"]).ok_or("no lease")?;
        let h = str_at(&l, "/spec/holderIdentity").to_string();
        if !h.is_empty() && h.ends_with(&format!("-{}", second_pid(second))) {
            Ok(h)
        } else {
            Err(h)
        }
    });
    assert!(!holder.is_empty());
    ready("tenant", &t.name, "");
    ready("channel", "bot", &t.ns);
    // The worker reads the ConfigMap and reports with the Role the operator granted it.
    ingest(&t.ns, "faq");

    // No duplicates: one Job, one ReplicaSet per Deployment, keys generated once.
    let jobs = get_json(&["jobs", "-n", &t.ns]).unwrap();
    assert_eq!(
        jobs["items"].as_array().unwrap().len(),
        1,
        "exactly one ingestion Job"
    );
    for c in ["orchestrator", "gateway"] {
        let rs = get_json(&[
            "replicasets",
            "-n",
            &t.ns,
            "-l",
            &format!("app.kubernetes.io/component={c}"),
        ])
        .unwrap();
        assert_eq!(
            rs["items"].as_array().unwrap().len(),
            1,
            "{c}: a second ReplicaSet means a needless rollout"
        );
    }
    if let Some(k) = signing_before {
        assert_eq!(
            secret_value(&t.ns, "xin-tenant-signing", "key"),
            Some(k),
            "the signing key must survive the restart"
        );
    }
    if let Some(k) = webhook_before {
        assert_eq!(
            secret_value(&t.ns, "bot-webhook", "current"),
            Some(k),
            "the webhook key must survive the restart"
        );
    }
}

fn second_pid(op: &OperatorProcess) -> String {
    // The identity is xin-operator-<pid>; the pid is in the log file name's sibling: ask /proc.
    let log = op.log.to_string_lossy().to_string();
    let port = log
        .rsplit('-')
        .next()
        .unwrap()
        .trim_end_matches(".log")
        .to_string();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("for p in /proc/[0-9]*; do tr '\\0' '\\n' < $p/environ 2>/dev/null | grep -qx 'XIN_METRICS_ADDR=127.0.0.1:{port}' && basename $p; done"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}
