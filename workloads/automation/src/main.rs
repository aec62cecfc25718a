//! `xin-automation`: configuration from the environment the operator renders into its
//! Deployment (`xin-automation --help` lists it).

use clap::Parser;
use xin_automation::config::Args;

#[tokio::main]
async fn main() {
    let args = Args::parse();
    // JSON logs, and OTLP traces when OTEL_EXPORTER_ENDPOINT (or the OTEL_EXPORTER_OTLP_*
    // names) is set; also installs the rustls crypto provider reqwest and lettre use.
    let telemetry = xin_runtime::init_telemetry("xin-automation");
    let result = xin_automation::main(args).await;
    if let Err(e) = &result {
        tracing::error!(error = %e, "xin-automation stopped");
        eprintln!("xin-automation: {e}");
    }
    drop(telemetry);
    std::process::exit(if result.is_ok() { 0 } else { 1 })
}
