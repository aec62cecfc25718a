//! Shared by the orchestrator's tests and its benchmark: the orchestrator in-process on
//! loopback against a real PostgreSQL (`e2e/postgres.sh`; `XIN_TEST_DATABASE_URL` names it),
//! a signing HTTP client, and a local stand-in for the LLM and embedding provider — the only
//! stand-in.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};
use sqlx::PgPool;
use xin_orchestrator::{Config, Orchestrator, app};
use xin_runtime::HttpMetrics;
use xin_runtime::outbound::{DestinationPolicy, Outbound};
use xin_runtime::signing::sign;

pub const KEY: &[u8] = b"tenant-signing-key";

/// A fresh tenant database, provisioned and migrated as the operator does it; the URL of its
/// runtime role.
pub async fn database() -> String {
    xin_store::fresh_test_database().await
}

pub struct Harness {
    pub addr: String,
    pub url: String,
    /// A pool scoped to this orchestrator's tenant.
    pub pool: PgPool,
    pub metrics: HttpMetrics,
    pub orchestrator: Orchestrator,
    pub key: Vec<u8>,
    pub client: reqwest::Client,
}

/// The outbound policy of the tests: the stand-ins listen on loopback, which is refused by
/// default, so it is allowed (as `XIN_OUTBOUND_ALLOW=127.0.0.1/32` would).
pub fn loopback_allowed() -> DestinationPolicy {
    DestinationPolicy {
        allow: "127.0.0.1/32".parse().unwrap(),
        ..Config::new("t", KEY).outbound
    }
}

/// An outbound client that may reach the stand-ins, with its own metrics registry.
pub fn outbound() -> Outbound {
    Outbound::new(loopback_allowed(), &HttpMetrics::default()).unwrap()
}

/// The configuration of `tenant`, allowed to reach the stand-ins on loopback.
pub fn config(tenant: &str) -> Config {
    let mut c = Config::new(tenant, KEY);
    c.outbound = loopback_allowed();
    c
}

/// The orchestrator of `config.tenant` on the database `url`, served on 127.0.0.1:<free>.
pub async fn start(url: &str, config: Config) -> Harness {
    start_with(url, config, 32).await
}

