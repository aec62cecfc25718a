//! Runs a tenant's workloads as local processes with the configuration the operator
//! rendered: the container environment of its Deployments (with `secretKeyRef`s resolved by
//! reading the Secrets) and the gateway's routes Secret written to a file.
//!
//! Only what cannot work outside the cluster is replaced, and [`Overrides`] names each:
//! listen addresses and ports (every process on 127.0.0.1, free ports), the in-cluster URL of
//! the orchestrator, the routes file path, the database URL (the local PostgreSQL), and the
//! external endpoints (LLM, embeddings, Telegram, Meta) which point at local stand-ins — with
//! the loopback address added to `XIN_OUTBOUND_ALLOW`, since the outbound
//! policy refuses loopback destinations by default. Everything else
//! (tenant, signing key, retrieval settings, models, timeouts, channel keys and credentials)
//! is used exactly as rendered.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::get_json;

/// One key of Secret `ns/name`, as text.
pub fn secret_value(ns: &str, name: &str, key: &str) -> Result<String, String> {
    use base64::Engine;
    let s = get_json(&["secret", name, "-n", ns])
        .ok_or_else(|| format!("Secret {ns}/{name} not found"))?;
    let data = s["data"][key]
        .as_str()
        .ok_or_else(|| format!("Secret {ns}/{name} has no key {key}"))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|_| format!("Secret {ns}/{name} key {key} is not base64"))?;
    String::from_utf8(bytes).map_err(|_| format!("Secret {ns}/{name} key {key} is not UTF-8"))
}

/// The environment of the first container of Deployment `ns/name`, secrets resolved.
pub fn rendered_env(ns: &str, deployment: &str) -> Result<Vec<(String, String)>, String> {
    let d = get_json(&["deployment", deployment, "-n", ns])
        .ok_or_else(|| format!("Deployment {ns}/{deployment} not found"))?;
    resolve_env(ns, deployment, &d["spec"]["template"]["spec"])
}

/// The environment of a pod template's first container, `secretKeyRef`s read from the
/// Secrets; `owner` names the workload in errors.
fn resolve_env(ns: &str, owner: &str, pod: &Value) -> Result<Vec<(String, String)>, String> {
    let env = pod
        .pointer("/containers/0/env")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    env.iter()
        .map(|e| {
            let name = e["name"].as_str().unwrap_or_default().to_string();
            if let Some(v) = e["value"].as_str() {
                return Ok((name, v.to_string()));
            }
            let r = &e["valueFrom"]["secretKeyRef"];
            match (r["name"].as_str(), r["key"].as_str()) {
                (Some(s), Some(k)) => Ok((name, secret_value(ns, s, k)?)),
                _ => Err(format!(
                    "{owner}: variable {name} has a source this runner does not resolve"
                )),
            }
        })
        .collect()
}

/// Writes the gateway's routes Secret (`xin-gateway-routes`, key `routes.json`) to `dir` and
/// returns the file.
pub fn write_routes(ns: &str, dir: &Path) -> Result<PathBuf, String> {
    let routes = secret_value(ns, "xin-gateway-routes", "routes.json")?;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let file = dir.join("routes.json");
    std::fs::write(&file, routes).map_err(|e| e.to_string())?;
    Ok(file)
}

/// What differs from the rendered configuration when running on this machine.
pub struct Overrides {
    /// Replaces the rendered `DATABASE_URL` (a platform-managed database's URL already points
    /// at the local PostgreSQL).
    pub database_url: Option<String>,
    pub gateway_port: u16,
    pub gateway_metrics_port: u16,
    pub orchestrator_port: u16,
    pub orchestrator_metrics_port: u16,
    pub routes_file: PathBuf,
    /// Replaces the rendered `LLM_ENDPOINT` (when the Tenant has one).
    pub llm_endpoint: Option<String>,
    /// Replaces the rendered `EMBEDDING_ENDPOINT` (when the Tenant has embeddings).
    pub embedding_endpoint: Option<String>,
    pub telegram_api_base: String,
    pub meta_graph_api_base: String,
}

