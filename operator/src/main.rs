//! `xin-operator`: serves /metrics, /healthz and /readyz, waits for its CRDs, takes the
//! leader Lease and runs the controllers until SIGTERM. `xin-operator smoke` is the chart's
//! post-deploy test instead ([`xin_operator::smoke`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::client::ClientBuilder;
use tracing::{error, info, warn};
use xin_operator::config::Config;
use xin_operator::controllers;
use xin_operator::metrics::{CountWritesLayer, Metrics};
use xin_operator::server::{ServerState, router};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    if std::env::args().nth(1).as_deref() == Some("smoke") {
        // The chart's `helm test` Job: plain lines on stdout, no telemetry.
        let args = xin_operator::smoke::SmokeArgs::parse_from(std::env::args().skip(1));
        return match xin_operator::smoke::run(args).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("smoke: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    // JSON logs; spans exported over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT (or
    // OTEL_EXPORTER_ENDPOINT) is set, and trace ids in the reconcile log lines either way.
    let _telemetry =
        xin_runtime::init_telemetry_with("xin-operator", "info,kube_lease_manager=warn", true);
    match run(Config::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "xin-operator stopped");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var("XIN_EXIT_ON_STDIN_CLOSE").is_ok_and(|v| v == "true") {
        // For harnesses that start the operator as a child (the e2e suites, `make demo`):
        // when the parent goes away, so does the operator, with no process left behind.
        std::thread::spawn(|| {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            info!("stdin closed: exiting");
            std::process::exit(0);
        });
    }
    if config.otel_exporter_headers.is_some() {
        return Err("XIN_OTEL_EXPORTER_HEADERS (chart: otel.headers) is no longer supported: the platform's OTLP headers were copied into every tenant namespace. Tenant workloads export without headers (an in-cluster collector needs none) or read per-tenant ones from the Secret named by XIN_OTEL_TENANT_HEADERS_SECRET (chart: otel.tenantHeadersSecret); see docs/security.md".into());
    }
    if let Some(u) = &config.database_admin_url {
        xin_store::provision::Admin::new(&u.0)
            .map_err(|_| "XIN_DATABASE_ADMIN_URL is not a postgres:// URL")?;
    }
    info!(
        platform_database = config.database_admin_url.is_some(),
        "platform-managed tenant databases {}",
        if config.database_admin_url.is_some() {
            "enabled"
        } else {
            "disabled: Tenants must bring their own (spec.database)"
        }
    );
    let metrics = Metrics::default();
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(&config.metrics_addr)
        .await
        .map_err(|e| format!("cannot listen on {} for /metrics: {e}", config.metrics_addr))?;
    info!(addr = %config.metrics_addr, "serving /metrics, /healthz, /readyz");
    let app = router(ServerState {
        metrics: metrics.clone(),
        ready: ready.clone(),
    });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            error!(error = %e, "metrics server failed");
        }
    });

    let kube_config = kube::Config::infer().await?;
    let client = ClientBuilder::try_from(kube_config)?
        .with_layer(&CountWritesLayer(metrics.clone()))
        .build();

    // Wait for the CRDs instead of crash-looping when they are not installed yet.
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    for crd in xin_api::crds() {
        let name = crd.metadata.name.unwrap_or_default();
        loop {
            match crds.get_opt(&name).await {
                Ok(Some(c))
                    if c.status
                        .iter()
                        .flat_map(|s| s.conditions.iter().flatten())
                        .any(|c| c.type_ == "Established" && c.status == "True") =>
                {
                    break;
                }
                Ok(_) => {
                    warn!(crd = %name, "CRD not installed or not established yet; install crds/ (helm does); retrying in 5 s")
                }
                Err(e) => warn!(crd = %name, error = %e, "cannot read CRD; retrying in 5 s"),
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    }
    ready.store(true, Ordering::Relaxed);

    let mut leadership = None;
    if config.leader_elect {
        let identity = std::env::var("POD_NAME")
            .unwrap_or_else(|_| format!("xin-operator-{}", std::process::id()));
        let manager =
            kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &config.lease_name)
                .with_namespace(&config.lease_namespace)
                .with_identity(&identity)
                .with_duration(15)
                .with_grace(5)
                .build()
                .await?;
        let (mut rx, task) = manager.watch().await;
        info!(identity, lease = %config.lease_name, namespace = %config.lease_namespace, "waiting for the leader lease");
        while !*rx.borrow_and_update() {
            rx.changed().await.map_err(|_| "leader election stopped")?;
        }
        info!(identity, "acquired the leader lease");
        leadership = Some((rx, task));
    }

    let wiring = xin_operator::stores::wire(&client);
    let controllers = controllers::run(client, config, metrics, wiring);
    match leadership {
        None => controllers.await,
        Some((mut rx, _task)) => {
            tokio::select! {
                _ = controllers => {}
                // Losing the lease means another replica may write: stop at once.
                _ = async { while rx.changed().await.is_ok() && *rx.borrow() {} } => {
                    return Err("lost the leader lease".into());
                }
            }
        }
    }
    Ok(())
}
