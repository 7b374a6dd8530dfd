//! Where `context.system.now` comes from: the system clock, or, for end-to-end tests of
//! time-based policies only, a file that holds the time.
//!
//! The test clock is turned on by the environment variable [`TEST_CLOCK_VAR`] naming a file
//! that holds one RFC 3339 instant (`2025-01-15T09:30:00Z`). It is not a config key (no
//! `policy-sidecar.toml` or `POLICY_SIDECAR_*` variable can turn it on), the sidecar says so in
//! a warning at start and in `/metrics` (`mcp_policy_test_clock 1`), and a file that cannot
//! be read at start stops the sidecar (exit 64). The file is read again on every decision
//! (tests write it whole, by rename, and the next call sees the new time; no waiting); a read
//! that fails later keeps the last good time and logs a warning. The test clock moves only
//! `context.system.now`: rate limit windows keep the real time.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use policy_layer::{Clock, SystemClock, Timestamp};

/// The environment variable that turns the test clock on: the path of the file it reads.
pub const TEST_CLOCK_VAR: &str = "MCP_POLICY_TEST_CLOCK_FILE";

/// The test clock's file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{TEST_CLOCK_VAR}: {file}: {message}")]
pub struct ClockError {
    file: String,
    message: String,
}

/// The clock the layer reads: the system clock, or the test clock when [`TEST_CLOCK_VAR`]
/// is set; `true` for the test clock.
///
/// # Errors
/// [`ClockError`] when the variable names a file that does not hold an RFC 3339 instant.
pub fn from_env() -> Result<(Arc<dyn Clock>, bool), ClockError> {
    match std::env::var_os(TEST_CLOCK_VAR) {
        None => Ok((Arc::new(SystemClock), false)),
        Some(file) => {
            let clock = FileClock::open(PathBuf::from(file))?;
            tracing::warn!(
                file = %clock.file.display(),
                now = %clock.now(),
                "{TEST_CLOCK_VAR} is set: context.system.now is read from this file, not the system clock. For tests only; never set it in production"
            );
            Ok((Arc::new(clock), true))
        }
    }
}

/// A clock that reads the time from a file on every call.
#[derive(Debug)]
pub struct FileClock {
    file: PathBuf,
    last: AtomicI64,
}

impl FileClock {
    /// A clock reading `file`, which must hold an RFC 3339 instant now.
    ///
    /// # Errors
    /// [`ClockError`] when it does not.
    pub fn open(file: PathBuf) -> Result<Self, ClockError> {
        let now = read(&file).map_err(|message| ClockError {
            file: file.display().to_string(),
            message,
        })?;
        Ok(Self {
            file,
            last: AtomicI64::new(now.unix_millis()),
        })
    }
}

fn read(file: &Path) -> Result<Timestamp, String> {
    let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    Timestamp::parse_rfc3339(&text).map_err(|e| e.to_string())
}

impl Clock for FileClock {
    fn now(&self) -> Timestamp {
        match read(&self.file) {
            Ok(now) => {
                self.last.store(now.unix_millis(), Ordering::Relaxed);
                now
            }
            Err(error) => {
                let last = Timestamp::from_unix_millis(self.last.load(Ordering::Relaxed));
                tracing::warn!(file = %self.file.display(), %error, %last, "test clock unreadable; keeping its last time");
                last
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_clock_follows_its_file_and_keeps_the_last_good_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("now");
        std::fs::write(&file, "2025-01-15T09:30:00Z\n").expect("write");
        let clock = FileClock::open(file.clone()).expect("valid");
        assert_eq!(clock.now().to_string(), "2025-01-15T09:30:00.000Z");
        std::fs::write(&file, "2025-01-15T20:00:00+01:00").expect("write");
        assert_eq!(clock.now().to_string(), "2025-01-15T19:00:00.000Z");
        std::fs::write(&file, "tea time").expect("write");
        assert_eq!(clock.now().to_string(), "2025-01-15T19:00:00.000Z");
        let err = FileClock::open(file).expect_err("not a time").to_string();
        assert!(err.starts_with("MCP_POLICY_TEST_CLOCK_FILE: "), "{err}");
    }
}