impl Overrides {
    /// Free ports on loopback, the routes file at `routes_file`, the database as rendered, no
    /// LLM or embeddings stand-in, and provider APIs at a closed port (nothing answers).
    pub fn local(routes_file: PathBuf) -> Self {
        use crate::workload::free_port;
        Overrides {
            database_url: None,
            gateway_port: free_port(),
            gateway_metrics_port: free_port(),
            orchestrator_port: free_port(),
            orchestrator_metrics_port: free_port(),
            routes_file,
            llm_endpoint: None,
            embedding_endpoint: None,
            telegram_api_base: "http://127.0.0.1:9".into(),
            meta_graph_api_base: "http://127.0.0.1:9".into(),
        }
    }
}

fn set(env: &mut Vec<(String, String)>, k: &str, v: String) {
    env.retain(|(n, _)| n != k);
    env.push((k.to_string(), v));
}

/// The orchestrator's rendered environment with the local overrides applied.
pub fn orchestrator_env(ns: &str, o: &Overrides) -> Result<Vec<(String, String)>, String> {
    let mut env = rendered_env(ns, "xin-orchestrator")?;
    set(&mut env, "ORCHESTRATOR_HTTP_HOST", "127.0.0.1".into());
    set(
        &mut env,
        "ORCHESTRATOR_HTTP_PORT",
        o.orchestrator_port.to_string(),
    );
    set(&mut env, "ORCHESTRATOR_METRICS_HOST", "127.0.0.1".into());
    set(
        &mut env,
        "ORCHESTRATOR_METRICS_PORT",
        o.orchestrator_metrics_port.to_string(),
    );
    if let Some(url) = &o.database_url {
        set(&mut env, "DATABASE_URL", url.clone());
    }
    let mut local = false;
    for (var, over) in [
        ("LLM_ENDPOINT", &o.llm_endpoint),
        ("EMBEDDING_ENDPOINT", &o.embedding_endpoint),
    ] {
        if let Some(url) = over
            && env.iter().any(|(k, _)| k == var)
        {
            set(&mut env, var, url.clone());
            local = true;
        }
    }
    if local {
        // The stand-ins listen on 127.0.0.1: allow exactly that, beside what was rendered.
        let allow = match env.iter().find(|(k, _)| k == "XIN_OUTBOUND_ALLOW") {
            Some((_, v)) if !v.is_empty() => format!("{v},127.0.0.1/32"),
            _ => "127.0.0.1/32".to_string(),
        };
        set(&mut env, "XIN_OUTBOUND_ALLOW", allow);
    }
    Ok(env)
}

/// The gateway's rendered environment with the local overrides applied.
pub fn gateway_env(ns: &str, o: &Overrides) -> Result<Vec<(String, String)>, String> {
    let mut env = rendered_env(ns, "xin-gateway")?;
    let rendered_orchestrator = env
        .iter()
        .find(|(k, _)| k == "ORCHESTRATOR_URL")
        .map(|(_, v)| v.clone())
        .ok_or("the gateway has no ORCHESTRATOR_URL")?;
    if !rendered_orchestrator.starts_with("http://xin-orchestrator.") {
        return Err(format!(
            "unexpected ORCHESTRATOR_URL {rendered_orchestrator}"
        ));
    }
    set(&mut env, "GATEWAY_HTTP_HOST", "127.0.0.1".into());
    set(&mut env, "GATEWAY_HTTP_PORT", o.gateway_port.to_string());
    set(&mut env, "GATEWAY_METRICS_HOST", "127.0.0.1".into());
    set(
        &mut env,
        "GATEWAY_METRICS_PORT",
        o.gateway_metrics_port.to_string(),
    );
    set(
        &mut env,
        "GATEWAY_ROUTES_FILE",
        o.routes_file.display().to_string(),
    );
    set(
        &mut env,
        "ORCHESTRATOR_URL",
        format!("http://127.0.0.1:{}", o.orchestrator_port),
    );
    if let Some(url) = &o.database_url {
        set(&mut env, "DATABASE_URL", url.clone());
    }
    set(&mut env, "TELEGRAM_API_BASE", o.telegram_api_base.clone());
    set(
        &mut env,
        "META_GRAPH_API_BASE",
        o.meta_graph_api_base.clone(),
    );
    Ok(env)
}

/// The automation worker's environment, and where it serves.
pub struct AutomationEnv {
    pub env: Vec<(String, String)>,
    /// `/health` and `/ready`.
    pub http: String,
    pub metrics: String,
}

