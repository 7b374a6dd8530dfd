//! Why a request was not authenticated, and why the authenticator could not start.
//!
//! Messages never contain token material (no token text, no claims, no key ids),
//! so they are safe to log and to return to clients.

use std::sync::Arc;

use http::{HeaderValue, StatusCode};

use super::config::ConfigError;
use super::jwks::JwksError;

/// Why a bearer token was refused.
///
/// Every variant maps to HTTP 401 `error="invalid_token"`, except [`AuthError::ClientNotAllowed`]
/// and [`AuthError::InsufficientScope`], which map to 403 `error="insufficient_scope"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No `Authorization: Bearer ...` header was sent.
    #[error("missing bearer token")]
    MissingToken,
    /// The header or the token could not be parsed; the text says which part (never its content).
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// `exp` lies in the past, beyond the leeway.
    #[error("token expired")]
    Expired,
    /// `nbf` lies in the future, beyond the leeway.
    #[error("token not yet valid")]
    NotYetValid,
    /// The signature does not verify with the key the token names.
    #[error("invalid token signature")]
    BadSignature,
    /// No key of the issuer's key set matches the token's `kid`, even after a refetch.
    #[error("no signing key matches the token")]
    UnknownKid,
    /// `iss` names no configured issuer.
    #[error("token issuer is not trusted")]
    WrongIssuer,
    /// `aud` names none of the configured audiences.
    #[error("token audience is not accepted")]
    WrongAudience,
    /// The header's `alg` is `none`, an HMAC algorithm, unknown, or does not fit the key.
    #[error("token algorithm is not allowed")]
    DisallowedAlgorithm,
    /// Neither `client_id` nor `azp` is among `allowed_clients`.
    #[error("token client is not allowed")]
    ClientNotAllowed,
    /// The token's `scope` contains none of `allowed_scopes`.
    #[error("token lacks a required scope")]
    InsufficientScope {
        /// The accepted scopes, space-separated, as advertised in `WWW-Authenticate`.
        required: Arc<str>,
    },
    /// The issuer's key set has never been fetched successfully: fail closed.
    #[error("no signing keys available")]
    NoKeys,
}

impl AuthError {
    /// A short snake_case label for metrics and logs, e.g. `"expired"` or `"unknown_kid"`.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::Malformed(_) => "malformed",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::BadSignature => "bad_signature",
            Self::UnknownKid => "unknown_kid",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::DisallowedAlgorithm => "disallowed_algorithm",
            Self::ClientNotAllowed => "client_not_allowed",
            Self::InsufficientScope { .. } => "insufficient_scope",
            Self::NoKeys => "no_keys",
        }
    }

    /// The HTTP status to answer with: 403 when the caller is known but not allowed, else 401.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::ClientNotAllowed | Self::InsufficientScope { .. } => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// The `WWW-Authenticate` header value (RFC 6750, RFC 9728) pointing clients at the
    /// protected resource metadata, e.g.
    /// `Bearer error="invalid_token", resource_metadata="https://mcp.example/.well-known/oauth-protected-resource"`.
    #[must_use]
    pub fn www_authenticate(&self, resource_metadata_url: &str) -> HeaderValue {
        self.challenge(Some(resource_metadata_url))
    }

    /// The `WWW-Authenticate` header value, with `resource_metadata` when there is a
    /// metadata document to point to.
    #[must_use]
    pub fn challenge(&self, resource_metadata_url: Option<&str>) -> HeaderValue {
        let mut value = String::with_capacity(64 + resource_metadata_url.map_or(0, str::len));
        match self {
            Self::InsufficientScope { required } => {
                value.push_str("Bearer error=\"insufficient_scope\", scope=");
                push_quoted(&mut value, required);
            }
            Self::ClientNotAllowed => value.push_str("Bearer error=\"insufficient_scope\""),
            _ => value.push_str("Bearer error=\"invalid_token\""),
        }
        if let Some(url) = resource_metadata_url {
            value.push_str(", resource_metadata=");
            push_quoted(&mut value, url);
        }
        HeaderValue::from_str(&value).unwrap_or_else(|_| match self.status() {
            // The URL held bytes a header cannot carry: answer without it rather than fail.
            StatusCode::FORBIDDEN => {
                HeaderValue::from_static("Bearer error=\"insufficient_scope\"")
            }
            _ => HeaderValue::from_static("Bearer error=\"invalid_token\""),
        })
    }
}

