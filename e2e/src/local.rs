//! Runs a tenant's workloads as local processes with the configuration the operator
//! rendered: the container environment of its Deployments (with `secretKeyRef`s resolved by
//! reading the Secrets) and the gateway's routes Secret written to a file.
//!
//! Only what cannot work outside the cluster is replaced, and [`Overrides`] names each:
//! listen addresses and ports (every process on 127.0.0.1, free ports), the in-cluster URL of
//! the orchestrator, the routes file path, the database URL (the local PostgreSQL), and the
//! external endpoints (LLM, Telegram, Meta) which point at local stand-ins — with the
//! loopback address added to the orchestrator's `XIN_OUTBOUND_ALLOW`, since the outbound
//! policy refuses loopback destinations by default. Everything else
//! (tenant, signing key, retrieval settings, models, timeouts, channel keys and credentials)
//! is used exactly as rendered.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::get_json;

/// A rendered environment variable could not be resolved.
fn secret_value(ns: &str, name: &str, key: &str) -> Result<String, String> {
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
    let env = d
        .pointer("/spec/template/spec/containers/0/env")
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
                    "{deployment}: variable {name} has a source this runner does not resolve"
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
    pub telegram_api_base: String,
    pub meta_graph_api_base: String,
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
    if let Some(llm) = &o.llm_endpoint
        && env.iter().any(|(k, _)| k == "LLM_ENDPOINT")
    {
        set(&mut env, "LLM_ENDPOINT", llm.clone());
        // The stand-in listens on 127.0.0.1: allow exactly that, beside what was rendered.
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
