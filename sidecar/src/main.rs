//! `policy-sidecar`: runs the policy layer as a localhost reverse proxy in front of an existing
//! MCP tool server (the reference is `sidecar/README.md`).
//!
//! Run with: cargo run -p policy-sidecar -- run --config policy-sidecar.toml
//!
//! The rooms, as a request meets them:
//! - `cli/`: the command line and one file per subcommand (`run` wires the rest together);
//! - `config/`: the TOML file and its environment overrides, one file per section;
//! - `proxy/`: the request path: listener, router, policy layer, upstream, bodies, shutdown;
//! - `feed/`: what feeds the engine: policy files, reload, tools, the engine feed;
//! - `observe/`: what observes it: decision log, metrics, traces, the stderr log, admin.

mod cli;
mod config;
mod feed;
mod observe;
mod proxy;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::cli::args::{Cli, Command};

/// mimalloc, not glibc's allocator: a request allocates and frees a few hundred small blocks,
/// which mimalloc's per-thread free lists serve with less work, and memory freed after loading
/// a large policy set goes back to the system. Without transparent huge pages (`no_thp`):
/// with them, a few touched bytes keep 2 MiB resident (`docs/performance.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long requests still draining past the grace period keep the runtime at exit.
const RUNTIME_SHUTDOWN: Duration = Duration::from_millis(100);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("policy-sidecar: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => cli::run::run(&args).await,
            Command::Validate(args) => cli::validate::validate(&args).await,
            Command::Schema(args) => cli::schema::schema(&args).await,
            Command::Test(args) => cli::test::test(&args).await,
            Command::Replay(args) => cli::replay::replay(&args).await,
            Command::Pin(args) => cli::pin::pin(&args).await,
        }
    });
    // Requests still being drained past the grace period are dropped with the runtime.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(exit) => exit.report(),
    }
}