/// The automation worker's rendered environment (Deployment `xin-automation`), on loopback
/// with free ports, `allow` added to `XIN_OUTBOUND_ALLOW` (its stand-ins on loopback), and
/// the database URL replaced when given.
pub fn automation_env(
    ns: &str,
    database_url: Option<&str>,
    allow: Option<&str>,
) -> Result<AutomationEnv, String> {
    let mut env = rendered_env(ns, "xin-automation")?;
    let (http, metrics) = (crate::workload::free_port(), crate::workload::free_port());
    set(&mut env, "AUTOMATION_HTTP_HOST", "127.0.0.1".into());
    set(&mut env, "AUTOMATION_HTTP_PORT", http.to_string());
    set(&mut env, "AUTOMATION_METRICS_HOST", "127.0.0.1".into());
    set(&mut env, "AUTOMATION_METRICS_PORT", metrics.to_string());
    if let Some(url) = database_url {
        set(&mut env, "DATABASE_URL", url.to_string());
    }
    if let Some(a) = allow {
        let allow = match env.iter().find(|(k, _)| k == "XIN_OUTBOUND_ALLOW") {
            Some((_, v)) if !v.is_empty() => format!("{v},{a}"),
            _ => a.to_string(),
        };
        set(&mut env, "XIN_OUTBOUND_ALLOW", allow);
    }
    Ok(AutomationEnv {
        env,
        http: format!("127.0.0.1:{http}"),
        metrics: format!("127.0.0.1:{metrics}"),
    })
}

/// A finished run of the ingestion worker.
#[derive(Debug)]
pub struct IngestRun {
    pub success: bool,
    pub log: String,
}

/// What differs from the Job's configuration when the worker runs on this machine.
#[derive(Default)]
pub struct IngestOverrides {
    /// Replaces the rendered `DATABASE_URL`.
    pub database_url: Option<String>,
    /// Added to `XIN_OUTBOUND_ALLOW` (a URL source or an embedding stand-in on loopback).
    pub allow: Option<String>,
    /// Replaces the rendered `EMBEDDING_ENDPOINT` (when the Tenant has embeddings).
    pub embedding_endpoint: Option<String>,
}

/// A kubeconfig for the current cluster that authenticates as service account `ns/sa`, with
/// a short-lived token from the TokenRequest API (what the Job's pod would mount).
pub fn service_account_kubeconfig(ns: &str, sa: &str, dir: &Path) -> Result<PathBuf, String> {
    let token = crate::kubectl(&["create", "token", sa, "-n", ns, "--duration", "15m"]);
    if !token.ok {
        return Err(format!("kubectl create token {sa}: {}", token.stderr));
    }
    let view = crate::kubectl(&["config", "view", "--minify", "--raw", "-o", "json"]);
    if !view.ok {
        return Err(format!("kubectl config view: {}", view.stderr));
    }
    let v: Value = serde_json::from_str(&view.stdout).map_err(|e| e.to_string())?;
    let cluster = &v["clusters"][0]["cluster"];
    let config = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": sa, "user": {"token": token.stdout.trim()}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": sa, "namespace": ns}}],
        "current-context": "sa",
    });
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let file = dir.join("kubeconfig");
    std::fs::write(&file, config.to_string()).map_err(|e| e.to_string())?;
    Ok(file)
}

