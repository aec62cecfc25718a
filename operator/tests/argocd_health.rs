//! The Argo CD health check (charts/xin/argocd/health.lua), run in a real Lua interpreter on
//! objects as the operator wrote them: a Tenant and a Channel are driven through Progressing,
//! Degraded, Healthy and Suspended on the local control plane, read back with kubectl, and
//! each is given to the script exactly as Argo CD would see it.

mod common;

use std::sync::OnceLock;

use common::*;
use mlua::{Lua, LuaSerdeExt};

fn operator() -> &'static OperatorProcess {
    static OP: OnceLock<OperatorProcess> = OnceLock::new();
    OP.get_or_init(|| OperatorProcess::start(OPERATOR, &[]))
}

/// `(status, message)` the health check gives `obj`.
fn health(obj: &Value) -> (String, String) {
    let script = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/xin/argocd/health.lua"
    ))
    .unwrap();
    let lua = Lua::new();
    lua.globals()
        .set("obj", lua.to_value(obj).unwrap())
        .unwrap();
    let hs: mlua::Table = lua
        .load(format!("return (function()\n{script}\nend)()"))
        .eval()
        .unwrap();
    (hs.get("status").unwrap(), hs.get("message").unwrap())
}

/// The message of condition `type_`.
/// Waits until `kind/name` has reconciled its current generation and its `Ready` condition
/// has `reason`; returns the object.
fn settled(kind: &str, name: &str, ns: &str, reason: &str) -> Value {
    let mut args = vec![kind, name];
    if !ns.is_empty() {
        args.extend(["-n", ns]);
    }
    wait_until(
        &format!("{kind} {ns}/{name} Ready reason {reason}"),
        2 * MINUTE,
        || {
            let o = get_json(&args).ok_or("not found")?;
            let generation = o.pointer("/metadata/generation").and_then(Value::as_i64);
            let seen = o
                .pointer("/status/observedGeneration")
                .and_then(Value::as_i64);
            if generation.is_some() && seen == generation && condition_reason(&o, "Ready") == reason
            {
                Ok(o)
            } else {
                Err(format!(
                    "generation {generation:?}, observed {seen:?}, conditions {}",
                    o.pointer("/status/conditions").unwrap_or(&Value::Null)
                ))
            }
        },
    )
}

#[test]
fn the_health_check_reads_the_objects_the_operator_writes() {
    operator();
    // A ResourceQuota of zero pods keeps the orchestrator from ever becoming available, so the
    // Tenant stays Reconciling until the quota is removed.
    let t = TestTenant::create_with_objects("health", "", |ns| {
        format!(
            "apiVersion: v1\nkind: ResourceQuota\nmetadata: {{name: no-pods, namespace: {ns}}}\nspec: {{hard: {{pods: '0'}}}}\n---\n"
        )
    });

    let progressing = wait_until(
        "the Tenant to wait for its orchestrator",
        2 * MINUTE,
        || {
            let o = get_json(&["tenant", &t.name]).ok_or("not found")?;
            let waiting = condition_status(&o, "Reconciling") == Some("True")
                && condition_message(&o, "Reconciling").contains("xin-orchestrator");
            if waiting {
                Ok(o)
            } else {
                Err(format!(
                    "conditions {}",
                    o.pointer("/status/conditions").unwrap_or(&Value::Null)
                ))
            }
        },
    );
    assert_eq!(
        health(&progressing),
        (
            "Progressing".into(),
            condition_message(&progressing, "Reconciling")
        ),
        "{progressing}"
    );

    kubectl_ok(&["delete", "resourcequota", "no-pods", "-n", &t.ns]);
    let healthy = settled("tenant", &t.name, "", "Reconciled");
    let (status, message) = health(&healthy);
    assert_eq!(status, "Healthy", "{healthy}");
    assert_eq!(message, condition_message(&healthy, "Ready"));
    assert!(message.contains("served"), "{message}");

    // The same object just edited, before the operator has looked at the new generation, and
    // before it has written any status at all.
    let mut edited = healthy.clone();
    let generation = healthy["metadata"]["generation"].as_i64().unwrap();
    edited["metadata"]["generation"] = (generation + 1).into();
    assert_eq!(
        health(&edited),
        (
            "Progressing".into(),
            format!(
                "Waiting for the Xin operator to observe generation {}",
                generation + 1
            )
        )
    );
    let mut fresh = healthy.clone();
    fresh.as_object_mut().unwrap().remove("status");
    assert_eq!(health(&fresh).0, "Progressing");

    // A Channel whose bot-token Secret is missing is stalled: Degraded, with reason and message.
    apply(&t.channel("bot", "tg"));
    let stalled = wait_condition("channel", "bot", &t.ns, "Stalled", "True", MINUTE);
    let (status, message) = health(&stalled);
    assert_eq!(status, "Degraded", "{stalled}");
    assert_eq!(
        message,
        format!("SecretNotFound: {}", condition_message(&stalled, "Stalled"))
    );
    assert!(message.contains("tg"), "names the Secret: {message}");

    // Once the Secret exists, Healthy.
    apply(&t.telegram_secret("tg"));
    let ready_channel = settled("channel", "bot", &t.ns, "Reconciled");
    assert_eq!(
        health(&ready_channel),
        ("Healthy".into(), condition_message(&ready_channel, "Ready"))
    );

    // A suspended Tenant is Suspended, not Healthy.
    patch_tenant(&t.name, r#"{"spec":{"suspend":true}}"#);
    let suspended = settled("tenant", &t.name, "", "Suspended");
    assert_eq!(health(&suspended).0, "Suspended", "{suspended}");
}
