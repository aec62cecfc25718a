//! The operator renders the workloads' configuration; the real `xin-gateway` and
//! `xin-orchestrator` binaries then run as local processes with exactly that configuration
//! (addresses and external endpoints aside: see `xin_e2e::local`) against a real PostgreSQL,
//! and a Telegram update and a widget message are answered.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use serde_json::json;
use xin_e2e::local::{Overrides, gateway_env, orchestrator_env, rendered_env, write_routes};
use xin_e2e::workload::{Answer, StandIn, Workload, free_port};

/// One operator process serves every test of this file (two would fight over the objects).
/// Like `make demo`'s, it allows loopback destinations: `xin-demo-messages` points the example
/// AutomationRules at receivers on loopback.
fn operator() -> &'static OperatorProcess {
    static OP: OnceLock<OperatorProcess> = OnceLock::new();
    OP.get_or_init(|| OperatorProcess::start(OPERATOR, &[("XIN_OUTBOUND_ALLOW", "127.0.0.1/32")]))
}

#[tokio::test(flavor = "multi_thread")]
async fn workloads_run_with_the_configuration_the_operator_rendered() {
    operator();
    let t = TestTenant::create(
        "wire",
        "  llm: {endpoint: 'https://llm.example.com', model: primary, fallbackModel: backup, timeoutSeconds: 5}\n  \
           retrieval: {hybridWeight: 0.3, minScore: 0.1, maxDocuments: 3, contextBudgetTokens: 1500}\n",
    );
    let ns = t.ns.clone();
    apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: bot, namespace: {ns}}}\nstringData: {{token: '42:wired-bot-token'}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: site, namespace: {ns}}}\nstringData: {{identity: wired-site-secret}}\n---\n\
         apiVersion: xin.dev/v1alpha1\nkind: Channel\nmetadata: {{name: tg, namespace: {ns}}}\n\
         spec: {{type: telegram, displayName: tg, telegram: {{botTokenSecretRef: {{name: bot, key: token}}}}}}\n---\n\
         apiVersion: xin.dev/v1alpha1\nkind: Channel\nmetadata: {{name: web, namespace: {ns}}}\n\
         spec: {{type: web, displayName: web, web: {{allowedOrigins: ['https://shop.example'], identitySecretRef: {{name: site, key: identity}}}}}}\n"
    ));
    let tenant = ready("tenant", &t.name, "");
    ready("channel", "tg", &ns);
    ready("channel", "web", &ns);

    // What the operator rendered, before any local override.
    let rendered = rendered_env(&ns, "xin-orchestrator").unwrap();
    let get = |k: &str| {
        rendered
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    // The database the operator provisioned and migrated, reached as its runtime role.
    let db = get("DATABASE_URL").expect("DATABASE_URL is rendered");
    assert_eq!(
        secret_value(&ns, "xin-database", "url").as_deref(),
        Some(db.as_str()),
        "DATABASE_URL comes from the Secret the operator wrote"
    );
    let uid = str_at(&tenant, "/metadata/uid").replace('-', "");
    assert!(
        db.starts_with(&format!("postgres://xin_{uid}_app:"))
            && db.ends_with(&format!("/xin_{uid}")),
        "the runtime role of the Tenant's own database, named by its uid"
    );
    assert_eq!(str_at(&tenant, "/status/database/mode"), "Managed");
    assert_eq!(
        tenant
            .pointer("/status/database/schemaVersion")
            .and_then(|v| v.as_i64()),
        Some(xin_store::schema_version())
    );
    assert!(
        !tenant.to_string().contains(db.split('@').next().unwrap()),
        "no password in status"
    );
    assert_eq!(get("XIN_TENANT"), Some(t.name.clone()));
    assert_eq!(get("RETRIEVAL_MAX_DOCUMENTS").as_deref(), Some("3"));
    assert_eq!(get("LLM_FALLBACK_MODEL").as_deref(), Some("backup"));
    let signing = get("TENANT_SIGNING_KEY").expect("the signing key is rendered");
    let gw_rendered = rendered_env(&ns, "xin-gateway").unwrap();
    assert!(
        gw_rendered.contains(&("TENANT_SIGNING_KEY".into(), signing)),
        "gateway and orchestrator share the key"
    );

    // The local run: the LLM answers only for the fallback model (the primary is "down").
    let llm = StandIn::start(|r| {
        if r.json()["model"] == "backup" {
            Answer::json(
                200,
                json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "Returns: 30 days."}}]}),
            )
        } else {
            Answer::json(503, json!({"error": "overloaded"}))
        }
    });
    let telegram = StandIn::start(|_| Answer::json(200, json!({"ok": true})));
    // Holds the routes file; removed when the test ends (passed or failed).
    let dir = tempfile::Builder::new()
        .prefix(&format!("xin-wiring-{}-", t.name))
        .tempdir()
        .unwrap();
    let o = Overrides {
        database_url: None,
        gateway_port: free_port(),
        gateway_metrics_port: free_port(),
        orchestrator_port: free_port(),
        orchestrator_metrics_port: free_port(),
        routes_file: write_routes(&ns, dir.path()).unwrap(),
        llm_endpoint: Some(llm.url()),
        embedding_endpoint: None,
        telegram_api_base: telegram.url(),
        meta_graph_api_base: telegram.url(),
    };
    let orch_addr = format!("127.0.0.1:{}", o.orchestrator_port);
    let gw_addr = format!("127.0.0.1:{}", o.gateway_port);
    let mut orch = Workload::start(
        "xin-orchestrator",
        "wired-orchestrator",
        &orchestrator_env(&ns, &o).unwrap(),
    );
    orch.wait_ready(&orch_addr, "/ready");
    let mut gw = Workload::start(
        "xin-gateway",
        "wired-gateway",
        &gateway_env(&ns, &o).unwrap(),
    );
    gw.wait_ready(&gw_addr, "/ready");

    // Telegram, with the webhook key the operator generated.
    let key = secret_value(&ns, "tg-webhook", "current").expect("webhook key");
    let update = json!({"update_id": 1, "message": {"message_id": 1, "date": 1, "chat": {"id": 77, "type": "private"}, "text": "returns?"}});
    let r = http(
        &gw_addr,
        "POST",
        "/webhooks/tg",
        &[("X-Telegram-Bot-Api-Secret-Token", key.as_str())],
        update.to_string().as_bytes(),
    )
    .expect("gateway reachable");
    assert_eq!(r.status, 200, "{}", r.body);
    let wrong = http(
        &gw_addr,
        "POST",
        "/webhooks/tg",
        &[("X-Telegram-Bot-Api-Secret-Token", "nope")],
        b"{}",
    )
    .unwrap();
    assert_eq!(wrong.status, 403);
    let sent = telegram.wait_for("sendMessage", Duration::from_secs(30), |r| !r.is_empty());
    assert_eq!(sent[0].path, "/bot42:wired-bot-token/sendMessage");
    assert_eq!(
        sent[0].json(),
        json!({"chat_id": 77, "text": "Returns: 30 days."})
    );
    let models: Vec<String> = llm
        .requests()
        .iter()
        .map(|r| r.json()["model"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        models,
        ["primary", "backup"],
        "the rendered model, then the rendered fallback"
    );
    let auth = llm.requests()[0]
        .header("authorization")
        .map(str::to_string);
    assert_eq!(
        auth, None,
        "no API key Secret was referenced, so none is sent"
    );

    // The widget, with the identity secret from the referenced Secret: a v1 identity token
    // for user u1 on channel `web`, valid for an hour (docs/gateway.md).
    let token = {
        use hmac::{Hmac, KeyInit, Mac};
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600;
        let mut m = Hmac::<sha2::Sha256>::new_from_slice(b"wired-site-secret").unwrap();
        m.update(format!("xin-identity-v1\nweb\n{exp}\nu1").as_bytes());
        format!("v1.{exp}.{}", hex::encode(m.finalize().into_bytes()))
    };
    let s = http(
        &gw_addr,
        "POST",
        "/widget/web/session",
        &[("Origin", "https://shop.example")],
        json!({"user_id": "u1", "identity_token": token})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(s.status, 200, "{}", s.body);
    let bearer = format!("Bearer {}", s.json()["session_token"].as_str().unwrap());
    let m = http(
        &gw_addr,
        "POST",
        "/widget/web/messages",
        &[("Authorization", bearer.as_str())],
        br#"{"text":"returns?"}"#,
    )
    .unwrap();
    assert_eq!(m.status, 202, "{}", m.body);
    let got = http(
        &gw_addr,
        "GET",
        "/widget/web/messages?wait=20",
        &[("Authorization", bearer.as_str())],
        b"",
    )
    .unwrap();
    assert_eq!(
        got.json()["messages"][0]["answer"],
        "Returns: 30 days.",
        "{}",
        got.body
    );
    assert!(gw.terminate() && orch.terminate());
}

/// Both example tenants, applied as a user would, each on the database the operator
/// provisioned for it, answer through the configuration the operator rendered — each from its
/// own knowledge (`xin-demo-messages`, the end of `make demo`, checks the answers).
#[test]
fn the_example_tenants_answer_side_by_side_from_their_own_knowledge() {
    operator();
    let _examples = Examples::apply();
    for t in ["acme", "globex"] {
        ready("tenant", t, "");
    }
    for ns in ["xin-acme", "xin-globex"] {
        for c in ["whatsapp", "instagram", "web", "telegram"] {
            if get_json(&["channel", c, "-n", ns]).is_some() {
                ready("channel", c, ns);
            }
        }
    }
    let acme = secret_value("xin-acme", "xin-database", "url").unwrap();
    let globex = secret_value("xin-globex", "xin-database", "url").unwrap();
    assert_ne!(
        acme.rsplit('/').next(),
        globex.rsplit('/').next(),
        "a database each"
    );
    // Built beside this test binary (target/debug/deps/..): the e2e crate's binary.
    let bin = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("xin-demo-messages");
    let out = std::process::Command::new(&bin)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (`cargo build -p xin-e2e --bins` builds it; `cargo test --workspace` and make test do)",
                bin.display()
            )
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("each tenant answered from its own knowledge"),
        "{stdout}"
    );
}

