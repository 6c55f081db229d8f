//! Serving a router until shutdown, with the peer address available to handlers.

use std::net::SocketAddr;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

/// Serves `app` on `addr` until `shutdown`; requests in flight finish first.
pub async fn serve(addr: SocketAddr, app: axum::Router, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
    tracing::info!(listen = %addr, "serving");
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .with_context(|| format!("serving {addr}"))
}
