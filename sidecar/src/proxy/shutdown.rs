//! Process signals: SIGTERM or SIGINT (Ctrl-C) start a graceful shutdown.

use tokio_util::sync::CancellationToken;

/// Cancels `shutdown` on the first SIGTERM or SIGINT. The handlers are installed before this
/// returns, so a signal sent right after start-up is never taken by the default action.
///
/// # Errors
/// When the signal handlers cannot be installed.
pub fn on_signal(shutdown: CancellationToken) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        tokio::spawn(async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
            tracing::info!("shutting down: draining requests in flight");
            shutdown.cancel();
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down: draining requests in flight");
        shutdown.cancel();
    });
    Ok(())
}
