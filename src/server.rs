//! Running the gateway: bind, serve with client addresses, drain on shutdown.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::audit::AuditLog;
use crate::clock::SharedClock;
use crate::config::{AuditTarget, Config};
use crate::web;

/// Opens the configured audit sink.
/// With `audit.postgres_url`, also the PostgreSQL sink's insert task (it never blocks the file
/// writer; see `audit::postgres`).
pub fn open_audit(cfg: &Config) -> anyhow::Result<AuditLog> {
    let (feed, stats) = match &cfg.audit_postgres {
        Some(sink) => {
            let (feed, stats, _task) = crate::audit::postgres::start(sink.clone());
            (Some(feed), Some(stats))
        }
        None => (None, None),
    };
    let log = match &cfg.audit {
        AuditTarget::Stdout => AuditLog::open_with_sink(None, &cfg.audit_trail, feed)
            .map(|(log, _)| log)
            .context("cannot open the audit log on stdout")?,
        AuditTarget::File(p) => AuditLog::open_with_sink(Some(p), &cfg.audit_trail, feed)
            .map(|(log, _)| log)
            .with_context(|| format!("cannot open the audit log {}", p.display()))?,
    };
    Ok(match stats {
        Some(s) => log.with_postgres_stats(s),
        None => log,
    })
}

/// `storegate serve`: runs until SIGINT/SIGTERM, then drains in-flight requests. With
/// `config_path`, the policy reloads on SIGHUP and when the file changes (see `reload`).
pub async fn serve(
    cfg: Config,
    clock: SharedClock,
    config_path: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    let audit = open_audit(&cfg)?;
    let listener = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let public = cfg.public_url.to_string();
    let state = crate::app::open_scim(crate::app::build_state(cfg, clock, audit)?).await?;
    let _schedule = crate::app::start_reconcile_schedule(&state)?;
    if let Some(path) = config_path {
        crate::reload::spawn(
            state.policy.clone(),
            state.config.clone(),
            path,
            std::time::Duration::from_secs(2),
            state.metrics.clone(),
            state.clock.clone(),
        );
    }
    tracing::info!(listen = %listener.local_addr()?, public_url = %public, "storegate is serving");
    serve_on(listener, web::router(state), shutdown_signal()).await
}

/// Serves `app` on `listener` (with client addresses, for `request_ip`) until `shutdown` resolves.
pub async fn serve_on(
    listener: TcpListener,
    app: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // No Nagle delay on a response written while the previous one is still unacknowledged
    // (keep-alive connections under load).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on a connection");
        }
    });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .context("the HTTP server stopped")
}

pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: draining in-flight requests");
}
