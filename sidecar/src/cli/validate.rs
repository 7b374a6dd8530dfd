//! `validate`: load the config and the policies, validate them against the schema (from the
//! tools file, a `.cedarschema`, or the upstream when it answers); report every error.

use super::args::ConfigArg;
use super::exit::Exit;
use super::pin;
use crate::config::Config;
use crate::feed::policy_files::{self, PolicyFilesError};
use crate::feed::{engine, pins, tools};

/// Prints every error and finding with its position, then `ok: N policies in M files`.
///
/// # Errors
/// Exit 64 for a configuration that cannot be used; exit 1 for policy errors or findings.
pub async fn validate(args: &ConfigArg) -> Result<(), Exit> {
    let config = Config::load(&args.config)?;
    let (sources, loaded) = match policy_files::load(&config.policy.paths, true) {
        Ok(loaded) => loaded,
        Err(PolicyFilesError::Load(errors)) => {
            for error in &errors.0 {
                println!("{error}");
            }
            return Err(Exit::failed(format!("{} error(s)", errors.0.len())));
        }
        Err(other) => return Err(Exit::failed(other)),
    };
    let engine = engine::build(&config).map_err(Exit::config)?;
    let mut drift = Vec::new();
    match tools::tools_for(&config, None).await {
        Ok(Some(tools)) => {
            let catalog = tools.catalog();
            if let Some(path) = &config.policy.tools_lock {
                let lock = pins::read_lock(path).map_err(Exit::failed)?;
                drift = pin::report(&lock, &catalog);
            }
            let _ = engine.set_catalog(catalog);
        }
        Ok(None) => {}
        Err(e) => println!("warning: {e}; policies are checked without the upstream's schema"),
    }
    for line in &drift {
        println!("{line}");
    }
    if !drift.is_empty() {
        return Err(Exit::failed(format!(
            "{} tool(s) do not match tools.lock: review them, then `policy-sidecar pin`",
            drift.len()
        )));
    }
    let count = loaded.policies.len();
    match engine.set_policies(loaded) {
        Ok(report) => {
            for note in &report.notes {
                println!("note: {note}");
            }
            for finding in &report.findings {
                println!("warning: {finding}");
            }
            if let Some(analysis) = &report.analysis {
                println!("{analysis}");
            }
            println!("ok: {count} policies in {} files", sources.len());
            Ok(())
        }
        Err(refused) => {
            for note in &refused.notes {
                println!("note: {note}");
            }
            for finding in &refused.findings {
                println!("{finding}");
            }
            Err(Exit::failed(format!(
                "{} finding(s) (policy.validation = {})",
                refused.findings.len(),
                config.policy.validation
            )))
        }
    }
}
