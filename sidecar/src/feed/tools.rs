//! The tools that type `context.input`, for the commands that run once (`validate`, `schema`,
//! `test`): a tools file, the upstream's `tools/list`, or nothing.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::upstream_tools;
use crate::config::{Config, SchemaSource};
use crate::proxy::upstream;

/// Longest wait for one request when the tools are fetched once from the upstream.
pub const ONE_SHOT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the tools could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ToolsError {
    /// The tools file could not be read or parsed.
    #[error("{file}: {message}")]
    File {
        /// The file.
        file: String,
        /// What went wrong.
        message: String,
    },
    /// The upstream did not answer.
    #[error("fetching the tools from {url}: {source}")]
    Upstream {
        /// The upstream URL.
        url: String,
        /// Why.
        #[source]
        source: upstream_tools::FetchError,
    },
}

/// The tools of a tools file: a `tools/list` result (`{"tools": [...]}`) or the array itself.
///
/// # Errors
/// [`ToolsError::File`] naming the file.
pub fn read_tools_file(file: &Path) -> Result<Vec<Value>, ToolsError> {
    let error = |message: String| ToolsError::File {
        file: file.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(file).map_err(|e| error(e.to_string()))?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| error(format!("line {} column {}: {e}", e.line(), e.column())))?;
    let value = match value {
        Value::Object(mut result) => result
            .remove("tools")
            .ok_or_else(|| error("expected a tools/list result with a `tools` array".to_owned()))?,
        other => other,
    };
    match value {
        Value::Array(tools) => Ok(tools),
        _ => Err(error("`tools` must be an array".to_owned())),
    }
}

/// The tools as configured (`tools` overrides the schema source); `None` for `schema = "none"`.
///
/// # Errors
/// A tools file that does not read, or an upstream that does not answer in one try.
pub async fn tools_for(
    config: &Config,
    tools: Option<&Path>,
) -> Result<Option<Vec<Value>>, ToolsError> {
    if let Some(file) = tools {
        return read_tools_file(file).map(Some);
    }
    match &config.policy.schema {
        SchemaSource::None | SchemaSource::CedarSchema(_) => Ok(None),
        SchemaSource::File(file) => read_tools_file(file).map(Some),
        SchemaSource::Upstream => {
            let client = upstream::client(config.upstream.connect_timeout);
            let timeout = config.upstream.timeout.min(ONE_SHOT_TIMEOUT);
            upstream_tools::fetch(&client, &config.upstream.url, timeout)
                .await
                .map(|fetched| Some(fetched.tools))
                .map_err(|source| ToolsError::Upstream {
                    url: config.upstream.url.to_string(),
                    source,
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_list_result_or_an_array() {
        let dir = tempfile::tempdir().expect("tempdir");
        let list = dir.path().join("list.json");
        std::fs::write(&list, r#"{"tools": [{"name": "a"}], "nextCursor": null}"#).expect("write");
        assert_eq!(read_tools_file(&list).expect("reads").len(), 1);
        let array = dir.path().join("array.json");
        std::fs::write(&array, r#"[{"name": "a"}, {"name": "b"}]"#).expect("write");
        assert_eq!(read_tools_file(&array).expect("reads").len(), 2);
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{\n  \"tools\": [,]}").expect("write");
        let err = read_tools_file(&bad).expect_err("bad").to_string();
        assert!(err.contains("bad.json: line 2 column"), "{err}");
    }
}
