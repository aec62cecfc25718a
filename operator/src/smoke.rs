//! `xin-operator smoke`: the post-deploy check the chart's `helm test` runs (a Job with the
//! operator's image and a ServiceAccount of its own that may only read Tenants). It passes when the operator answers `/readyz` through
//! its Service and, for every Tenant, the Tenant is `Ready` and its gateway and orchestrator
//! answer `/health` through their Services (on the metrics port, which each tenant namespace's
//! NetworkPolicy opens to the operator's namespace). Checks are retried until all pass or the
//! timeout ends (pods may still be rolling after an upgrade); the last round's results are
//! printed one per line, and the exit status is 1 when any failed.

use std::time::{Duration, Instant};

use clap::Parser;
use kube::{Api, ResourceExt};
use xin_api::common::condition::READY;
use xin_api::tenant::{Tenant, tenant_namespace};

use crate::component::Component;

/// The smoke test's arguments (after `xin-operator smoke`).
#[derive(Parser, Debug)]
#[command(
    name = "xin-operator smoke",
    about = "Post-deploy smoke test: the operator's /readyz and every Tenant's gateway and orchestrator /health through their Services"
)]
pub struct SmokeArgs {
    /// The operator's readiness URL, through its Service (the chart passes
    /// `http://<release>-operator-metrics.<namespace>.svc:<port>/readyz`).
    #[arg(long, env = "XIN_SMOKE_OPERATOR_URL")]
    pub operator_url: Option<String>,
    /// Seconds the checks may keep failing before the test fails.
    #[arg(long, env = "XIN_SMOKE_TIMEOUT_SECONDS", default_value_t = 120)]
    pub timeout_seconds: u64,
    /// The cluster's DNS domain, for the Services' names.
    #[arg(
        long,
        env = "XIN_SMOKE_CLUSTER_DOMAIN",
        default_value = "cluster.local"
    )]
    pub cluster_domain: String,
}

/// One check's outcome: what was checked and, when it failed, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub what: String,
    pub failure: Option<String>,
}

/// The URL of a component's `/health` in a tenant namespace, through its Service.
pub fn health_url(component: Component, namespace: &str, cluster_domain: &str) -> String {
    format!(
        "http://{}.{namespace}.svc.{cluster_domain}:{}/health",
        component.workload_name(),
        component.metrics_port()
    )
}

/// Runs the checks until all pass or the timeout ends; prints the last round.
pub async fn run(args: SmokeArgs) -> Result<(), String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("no Kubernetes client (in-cluster config or KUBECONFIG): {e}"))?;
    let tenants: Api<Tenant> = Api::all(client);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout_seconds);
    loop {
        let checks = round(&args, &tenants, &http).await;
        let failed = checks.iter().filter(|c| c.failure.is_some()).count();
        if failed == 0 || Instant::now() >= deadline {
            for c in &checks {
                match &c.failure {
                    None => println!("ok    {}", c.what),
                    Some(why) => println!("FAIL  {}: {why}", c.what),
                }
            }
            return if failed == 0 {
                println!("smoke: {} checks passed", checks.len());
                Ok(())
            } else {
                Err(format!(
                    "{failed} of {} checks failed after {} s",
                    checks.len(),
                    args.timeout_seconds
                ))
            };
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn round(args: &SmokeArgs, tenants: &Api<Tenant>, http: &reqwest::Client) -> Vec<Check> {
    let mut checks = Vec::new();
    if let Some(url) = &args.operator_url {
        checks.push(get(http, format!("operator {url}"), url).await);
    }
    let list = match tenants.list(&Default::default()).await {
        Ok(l) => l,
        Err(e) => {
            checks.push(Check {
                what: "list Tenants".into(),
                failure: Some(e.to_string()),
            });
            return checks;
        }
    };
    for t in list {
        let name = t.name_any();
        let ready = t
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == READY));
        match ready {
            Some(c) if c.status == "True" => {}
            other => {
                checks.push(Check {
                    what: format!("tenant {name} Ready"),
                    failure: Some(match other {
                        Some(c) => format!("{}: {}", c.reason, c.message),
                        None => "no Ready condition yet".into(),
                    }),
                });
                continue;
            }
        }
        let ns = t
            .status
            .as_ref()
            .and_then(|s| s.namespace.clone())
            .unwrap_or_else(|| tenant_namespace(&name));
        for c in [Component::Gateway, Component::Orchestrator] {
            let url = health_url(c, &ns, &args.cluster_domain);
            checks.push(get(http, format!("tenant {name} {} {url}", c.as_str()), &url).await);
        }
    }
    checks
}

async fn get(http: &reqwest::Client, what: String, url: &str) -> Check {
    let failure = match http.get(url).send().await {
        Ok(r) if r.status().is_success() => None,
        Ok(r) => Some(format!("HTTP {}", r.status())),
        Err(e) => Some(error_chain(&e)),
    };
    Check { what, failure }
}

/// reqwest's error and its causes (the cause says "connection refused" or "dns error").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_is_checked_on_the_metrics_port_of_each_service() {
        assert_eq!(
            health_url(Component::Gateway, "xin-acme", "cluster.local"),
            "http://xin-gateway.xin-acme.svc.cluster.local:9102/health"
        );
        assert_eq!(
            health_url(Component::Orchestrator, "xin-acme", "example.internal"),
            "http://xin-orchestrator.xin-acme.svc.example.internal:9101/health"
        );
    }

    #[test]
    fn arguments_have_defaults_and_are_checked() {
        let a = SmokeArgs::try_parse_from(["smoke"]).expect("defaults");
        assert_eq!(a.timeout_seconds, 120);
        assert_eq!(a.operator_url, None);
        let err = SmokeArgs::try_parse_from(["smoke", "--timeout-seconds", "soon"])
            .expect_err("not a number");
        assert!(err.to_string().contains("soon"), "{err}");
    }
}
