//! How a subcommand ends the process: every failure becomes an [`Exit`] here, with its status
//! and message, and `main` reports it.

use std::fmt::Display;
use std::process::ExitCode;

use crate::config::ConfigError;
use crate::observe::telemetry::TelemetryError;

/// Exit status of a bad configuration or bad policies at start (EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;
/// Exit status of `validate` with policy errors, of `test` with a failing case, and of a
/// failure after start (a port that cannot be bound, stdout closed).
pub const EXIT_FAILED: u8 = 1;

/// A failure that ends the process with a given status.
#[derive(Debug)]
pub struct Exit {
    status: u8,
    message: String,
}

impl Exit {
    /// A configuration (or the policies it names) that cannot be used: exit 64.
    pub fn config(message: impl Display) -> Self {
        Self {
            status: EXIT_CONFIG,
            message: message.to_string(),
        }
    }

    /// A failure: exit 1.
    pub fn failed(message: impl Display) -> Self {
        Self {
            status: EXIT_FAILED,
            message: message.to_string(),
        }
    }

    /// A failure already reported on stdout (a failing test case): exit 1, nothing more said.
    #[must_use]
    pub fn reported() -> Self {
        Self::failed("")
    }

    /// Says why on stderr and gives the status.
    #[must_use]
    pub fn report(self) -> ExitCode {
        if !self.message.is_empty() {
            eprintln!("policy-sidecar: {}", self.message);
        }
        ExitCode::from(self.status)
    }
}

impl From<ConfigError> for Exit {
    fn from(error: ConfigError) -> Self {
        Self::config(error)
    }
}

impl From<TelemetryError> for Exit {
    fn from(error: TelemetryError) -> Self {
        Self::config(error)
    }
}
