//! `Origin`: a request that carries one is a browser page's, and only the pages of allowed
//! origins may call (the MCP transport's defence against DNS rebinding: a page of another site
//! that resolves its own name to this address). A request without `Origin` is not a
//! browser's and passes.

use http::HeaderMap;

use crate::reply::Refusal;

/// One origin, compared as scheme, host and port (the scheme's default port filled in).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    fn parse(text: &str) -> Option<Self> {
        let (scheme, rest) = text.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
            return None;
        }
        // `[::1]:8080`, `host:8080`, `host`.
        let (host, port) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains(']') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        let port = match port {
            Some(p) => p.parse().ok()?,
            None => default_port,
        };
        if host.is_empty() {
            return None;
        }
        Some(Self {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

/// The origins whose pages may call. Empty: no browser page may.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    allowed: Vec<Origin>,
}

/// An allowed origin that is not `scheme://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an origin (scheme://host[:port], http or https)")]
pub struct BadOrigin(pub String);

impl Origins {
    /// The origins in `list` (`http://localhost:8080`, `https://app.example`).
    ///
    /// # Errors
    /// [`BadOrigin`] for an entry that is not an origin.
    pub fn new<I, S>(list: I) -> Result<Self, BadOrigin>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let allowed = list
            .into_iter()
            .map(|s| Origin::parse(s.as_ref()).ok_or_else(|| BadOrigin(s.as_ref().to_owned())))
            .collect::<Result<_, _>>()?;
        Ok(Self { allowed })
    }

    /// Checks the request's `Origin`, if it has one.
    ///
    /// # Errors
    /// [`Refusal::OriginNotAllowed`] for an origin not in the list (or not an origin at all,
    /// `null` included).
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let Some(value) = headers.get(http::header::ORIGIN) else {
            return Ok(());
        };
        let text = String::from_utf8_lossy(value.as_bytes());
        match Origin::parse(&text) {
            Some(origin) if self.allowed.contains(&origin) => Ok(()),
            _ => Err(Refusal::OriginNotAllowed(text.into_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with_origin(origin: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::ORIGIN, HeaderValue::from_static(origin));
        headers
    }

    #[test]
    fn allowed_origins_pass_and_others_are_refused() {
        let origins = Origins::new(["http://127.0.0.1:8080", "https://app.example"]).expect("ok");
        assert_eq!(origins.check(&HeaderMap::new()), Ok(()));
        assert_eq!(origins.check(&with_origin("http://127.0.0.1:8080")), Ok(()));
        assert_eq!(
            origins.check(&with_origin("HTTPS://APP.example:443")),
            Ok(())
        );
        for foreign in [
            "http://evil.example:8080",
            "http://127.0.0.1:8081",
            "https://127.0.0.1:8080",
            "null",
            "http://127.0.0.1:8080@evil.example",
        ] {
            assert!(
                matches!(
                    origins.check(&with_origin(foreign)),
                    Err(Refusal::OriginNotAllowed(_))
                ),
                "{foreign}"
            );
        }
    }

    #[test]
    fn no_allowed_origin_refuses_every_page() {
        let origins = Origins::default();
        assert!(origins.check(&with_origin("http://localhost")).is_err());
        assert_eq!(origins.check(&HeaderMap::new()), Ok(()));
    }

    #[test]
    fn ipv6_origins_keep_their_port() {
        let origins = Origins::new(["http://[::1]:8080"]).expect("ok");
        assert_eq!(origins.check(&with_origin("http://[::1]:8080")), Ok(()));
        assert!(origins.check(&with_origin("http://[::1]")).is_err());
        assert!(Origins::new(["ftp://x"]).is_err());
        assert!(Origins::new(["http://x/path"]).is_err());
    }
}
