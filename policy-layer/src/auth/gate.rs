//! Authentication as a step of the request: who the caller is, or the 401/403 refusal that
//! points at the protected resource metadata.

use std::sync::Arc;

use http::request::Parts;

use super::metadata::ProtectedResource;
use super::{AuthError, Authenticator, Identity};
use crate::protocol::TrustedProxies;
use crate::reply::Refusal;

/// Where a request's identity comes from.
#[derive(Clone)]
pub(crate) enum IdentitySource {
    /// An `Arc<Identity>` request extension set by an earlier layer; none -> 401.
    Extension,
    /// Bearer tokens verified by the authenticator (or anonymous when it is `none`).
    Authenticator(Authenticator),
}

/// The authentication step: the identity source, the metadata it advertises, and the
/// proxies whose forwarded headers name the client's host.
#[derive(Clone)]
pub(crate) struct Gate {
    pub(crate) source: IdentitySource,
    pub(crate) metadata: Option<ProtectedResource>,
    /// Where clients reach the endpoint, when fixed (applied to `metadata`, whenever set).
    pub(crate) public_url: Option<http::Uri>,
    pub(crate) proxies: TrustedProxies,
}

impl Gate {
    /// Proves who sent the request.
    ///
    /// # Errors
    /// [`Refusal::Unauthorized`] with the authentication error and the metadata URL.
    pub(crate) async fn authenticate(&self, parts: &Parts) -> Result<Arc<Identity>, Refusal> {
        let error = if query_token(parts.uri.query()) {
            // RFC 6750 section 2.3 tokens are never accepted, and a request carrying one is
            // refused outright, so the token does not travel on in the URL either.
            AuthError::Malformed("a token in the query string is never accepted")
        } else {
            match &self.source {
                IdentitySource::Authenticator(authenticator) => {
                    match authenticator.authenticate(&parts.headers).await {
                        Ok(identity) => return Ok(identity),
                        Err(e) => e,
                    }
                }
                IdentitySource::Extension => match parts.extensions.get::<Arc<Identity>>() {
                    Some(identity) => return Ok(Arc::clone(identity)),
                    None => AuthError::MissingToken,
                },
            }
        };
        let metadata_url = self
            .metadata
            .as_ref()
            .map(|m| m.metadata_url(parts, &self.proxies));
        Err(Refusal::Unauthorized {
            error,
            metadata_url,
        })
    }
}

/// Whether any query parameter's name decodes to `access_token`, in any case, however often
/// it was percent-encoded (`%61ccess_token`, `%2561ccess_token`, `ACCESS_TOKEN`).
fn query_token(query: Option<&str>) -> bool {
    let Some(query) = query else {
        return false;
    };
    query.split(['&', ';']).any(|pair| {
        let mut name = pair.split('=').next().unwrap_or_default().replace('+', " ");
        // Decoding stops when nothing changes; each round shortens the text.
        for _ in 0..8 {
            let decoded = percent_decode(&name);
            if decoded == name {
                break;
            }
            name = decoded;
        }
        name.trim().eq_ignore_ascii_case("access_token")
    })
}

/// One round of percent-decoding (bytes that are not UTF-8 stay as replacement characters).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).and_then(|b| (*b as char).to_digit(16)),
                bytes.get(i + 2).and_then(|b| (*b as char).to_digit(16)),
            )
        {
            out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'?'));
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_parameter_is_found_in_any_spelling() {
        for query in [
            "access_token=x",
            "a=1&access_token=x",
            "ACCESS_TOKEN=x",
            "%61ccess_token=x",
            "%2561ccess%5Ftoken=x",
            "a=1;Access_Token=x",
            "access_token",
            "%61%63%63%65%73%73%5f%74%6f%6b%65%6e=x",
        ] {
            assert!(query_token(Some(query)), "{query}");
        }
        for query in ["token=x", "access_tokens=x", "x=access_token", ""] {
            assert!(!query_token(Some(query)), "{query}");
        }
        assert!(!query_token(None));
    }
}