/// [`start`] with a pool of `max_connections`.
pub async fn start_with(url: &str, config: Config, max_connections: u32) -> Harness {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pool = xin_store::connect(url, max_connections).await.unwrap();
    xin_store::check_runtime_role(&pool)
        .await
        .expect("tests run as a runtime role");
    let metrics = HttpMetrics::default();
    let key = config.signing_key.clone();
    let orchestrator = Orchestrator::new(config, pool.clone(), &metrics)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let router = app(orchestrator.clone(), metrics.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    if orchestrator.retriever.index().is_some() {
        // `/ready` waits for the embedding index's first load (in the background).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let r = reqwest::get(format!("http://{addr}/ready")).await.unwrap();
            if r.status().is_success() {
                break;
            }
            assert_eq!(r.text().await.unwrap(), "embedding index loading");
            assert!(
                std::time::Instant::now() < deadline,
                "the embedding index never loaded"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    Harness {
        addr,
        url: url.to_string(),
        pool,
        metrics,
        orchestrator,
        key,
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(512)
            .build()
            .unwrap(),
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

pub fn assert_json_error(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    let j = r.json();
    assert_eq!(j["error"], code, "{j}");
    assert!(j["message"].as_str().is_some_and(|m| !m.is_empty()), "{j}");
    assert!(
        j["correlation_id"].as_str().is_some_and(|c| !c.is_empty()),
        "{j}"
    );
}

pub fn signed_headers(
    key: &[u8],
    ts: i64,
    method: &str,
    path: &str,
    body: &[u8],
) -> Vec<(String, String)> {
    vec![
        ("X-Xin-Timestamp".into(), ts.to_string()),
        ("X-Xin-Signature".into(), sign(key, ts, method, path, body)),
    ]
}

impl Harness {
    /// A request with exactly these headers (no signature added).
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Reply {
        let mut req = self
            .client
            .request(
                method.parse().unwrap(),
                format!("http://{}{path}", self.addr),
            )
            .body(body.to_vec());
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let resp = req.send().await.unwrap();
        Reply {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: resp.text().await.unwrap(),
        }
    }

    /// A request signed with the tenant's key now, plus `extra` headers.
    pub async fn signed(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        extra: &[(&str, &str)],
    ) -> Reply {
        let mut h = signed_headers(&self.key, xin_runtime::signing::now(), method, path, body);
        h.push(("Content-Type".into(), "application/json".into()));
        h.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.raw(method, path, &h, body).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.signed("POST", path, body.to_string().as_bytes(), &[])
            .await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.signed("GET", path, b"", &[]).await
    }

    /// Creates (or finds) the conversation of `user` on channel `web`; returns its id.
    pub async fn conversation(&self, user: &str) -> String {
        let r = self
            .post(
                "/v1/conversations",
                json!({"channel": "web", "external_user": user}),
            )
            .await;
        assert!(r.status == 201 || r.status == 200, "{}", r.body);
        r.json()["id"].as_str().unwrap().to_string()
    }

    pub async fn say(&self, conversation: &str, body: Value) -> Reply {
        self.post(&format!("/v1/conversations/{conversation}/messages"), body)
            .await
    }

    /// `(kind, conversation_id, payload, correlation_id)` of the outbox, oldest first.
    pub async fn outbox(&self) -> Vec<(String, String, Value, String)> {
        sqlx::query_as(
            "SELECT kind, conversation_id, payload, correlation_id FROM outbox_events ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }

    pub fn metric_value(&self, needle: &str) -> Option<f64> {
        metric_value(&self.metrics.encode(), needle)
    }
}

/// The Prometheus text a metrics endpoint (`host:port`) serves.
pub async fn scrape(client: &reqwest::Client, addr: &str) -> String {
    let r = client.get(format!("http://{addr}/metrics")).send().await;
    r.unwrap().text().await.unwrap()
}

/// The value of the first metric line starting with `needle` (name and labels).
pub fn metric_value(text: &str, needle: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(needle))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A knowledge chunk to seed.
pub struct Seed<'a> {
    pub document_id: &'a str,
    pub chunk_index: i32,
    pub title: &'a str,
    pub text: &'a str,
    pub token_count: i32,
    pub visibility: &'a str,
    pub tags: &'a [&'a str],
    pub embedding: Option<Vec<f32>>,
}

impl<'a> Seed<'a> {
    pub fn new(document_id: &'a str, title: &'a str, text: &'a str) -> Self {
        Seed {
            document_id,
            chunk_index: 0,
            title,
            text,
            token_count: 50,
            visibility: "public",
            tags: &[],
            embedding: None,
        }
    }
}

/// Writes a chunk into the tenant database of `pool`.
pub async fn seed(pool: &PgPool, s: Seed<'_>) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO knowledge_chunks (tenant, document_id, chunk_index, title, text, token_count, visibility, tags, embedding)
         VALUES (current_database(), $1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(s.document_id)
    .bind(s.chunk_index)
    .bind(s.title)
    .bind(s.text)
    .bind(s.token_count)
    .bind(s.visibility)
    .bind(s.tags.iter().map(|t| t.to_string()).collect::<Vec<_>>())
    .bind(s.embedding)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// What the stand-in does for one model.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Answers at once with this text.
    Answer(String),
    /// Answers with this text after a delay.
    Slow(Duration, String),
    /// Answers with this status and a JSON error body.
    Fail(u16),
    /// Answers 200 with a body that is not a completion.
    Garbage,
}

/// A local OpenAI-compatible provider: `/v1/chat/completions` behaves per model as told
/// (default: answers "answer from <model>" at once) and records every request;
/// `/v1/embeddings` answers a fixed vector.
#[derive(Clone)]
pub struct StandIn {
    pub url: String,
    state: StandInState,
}

#[derive(Clone, Default)]
struct StandInState {
    behaviours: Arc<Mutex<HashMap<String, Behaviour>>>,
    requests: Arc<Mutex<Vec<Value>>>,
    embedding: Arc<Mutex<Vec<f32>>>,
    embedding_requests: Arc<Mutex<Vec<Value>>>,
}

impl StandIn {
    pub async fn start() -> StandIn {
        let state = StandInState::default();
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .route("/v1/embeddings", post(embeddings))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        StandIn { url, state }
    }

    pub fn set(&self, model: &str, b: Behaviour) {
        self.state
            .behaviours
            .lock()
            .unwrap()
            .insert(model.to_string(), b);
    }

    pub fn set_embedding(&self, v: Vec<f32>) {
        *self.state.embedding.lock().unwrap() = v;
    }

    /// The chat requests received, oldest first.
    pub fn requests(&self) -> Vec<Value> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn requests_for(&self, model: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r["model"] == model)
            .count()
    }

    pub fn embedding_requests(&self) -> Vec<Value> {
        self.state.embedding_requests.lock().unwrap().clone()
    }
}

async fn completions(State(s): State<StandInState>, Json(req): Json<Value>) -> Response {
    let model = req["model"].as_str().unwrap_or_default().to_string();
    s.requests.lock().unwrap().push(req);
    let b = s
        .behaviours
        .lock()
        .unwrap()
        .get(&model)
        .cloned()
        .unwrap_or_else(|| Behaviour::Answer(format!("answer from {model}")));
    let completion = |text: String| {
        Json(json!({
            "id": "cmpl-1",
            "object": "chat.completion",
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        }))
        .into_response()
    };
    match b {
        Behaviour::Answer(t) => completion(t),
        Behaviour::Slow(d, t) => {
            tokio::time::sleep(d).await;
            completion(t)
        }
        Behaviour::Fail(code) => (
            StatusCode::from_u16(code).unwrap(),
            Json(json!({"error": {"message": "stand-in failure"}})),
        )
            .into_response(),
        Behaviour::Garbage => (StatusCode::OK, "<html>not json</html>").into_response(),
    }
}

async fn embeddings(State(s): State<StandInState>, Json(req): Json<Value>) -> Response {
    s.embedding_requests.lock().unwrap().push(req);
    let v = s.embedding.lock().unwrap().clone();
    Json(json!({"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": v}]}))
        .into_response()
}

/// A loopback port nothing listens on.
pub fn closed_port_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}
