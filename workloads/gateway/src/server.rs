//! The public listener. `axum::serve` has no header-read timeout, so a client that opens
//! connections and sends half a request line (slow-loris) would hold them for ever: this
//! accept loop serves each connection with hyper's HTTP/1 server and a header-read timeout.
//! Reading a body is bounded separately, in the handlers ([`crate::Gateway::read_body`]).

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tower::ServiceExt;

use crate::client::Peer;
use tokio::net::TcpListener;

/// Default of `GATEWAY_HEADER_READ_TIMEOUT_SECONDS`.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of `GATEWAY_BODY_READ_TIMEOUT_SECONDS`.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and waits for
/// the requests in flight (a long poll included) to finish. A connection whose request line
/// and headers do not all arrive within `header_read_timeout` of the server starting to read
/// them (a new connection, or an idle kept-alive one) is closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            conn = listener.accept() => match conn {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = stream;
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        // Every request knows its connection's peer (for the client address).
        let service = hyper::service::service_fn(move |mut req: http::Request<_>| {
            req.extensions_mut().insert(Peer(peer));
            app.clone().oneshot(req)
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection closed with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
