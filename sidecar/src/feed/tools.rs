//! The tools that type `context.input` (and the prompts whose arguments type `GetPrompt`), for
//! the commands that run once (`validate`, `schema`, `test`) and for `run` with a tools file:
//! a tools file, the upstream's `tools/list` (and `prompts/list`), or nothing.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::upstream_tools::{self, FetchedTools};
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
/// The result form may also carry `"prompts": [...]`, the prompts of a `prompts/list` result,
/// whose declared arguments type `GetPrompt`.
///
/// # Errors
/// [`ToolsError::File`] naming the file.
pub fn read_tools_file(file: &Path) -> Result<FetchedTools, ToolsError> {
    let error = |message: String| ToolsError::File {
        file: file.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(file).map_err(|e| error(e.to_string()))?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| error(format!("line {} column {}: {e}", e.line(), e.column())))?;
    let (tools, prompts) = match value {
        Value::Object(mut result) => (
            result.remove("tools").ok_or_else(|| {
                error("expected a tools/list result with a `tools` array".to_owned())
            })?,
            result.remove("prompts"),
        ),
        other => (other, None),
    };
    let Value::Array(tools) = tools else {
        return Err(error("`tools` must be an array".to_owned()));
    };
    let prompts = match prompts {
        None => Vec::new(),
        Some(Value::Array(prompts)) => prompts,
        Some(_) => return Err(error("`prompts` must be an array".to_owned())),
    };
    Ok(FetchedTools { tools, prompts })
}

/// The tools as configured (`tools` overrides the schema source); `None` for `schema = "none"`.
///
/// # Errors
/// A tools file that does not read, or an upstream that does not answer in one try.
pub async fn tools_for(
    config: &Config,
    tools: Option<&Path>,
) -> Result<Option<FetchedTools>, ToolsError> {
    if let Some(file) = tools {
        return read_tools_file(file).map(Some);
    }
    match &config.policy.schema {
        SchemaSource::None | SchemaSource::CedarSchema(_) => Ok(None),
        SchemaSource::File(file) => read_tools_file(file).map(Some),
        SchemaSource::Upstream => {
            let client = upstream::client(config.upstream.connect_timeout);
            let timeout = config.upstream.timeout.min(ONE_SHOT_TIMEOUT);
            let prompts = config
                .policy
                .govern
                .governs(policy_layer::model::Capability::Prompts);
            upstream_tools::fetch(&client, &config.upstream.url, timeout, prompts)
                .await
                .map(Some)
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
        assert_eq!(read_tools_file(&list).expect("reads").tools.len(), 1);
        let array = dir.path().join("array.json");
        std::fs::write(&array, r#"[{"name": "a"}, {"name": "b"}]"#).expect("write");
        assert_eq!(read_tools_file(&array).expect("reads").tools.len(), 2);
        let prompts = dir.path().join("prompts.json");
        std::fs::write(
            &prompts,
            r#"{"tools": [], "prompts": [{"name": "p", "arguments": [{"name": "topic", "required": true}]}]}"#,
        )
        .expect("write");
        let read = read_tools_file(&prompts).expect("reads");
        assert!(read.catalog().prompt("p").is_some());
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{\n  \"tools\": [,]}").expect("write");
        let err = read_tools_file(&bad).expect_err("bad").to_string();
        assert!(err.contains("bad.json: line 2 column"), "{err}");
    }
}
