//! What is wrong with a configuration: the message names the file and the key, and the line
//! and column when the TOML itself is wrong.

/// A configuration that cannot be used; its message names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: {source}")]
    Read {
        /// The config file.
        file: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TOML does not parse, or a key is unknown or of the wrong type.
    #[error("{file}:{line}:{column}: {message}")]
    Toml {
        /// The config file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A key's value is not usable.
    #[error("{file}: {key}: {message}")]
    Key {
        /// The config file.
        file: String,
        /// `section.key`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// An environment override is unknown or cannot be used.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    /// A TOML error in `text`, the content of `file`, with its line and column.
    pub fn toml(file: &str, text: &str, error: &toml::de::Error) -> Self {
        let (line, column) = error
            .span()
            .map_or((0, 0), |span| line_column(text, span.start));
        Self::Toml {
            file: file.to_owned(),
            line,
            column,
            message: error.message().trim().to_owned(),
        }
    }

    /// A key error of `file`.
    pub fn key(file: &str, error: KeyError) -> Self {
        Self::Key {
            file: file.to_owned(),
            key: error.key.to_owned(),
            message: error.message,
        }
    }
}

/// A key whose value a section cannot use (the file is added by [`ConfigError::key`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    /// `section.key`.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

impl KeyError {
    /// `key` cannot be used, because `message`.
    pub fn new(key: &'static str, message: impl Into<String>) -> Self {
        Self {
            key,
            message: message.into(),
        }
    }
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}
