//! `xin-ingest`: configuration from the environment the operator renders into the Job.

use clap::Parser;
use xin_ingest::Exit;
use xin_ingest::config::Args;

#[tokio::main]
async fn main() {
    let args = Args::parse();
    // JSON logs, and OTLP traces when OTEL_EXPORTER_ENDPOINT (or the OTEL_EXPORTER_OTLP_*
    // names) is set; also installs the rustls crypto provider reqwest needs.
    let telemetry = xin_runtime::init_telemetry("xin-ingest");
    let correlation_id = format!("{:032x}", rand::random::<u128>());
    let span = tracing::info_span!(
        "ingest",
        tenant = %args.tenant,
        job = %args.job,
        correlation_id = %correlation_id,
    );
    let exit = tracing::Instrument::instrument(xin_ingest::main(args), span).await;
    let code = match exit {
        Exit::Done(_) => 0,
        Exit::Retry(e) => {
            tracing::error!(error = %e, "xin-ingest stopped; the Job will retry");
            eprintln!("xin-ingest: {e}");
            1
        }
    };
    // Flushes the traces, then exits at once: a parse still running on the blocking pool
    // (past its deadline) must not keep the pod, and its Job, alive.
    drop(telemetry);
    std::process::exit(code)
}
