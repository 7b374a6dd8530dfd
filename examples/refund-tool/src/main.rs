//! Run with: cargo run -p refund-tool -- --listen 127.0.0.1:3000
//!
//! Prints one line, `listening on http://<addr>/mcp`, once the socket is bound (so a test can
//! start it on port 0 and read the address), then serves until SIGTERM or Ctrl-C.

use std::io::Write;

use anyhow::Context;
use clap::Parser;
use refund_tool::{CallLog, Options, app};
use tokio_util::sync::CancellationToken;

/// Demo MCP tool server (refunds and orders) for the mcp-policy sidecar.
#[derive(Debug, Parser)]
#[command(name = "demo-tool-server", version)]
struct Cli {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: String,
    /// Answer POSTs in `application/json` instead of `text/event-stream`.
    #[arg(long)]
    json_response: bool,
    /// No sessions: every request stands alone.
    #[arg(long)]
    stateless: bool,
    /// Also accept this `Host` header (repeatable); `*` accepts any host. Loopback names are
    /// always accepted.
    #[arg(long = "allowed-host", value_name = "HOST")]
    allowed_hosts: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let options = Options {
        json_response: cli.json_response,
        stateless: cli.stateless,
        allowed_hosts: cli.allowed_hosts,
    };

    let listener = tokio::net::TcpListener::bind(&cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    let addr = listener.local_addr()?;

    let shutdown = CancellationToken::new();
    let router = app(&options, CallLog::default(), shutdown.clone());

    // Handlers first, so a SIGTERM right after the line below is never the default action.
    let signal = signals().context("installing signal handlers")?;
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            signal.await;
            shutdown.cancel();
        }
    });

    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on http://{addr}/mcp")?;
    stdout.flush()?;
    drop(stdout);

    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("serving")?;
    Ok(())
}

/// A future that resolves on SIGTERM or SIGINT (Ctrl-C); the handlers are installed now.
#[cfg(unix)]
fn signals() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

/// A future that resolves on Ctrl-C.
#[cfg(not(unix))]
fn signals() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
