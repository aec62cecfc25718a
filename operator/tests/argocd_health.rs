//! The Argo CD health check (charts/xin/argocd/health.lua) run against objects as the
//! operator writes them, in a real Lua interpreter.

use mlua::{Lua, LuaSerdeExt};
use serde_json::{Value, json};

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

fn obj(generation: i64, observed: Option<i64>, conds: &[(&str, &str, &str, &str)]) -> Value {
    let conditions: Vec<Value> = conds
        .iter()
        .map(|(t, s, r, m)| json!({"type": t, "status": s, "reason": r, "message": m}))
        .collect();
    let mut status = json!({"conditions": conditions});
    if let Some(o) = observed {
        status["observedGeneration"] = json!(o);
    }
    json!({"metadata": {"generation": generation}, "status": status})
}

#[test]
fn ready_is_healthy() {
    let o = obj(
        2,
        Some(2),
        &[
            ("Ready", "True", "Reconciled", "2 channel(s) served"),
            ("Stalled", "False", "Reconciled", ""),
            ("Reconciling", "False", "Reconciled", ""),
        ],
    );
    assert_eq!(health(&o), ("Healthy".into(), "2 channel(s) served".into()));
}

#[test]
fn stalled_is_degraded_with_the_reason() {
    let o = obj(
        1,
        Some(1),
        &[
            ("Ready", "False", "SecretNotFound", "Secret x/y not found"),
            ("Stalled", "True", "SecretNotFound", "Secret x/y not found"),
        ],
    );
    assert_eq!(
        health(&o),
        (
            "Degraded".into(),
            "SecretNotFound: Secret x/y not found".into()
        )
    );
}

#[test]
fn reconciling_is_progressing() {
    let o = obj(
        1,
        Some(1),
        &[
            ("Ready", "False", "Progressing", "waiting"),
            (
                "Reconciling",
                "True",
                "Progressing",
                "waiting for xin-gateway",
            ),
        ],
    );
    assert_eq!(
        health(&o),
        ("Progressing".into(), "waiting for xin-gateway".into())
    );
}

#[test]
fn an_unobserved_generation_is_progressing_even_if_ready() {
    let o = obj(3, Some(2), &[("Ready", "True", "Reconciled", "")]);
    assert_eq!(health(&o).0, "Progressing");
    assert_eq!(
        health(&json!({"metadata": {"generation": 1}})).0,
        "Progressing"
    );
}

#[test]
fn suspended_is_suspended() {
    let o = obj(
        1,
        Some(1),
        &[(
            "Ready",
            "True",
            "Suspended",
            "suspended: workloads are scaled to zero",
        )],
    );
    assert_eq!(health(&o).0, "Suspended");
}
