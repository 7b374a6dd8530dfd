//! Run with: cargo run -p axum-refund -- --listen 127.0.0.1:3001
//!
//! Add `--issuer URL --jwks-url URL --audience AUD` to verify bearer JWTs; without them every
//! caller is `AgentCore::UnauthenticatedUser::"anonymous"` (local development only).

use anyhow::Context;
use clap::Parser;
use policy_layer::auth::{AuthConfig, Authenticator};
use tokio_util::sync::CancellationToken;

/// An axum MCP tool server with Cedar policies enforced by `PolicyLayer`.
#[derive(Debug, Parser)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3001")]
    listen: String,
    /// JWT issuer (enables authentication).
    #[arg(long, requires_all = ["jwks_url", "audience"])]
    issuer: Option<String>,
    /// JWKS URL of the issuer.
    #[arg(long)]
    jwks_url: Option<String>,
    /// Accepted audience.
    #[arg(long)]
    audience: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let authenticator = match (cli.issuer, cli.jwks_url, cli.audience) {
        (Some(issuer), Some(jwks), Some(audience)) => {
            let config = AuthConfig::jwt(issuer)
                .with_jwks_url(jwks)
                .with_audience(audience);
            Authenticator::start(config)
                .await
                .context("starting JWT authentication")?
        }
        _ => Authenticator::none(),
    };
    let shutdown = CancellationToken::new();
    let app = axum_refund::app(authenticator, shutdown.clone()).context("loading refund.cedar")?;
    let listener = tokio::net::TcpListener::bind(&cli.listen)
        .await
        .context("binding")?;
    println!("listening on http://{}/mcp", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            shutdown.cancel();
        })
        .await
        .context("serving")
}