/// With `spec.embeddings`, the ingestion Job and the orchestrator get the same settings: the
/// worker embeds every chunk and the orchestrator the question, at the same endpoint, with the
/// same model, dimensions and key, and retrieval is hybrid over what the worker wrote.
#[tokio::test(flavor = "multi_thread")]
async fn embeddings_reach_the_ingestion_worker_and_the_orchestrator_alike() {
    operator();
    let t = TestTenant::create_with_objects(
        "embed",
        "  embeddings: {endpoint: 'https://embed.example.com', model: e-small, dimensions: 4, apiKeySecretRef: {name: embed, key: key}}\n  \
           retrieval: {hybridWeight: 0.5, minScore: 0.0, maxDocuments: 3, contextBudgetTokens: 1500}\n",
        |ns| {
            format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: embed, namespace: {ns}}}\nstringData: {{key: embed-api-key}}\n---\n"
            )
        },
    );
    let ns = t.ns.clone();
    ready("tenant", &t.name, "");
    // Vectors from the text: "marigold" and "loyalty" point one way, everything else another.
    let embed = StandIn::start(|r| {
        let inputs = r.json()["input"].clone();
        let texts: Vec<String> = match inputs {
            serde_json::Value::String(s) => vec![s],
            v => v
                .as_array()
                .into_iter()
                .flatten()
                .map(|x| x.as_str().unwrap_or_default().to_string())
                .collect(),
        };
        let data: Vec<serde_json::Value> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let t = t.to_lowercase();
                let v = if t.contains("marigold") || t.contains("loyalty") {
                    [1.0, 0.1, 0.0, 0.0]
                } else {
                    [0.0, 0.1, 1.0, 0.0]
                };
                json!({"index": i, "embedding": v})
            })
            .collect();
        Answer::json(200, json!({"data": data}))
    });
    apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: kb, namespace: {ns}}}\n\
         data: {{loyalty.md: \"# Loyalty\\n\\nThe loyalty word is marigold.\", shipping.md: \"# Shipping\\n\\nParcels ship in two days.\"}}\n---\n\
         apiVersion: xin.dev/v1alpha1\nkind: IngestionJob\nmetadata: {{name: kb, namespace: {ns}}}\n\
         spec: {{source: {{configMap: {{name: kb}}}}, tags: [kb]}}\n"
    ));
    run_ingestion_worker_with(
        &ns,
        "kb",
        &xin_e2e::local::IngestOverrides {
            embedding_endpoint: Some(embed.url()),
            allow: Some("127.0.0.1/32".into()),
            ..Default::default()
        },
    );
    let ij = wait_condition("ingestionjob", "kb", &ns, "Complete", "True", MINUTE);
    assert_eq!(ij["status"]["chunks"], 2);
    let chunk_requests = embed.requests();
    assert!(!chunk_requests.is_empty());
    for r in &chunk_requests {
        assert_eq!(r.json()["model"], "e-small");
        assert_eq!(r.json()["dimensions"], 4);
        assert_eq!(r.header("authorization"), Some("Bearer embed-api-key"));
    }
    let rendered = rendered_env(&ns, "xin-orchestrator").unwrap();
    let db = rendered
        .iter()
        .find(|(k, _)| k == "DATABASE_URL")
        .map(|(_, v)| v.clone())
        .unwrap();
    let pool = xin_store::connect(&db, 1).await.unwrap();
    let embedded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM knowledge_chunks WHERE embedding_model = 'e-small' AND array_length(embedding, 1) = 4",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(embedded, 2, "every chunk embedded by the worker");

    let o = Overrides {
        database_url: None,
        gateway_port: free_port(),
        gateway_metrics_port: free_port(),
        orchestrator_port: free_port(),
        orchestrator_metrics_port: free_port(),
        routes_file: std::path::PathBuf::from("/nonexistent"),
        llm_endpoint: None,
        embedding_endpoint: Some(embed.url()),
        telegram_api_base: embed.url(),
        meta_graph_api_base: embed.url(),
    };
    let addr = format!("127.0.0.1:{}", o.orchestrator_port);
    let mut orch = Workload::start(
        "xin-orchestrator",
        "embed-orchestrator",
        &orchestrator_env(&ns, &o).unwrap(),
    );
    orch.wait_ready(&addr, "/ready");
    let key = secret_value(&ns, "xin-tenant-signing", "key").expect("signing key");
    let signed = |path: &str, body: serde_json::Value| {
        xin_e2e::local::orchestrator_post(&addr, &key, path, &body)
    };
    let conv = signed(
        "/v1/conversations",
        json!({"channel": "web", "external_user": "u1"}),
    );
    let id = conv["id"].as_str().unwrap().to_string();
    let before = embed.requests().len();
    let answer = signed(
        &format!("/v1/conversations/{id}/messages"),
        json!({"text": "what is the loyalty word?"}),
    );
    let sources = answer["answer"]["sources"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        sources
            .first()
            .is_some_and(|s| s["document_id"] == "configmap:kb/loyalty.md"),
        "{answer}"
    );
    assert!(
        answer["answer"]["text"]
            .as_str()
            .unwrap_or_default()
            .contains("marigold"),
        "{answer}"
    );
    let question = &embed.requests()[before];
    assert_eq!(question.json()["input"], "what is the loyalty word?");
    assert_eq!(question.json()["model"], "e-small");
    assert_eq!(question.json()["dimensions"], 4);
    assert!(orch.terminate());
}