/// The environment of the ingestion Job of IngestionJob `ns/name` as the operator rendered it,
/// secrets resolved, the headers Secret written into `dir`, with `o` applied and a free
/// metrics port.
pub fn ingest_env(
    ns: &str,
    name: &str,
    dir: &Path,
    o: &IngestOverrides,
) -> Result<Vec<(String, String)>, String> {
    let ij = crate::get_json(&["ingestionjob", name, "-n", ns])
        .ok_or_else(|| format!("IngestionJob {ns}/{name} not found"))?;
    let job_name = ij
        .pointer("/status/jobName")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("IngestionJob {ns}/{name} has no Job yet"))?;
    let job = crate::get_json(&["job", job_name, "-n", ns])
        .ok_or_else(|| format!("Job {ns}/{job_name} not found"))?;
    let pod = job
        .pointer("/spec/template/spec")
        .cloned()
        .unwrap_or_default();
    let mut out = resolve_env(ns, job_name, &pod)?;
    // The headers Secret, as the kubelet would mount it: one file per key.
    for v in pod["volumes"].as_array().into_iter().flatten() {
        let Some(secret) = v.pointer("/secret/secretName").and_then(Value::as_str) else {
            continue;
        };
        let s = crate::get_json(&["secret", secret, "-n", ns])
            .ok_or_else(|| format!("Secret {ns}/{secret} not found"))?;
        let headers = dir.join("headers");
        std::fs::create_dir_all(&headers).map_err(|e| e.to_string())?;
        for (k, _) in s["data"].as_object().cloned().unwrap_or_default() {
            std::fs::write(headers.join(&k), secret_value(ns, secret, &k)?)
                .map_err(|e| e.to_string())?;
        }
        set(
            &mut out,
            "INGEST_HEADERS_DIR",
            headers.display().to_string(),
        );
    }
    set(&mut out, "INGEST_METRICS_HOST", "127.0.0.1".into());
    set(
        &mut out,
        "INGEST_METRICS_PORT",
        crate::workload::free_port().to_string(),
    );
    if let Some(url) = &o.database_url {
        set(&mut out, "DATABASE_URL", url.clone());
    }
    if let Some(e) = &o.embedding_endpoint
        && out.iter().any(|(k, _)| k == "EMBEDDING_ENDPOINT")
    {
        set(&mut out, "EMBEDDING_ENDPOINT", e.clone());
    }
    if let Some(a) = &o.allow {
        let allow = match out.iter().find(|(k, _)| k == "XIN_OUTBOUND_ALLOW") {
            Some((_, v)) if !v.is_empty() => format!("{v},{a}"),
            _ => a.clone(),
        };
        set(&mut out, "XIN_OUTBOUND_ALLOW", allow);
    }
    Ok(out)
}

/// Runs the ingestion worker for IngestionJob `ns/name` to completion, as its Job would:
/// the Job's environment ([`ingest_env`]) and the Job's service account
/// ([`service_account_kubeconfig`]) for the API server.
pub fn run_ingestion(ns: &str, name: &str, o: &IngestOverrides) -> Result<IngestRun, String> {
    let dir = std::env::temp_dir().join(format!("xin-ingest-{ns}-{name}-{}", std::process::id()));
    // The directory holds the headers Secret's values and a token: removed on every way out.
    let prepared = ingest_env(ns, name, &dir, o)
        .and_then(|env| Ok((env, service_account_kubeconfig(ns, "xin-ingest", &dir)?)));
    let (env, kubeconfig) = match prepared {
        Ok(p) => p,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    let log = crate::operator::repo_root().join("target/e2e-logs");
    std::fs::create_dir_all(&log).map_err(|e| e.to_string())?;
    let log = log.join(format!("xin-ingest-{ns}-{name}-{}.log", std::process::id()));
    let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let mut cmd = std::process::Command::new(crate::workload::binary("xin-ingest"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .env("KUBECONFIG", &kubeconfig)
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().map_err(|e| e.to_string())?)
        .stderr(out);
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(|e| format!("start xin-ingest: {e}"))?;
    // A run of the suites' small jobs takes seconds; a hang must not hang the suite.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let status = loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(s) => break s,
            None if std::time::Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_dir_all(&dir);
                return Err(format!(
                    "xin-ingest did not finish within 300 s; log: {}",
                    log.display()
                ));
            }
            None => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    Ok(IngestRun {
        success: status.success(),
        log: std::fs::read_to_string(&log).unwrap_or_default(),
    })
}

/// A `POST` to the orchestrator's conversation API at `addr`, signed with the tenant's signing
/// `key` as the gateway signs it (`X-Xin-Timestamp`, `X-Xin-Signature`: HMAC-SHA256 of
/// "<timestamp>\nPOST\n<path>\n<body>"). Panics unless it answers 200 or 201.
pub fn orchestrator_post(addr: &str, key: &str, path: &str, body: &Value) -> Value {
    use hmac::{Hmac, KeyInit, Mac};
    let body = body.to_string();
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        .to_string();
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
    m.update(format!("{ts}\nPOST\n{path}\n").as_bytes());
    m.update(body.as_bytes());
    let sig = format!("sha256={}", hex::encode(m.finalize().into_bytes()));
    let r = crate::http(
        addr,
        "POST",
        path,
        &[
            ("Content-Type", "application/json"),
            ("X-Xin-Timestamp", ts.as_str()),
            ("X-Xin-Signature", sig.as_str()),
        ],
        body.as_bytes(),
    )
    .expect("the orchestrator is reachable");
    assert!(
        r.status == 200 || r.status == 201 || r.status == 202,
        "{path}: {} {}",
        r.status,
        r.body
    );
    r.json()
}
