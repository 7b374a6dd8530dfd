//! `pin`: write `tools.lock`, each tool's name and the hash of its description, inputSchema
//! and annotations as the upstream (or the tools file) describes it now (`docs/pinning.md`).
//! Run it after reviewing the tools; commit the lock beside the policies.

use std::collections::BTreeMap;
use std::path::PathBuf;

use policy_layer::model::{Drift, ToolsLock};

use super::args::PinArgs;
use super::exit::Exit;
use crate::config::Config;
use crate::feed::{pins, tools};

/// Writes the lock and prints what changed against the lock it replaces.
///
/// # Errors
/// Exit 64 for a configuration without a tool source; exit 1 when the tools cannot be read
/// or the lock cannot be written.
pub async fn pin(args: &PinArgs) -> Result<(), Exit> {
    let config = Config::load(&args.config.config)?;
    let out = output(args, &config);
    let fetched = tools::tools_for(&config, args.tools.as_deref())
        .await
        .map_err(Exit::failed)?
        .ok_or_else(|| {
            Exit::config(
                "pinning needs the tools' definitions: policy.schema = \"upstream\" or a tools file (or --tools FILE)",
            )
        })?;
    let lock = ToolsLock::from_catalog(&fetched.catalog());
    let before = out.exists().then(|| pins::read_lock(&out)).transpose();
    match before {
        Ok(Some(before)) => {
            for (tool, drift) in before.drift(&fetched.catalog()) {
                println!("{}", change(&tool, &drift));
            }
        }
        Ok(None) => {}
        Err(e) => println!("note: replacing a lock that does not read ({e})"),
    }
    std::fs::write(&out, lock.to_text())
        .map_err(|e| Exit::failed(format!("{}: {e}", out.display())))?;
    println!("pinned {} tools in {}", lock.len(), out.display());
    Ok(())
}

/// `--out`, else `policy.tools_lock`, else `tools.lock` beside the config file.
fn output(args: &PinArgs, config: &Config) -> PathBuf {
    args.out
        .clone()
        .or_else(|| config.policy.tools_lock.clone())
        .unwrap_or_else(|| {
            config
                .file
                .parent()
                .map_or_else(|| PathBuf::from("tools.lock"), |dir| dir.join("tools.lock"))
        })
}

/// One line of what re-pinning changes.
fn change(tool: &str, drift: &Drift) -> String {
    match drift {
        Drift::Unpinned => format!("added: {tool}"),
        Drift::Changed { .. } => format!("changed: {tool}"),
        Drift::Unknown => format!("removed: {tool}"),
    }
}

/// The drift of the configured lock against `catalog`, for `validate`: each line, by tool.
#[must_use]
pub fn report(lock: &ToolsLock, catalog: &policy_layer::model::ToolCatalog) -> Vec<String> {
    let drift: BTreeMap<String, Drift> = lock.drift(catalog);
    drift
        .iter()
        .map(|(tool, drift)| format!("tools.lock: {tool}: {drift}"))
        .collect()
}