/// Appends `text` as an RFC 9110 quoted-string.
fn push_quoted(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// Why [`Authenticator::start`](super::Authenticator::start) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthStartError {
    /// The `[auth]` configuration is invalid; the message names the key.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The HTTP client for JWKS and discovery could not be built.
    #[error("auth: cannot build the http client for jwks")]
    HttpClient(#[source] reqwest::Error),
    /// A local `jwks_file` could not be read or holds no usable key.
    #[error("auth: cannot load the jwks of issuer {issuer}")]
    Jwks {
        /// The issuer whose key set failed.
        issuer: String,
        /// What went wrong.
        #[source]
        source: JwksError,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRM: &str = "https://mcp.example/.well-known/oauth-protected-resource";

    #[test]
    fn invalid_token_challenge_names_resource_metadata() {
        let value = AuthError::Expired.www_authenticate(PRM);
        assert_eq!(
            value.to_str().ok(),
            Some(
                "Bearer error=\"invalid_token\", resource_metadata=\"https://mcp.example/.well-known/oauth-protected-resource\""
            )
        );
        assert_eq!(AuthError::Expired.status(), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn insufficient_scope_is_forbidden_and_lists_scopes() {
        let err = AuthError::InsufficientScope {
            required: Arc::from("tools:call admin"),
        };
        assert_eq!(err.status(), StatusCode::FORBIDDEN);
        assert_eq!(err.reason(), "insufficient_scope");
        assert_eq!(
            err.www_authenticate(PRM).to_str().ok(),
            Some(
                "Bearer error=\"insufficient_scope\", scope=\"tools:call admin\", resource_metadata=\"https://mcp.example/.well-known/oauth-protected-resource\""
            )
        );
    }

    #[test]
    fn client_not_allowed_is_forbidden() {
        assert_eq!(AuthError::ClientNotAllowed.status(), StatusCode::FORBIDDEN);
        let value = AuthError::ClientNotAllowed.www_authenticate(PRM);
        assert!(
            value
                .to_str()
                .is_ok_and(|v| v.starts_with("Bearer error=\"insufficient_scope\""))
        );
    }

    #[test]
    fn quotes_in_metadata_url_are_escaped() {
        let value = AuthError::MissingToken.www_authenticate("https://x/\"a\\b");
        assert_eq!(
            value.to_str().ok(),
            Some("Bearer error=\"invalid_token\", resource_metadata=\"https://x/\\\"a\\\\b\"")
        );
    }

    #[test]
    fn unprintable_metadata_url_falls_back_to_bare_challenge() {
        let value = AuthError::BadSignature.www_authenticate("https://x/\n");
        assert_eq!(value.to_str().ok(), Some("Bearer error=\"invalid_token\""));
    }

    #[test]
    fn reasons_are_snake_case_labels() {
        let all = [
            AuthError::MissingToken,
            AuthError::Malformed("header"),
            AuthError::Expired,
            AuthError::NotYetValid,
            AuthError::BadSignature,
            AuthError::UnknownKid,
            AuthError::WrongIssuer,
            AuthError::WrongAudience,
            AuthError::DisallowedAlgorithm,
            AuthError::ClientNotAllowed,
            AuthError::InsufficientScope {
                required: Arc::from("a"),
            },
            AuthError::NoKeys,
        ];
        for err in all {
            let reason = err.reason();
            assert!(
                reason.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{reason}"
            );
        }
    }
}
