//! Finding and reading the `.cedar` files named by `[policy] paths`.
//!
//! Folders are walked recursively; entries whose name starts with a dot are skipped
//! (Kubernetes ConfigMap mounts hold `..data` and `..<timestamp>` links to the same files);
//! files are sorted so that policy ids and error order never depend on the directory order.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use policy_layer::PolicySource;
use policy_layer::engine::{LoadErrors, LoadedPolicies};

/// Why the policy files could not be turned into a policy set.
#[derive(Debug, thiserror::Error)]
pub enum PolicyFilesError {
    /// A configured path or a file in it could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The Cedar text does not load (each error names file, line and column).
    #[error("{0}")]
    Load(#[from] LoadErrors),
    /// The policies load but validation refuses them.
    #[error("{0}")]
    Refused(#[from] policy_layer::engine::Refused),
}

fn io_error(path: &Path, source: std::io::Error) -> PolicyFilesError {
    PolicyFilesError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Every `.cedar` file under `paths`, sorted. A configured path that does not exist is an
/// error when `strict` (at start), and contributes nothing otherwise (a deleted file).
///
/// # Errors
/// [`PolicyFilesError::Io`] naming the path.
pub fn discover(paths: &[PathBuf], strict: bool) -> Result<Vec<PathBuf>, PolicyFilesError> {
    let mut files = Vec::new();
    for path in paths {
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => walk(path, &mut files)?,
            // A file named explicitly is loaded whatever its extension.
            Ok(_) => files.push(path.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !strict => {}
            Err(e) => return Err(io_error(path, e)),
        }
    }
    files.sort();
    files.dedup();
    Ok(files)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), PolicyFilesError> {
    let entries = std::fs::read_dir(dir).map_err(|e| io_error(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        // Follows links: ConfigMap files are links into `..data`.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue; // a dangling link or a file removed meanwhile
        };
        if meta.is_dir() {
            walk(&path, files)?;
        } else if path.extension().is_some_and(|e| e == "cedar") {
            files.push(path);
        }
    }
    Ok(())
}

/// The text of every policy file.
///
/// # Errors
/// [`PolicyFilesError::Io`] naming the file.
pub fn read_sources(files: &[PathBuf]) -> Result<Vec<PolicySource>, PolicyFilesError> {
    files
        .iter()
        .map(|file| {
            std::fs::read_to_string(file)
                .map(|text| PolicySource::new(file.display().to_string(), text))
                .map_err(|e| io_error(file, e))
        })
        .collect()
}

/// Discovers, reads and loads the policies under `paths`.
///
/// # Errors
/// I/O errors naming the path, or every load error with file, line and column.
pub fn load(
    paths: &[PathBuf],
    strict: bool,
) -> Result<(Vec<PolicySource>, LoadedPolicies), PolicyFilesError> {
    let sources = read_sources(&discover(paths, strict)?)?;
    let loaded = policy_layer::engine::load(&sources)?;
    Ok((sources, loaded))
}

/// What the poll compares: each file with its size and modification time.
pub type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

/// The current fingerprint of the policy files (unreadable entries count as absent).
#[must_use]
pub fn fingerprint(paths: &[PathBuf]) -> Fingerprint {
    discover(paths, false)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|file| {
            let meta = std::fs::metadata(&file).ok()?;
            Some((file, meta.len(), meta.modified().ok()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_folders_sorted_skipping_dot_entries_and_other_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("..data")).expect("mkdir");
        std::fs::create_dir_all(root.join("sub")).expect("mkdir");
        std::fs::write(root.join("..data/b.cedar"), "").expect("write");
        std::fs::write(root.join(".hidden.cedar"), "").expect("write");
        std::fs::write(root.join("b.cedar"), "").expect("write");
        std::fs::write(root.join("a.cedar"), "").expect("write");
        std::fs::write(root.join("policy-sidecar.toml"), "").expect("write");
        std::fs::write(root.join("sub/c.cedar"), "").expect("write");
        let files = discover(&[root.to_path_buf()], true).expect("discovers");
        let names: Vec<String> = files
            .iter()
            .map(|f| {
                f.strip_prefix(root)
                    .expect("under root")
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(names, ["a.cedar", "b.cedar", "sub/c.cedar"]);
    }

    #[test]
    fn missing_path_is_an_error_only_at_start() {
        let missing = PathBuf::from("/nonexistent/policies");
        let err = discover(std::slice::from_ref(&missing), true).expect_err("missing");
        assert!(
            err.to_string().starts_with("/nonexistent/policies: "),
            "{err}"
        );
        assert!(discover(&[missing], false).expect("lenient").is_empty());
    }

    #[test]
    fn load_errors_carry_file_line_and_column() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("bad.cedar"),
            "permit(principal, action, resource);\nforbid(principal,",
        )
        .expect("write");
        let err = load(&[dir.path().to_path_buf()], true).expect_err("bad");
        let text = err.to_string();
        let expected = format!("{}:2:", dir.path().join("bad.cedar").display());
        assert!(text.starts_with(&expected), "{text}");
    }
}
