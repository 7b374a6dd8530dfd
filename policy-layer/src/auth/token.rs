//! The bearer token: taken from the `Authorization` header, inspected before verification
//! (algorithm policy, issuer routing), then verified with `jsonwebtoken` and checked against
//! one issuer's audiences, clients and scopes.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;
use http::header::AUTHORIZATION;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::config::IssuerSettings;
use super::error::AuthError;
use super::jwks::parse_alg;
use super::{Identity, PrincipalKind};

/// Longest token accepted; anything longer is refused before parsing.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Every algorithm a token may use (`docs/authentication.md`).
const ALLOWED_ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// The token from `Authorization: Bearer <token>`. Tokens are never read from the query string.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(AuthError::MissingToken);
    };
    if values.next().is_some() {
        return Err(AuthError::Malformed("more than one authorization header"));
    }
    // `from_utf8` has a fast ASCII path; the token's own characters are checked when decoded.
    let value = std::str::from_utf8(value.as_bytes())
        .map_err(|_| AuthError::Malformed("authorization header is not utf-8"))?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or(AuthError::MissingToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::MissingToken);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::MissingToken);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Malformed("token too large"));
    }
    Ok(token)
}

/// What is read from a token before its signature is checked: only to choose the key.
#[derive(Debug)]
pub(crate) struct Unverified {
    pub(crate) alg: Algorithm,
    pub(crate) kid: Option<String>,
    pub(crate) iss: Option<String>,
}

/// Reads the header and the `iss` claim, refusing `alg: none`, HMAC and unknown algorithms.
pub(crate) fn inspect(token: &str) -> Result<Unverified, AuthError> {
    #[derive(Deserialize)]
    struct Header {
        alg: String,
        #[serde(default)]
        kid: Option<String>,
        #[serde(default)]
        crit: Option<Value>,
    }
    #[derive(Deserialize)]
    struct Issuer {
        #[serde(default)]
        iss: Option<Value>,
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed("not a compact jws"));
    };
    let header: Header = decode_part(header).ok_or(AuthError::Malformed("unreadable header"))?;
    if header.crit.is_some() {
        // RFC 7515 4.1.11: extensions we do not understand must not be ignored.
        return Err(AuthError::Malformed("unsupported critical header"));
    }
    let alg = parse_alg(&header.alg)?;
    let claims: Issuer = decode_part(payload).ok_or(AuthError::Malformed("unreadable claims"))?;
    let iss = match claims.iss {
        Some(Value::String(iss)) => Some(iss),
        _ => None,
    };
    Ok(Unverified {
        alg,
        kid: header.kid,
        iss,
    })
}

fn decode_part<T: for<'de> Deserialize<'de>>(part: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    // Both parts must be JSON objects; serde would also take an array for a struct.
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    serde_json::from_slice(&bytes).ok()
}

/// One issuer's checks, with a `jsonwebtoken` validation prepared per algorithm.
#[derive(Debug)]
pub(crate) struct Checks {
    pub(crate) settings: IssuerSettings,
    validations: Vec<(Algorithm, Validation)>,
}

impl Checks {
    pub(crate) fn new(settings: IssuerSettings, leeway_secs: u64) -> Self {
        let validations = ALLOWED_ALGORITHMS
            .iter()
            .map(|alg| {
                let mut validation = Validation::new(*alg);
                validation.leeway = leeway_secs;
                validation.validate_exp = true;
                validation.validate_nbf = true;
                validation.set_issuer(&[&settings.issuer]);
                if settings.audiences.is_empty() {
                    validation.validate_aud = false;
                    validation.set_required_spec_claims(&["exp", "sub", "iss"]);
                } else {
                    validation.set_audience(&settings.audiences);
                    validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
                }
                (*alg, validation)
            })
            .collect();
        Self {
            settings,
            validations,
        }
    }

    /// Verifies the signature with `key`, then `exp`/`nbf`/`iss`/`aud`, clients and scopes.
    pub(crate) fn verify(
        &self,
        token: &str,
        alg: Algorithm,
        key: &DecodingKey,
    ) -> Result<Identity, AuthError> {
        let validation = self
            .validations
            .iter()
            .find_map(|(a, v)| (*a == alg).then_some(v))
            .ok_or(AuthError::DisallowedAlgorithm)?;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, key, validation)
            .map_err(map_error)?;
        let claims = data.claims;
        self.check_client(&claims)?;
        self.check_scope(&claims)?;
        identity(claims)
    }

    fn check_client(&self, claims: &Map<String, Value>) -> Result<(), AuthError> {
        let allowed = &self.settings.allowed_clients;
        if allowed.is_empty() {
            return Ok(());
        }
        let listed = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .is_some_and(|c| allowed.contains(c))
        };
        if listed("client_id") || listed("azp") {
            Ok(())
        } else {
            Err(AuthError::ClientNotAllowed)
        }
    }

    /// `scope` is a space-separated string (RFC 8693); `scp` (string or array) is read when
    /// `scope` is absent, as some issuers use it.
    fn check_scope(&self, claims: &Map<String, Value>) -> Result<(), AuthError> {
        let allowed = &self.settings.allowed_scopes;
        if allowed.is_empty() {
            return Ok(());
        }
        let granted = match claims.get("scope").or_else(|| claims.get("scp")) {
            Some(Value::String(scopes)) => {
                scopes.split_ascii_whitespace().any(|s| allowed.contains(s))
            }
            Some(Value::Array(scopes)) => scopes
                .iter()
                .filter_map(Value::as_str)
                .any(|s| allowed.contains(s)),
            _ => false,
        };
        if granted {
            Ok(())
        } else {
            Err(AuthError::InsufficientScope {
                required: self.settings.scope_hint.clone(),
            })
        }
    }
}

/// The verified claims as an [`Identity`]: `sub` is the subject, every other claim a tag.
fn identity(mut claims: Map<String, Value>) -> Result<Identity, AuthError> {
    let subject = match claims.remove("sub") {
        Some(Value::String(sub)) => sub,
        _ => return Err(AuthError::Malformed("sub is not a string")),
    };
    let expires_at = claims.get("exp").and_then(|exp| {
        // `exp` passed validation, so it is a non-negative number; a fraction is cut off.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        exp.as_u64().or_else(|| exp.as_f64().map(|f| f as u64))
    });
    let mut tags: Vec<(String, String)> = claims
        .into_iter()
        .map(|(name, value)| {
            let text = match value {
                Value::String(text) => text,
                other => other.to_string(),
            };
            (name, text)
        })
        .collect();
    tags.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(Identity {
        kind: PrincipalKind::OAuthUser,
        subject,
        tags,
        expires_at,
    })
}

fn map_error(error: jsonwebtoken::errors::Error) -> AuthError {
    match error.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => AuthError::BadSignature,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm => AuthError::DisallowedAlgorithm,
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "aud" => AuthError::WrongAudience,
            "iss" => AuthError::WrongIssuer,
            "exp" => AuthError::Malformed("missing exp claim"),
            "sub" => AuthError::Malformed("missing or non-string sub claim"),
            _ => AuthError::Malformed("missing required claim"),
        },
        ErrorKind::InvalidClaimFormat(_) => AuthError::Malformed("exp or nbf is not a number"),
        ErrorKind::InvalidToken => AuthError::Malformed("not a compact jws"),
        ErrorKind::Base64(_) => AuthError::Malformed("bad base64url"),
        ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
            AuthError::Malformed("claims are not a json object")
        }
        _ => AuthError::Malformed("cannot be verified"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&'static str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(AUTHORIZATION, HeaderValue::from_static(v));
        }
        map
    }

    fn part(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn takes_the_bearer_token_from_authorization() {
        assert_eq!(bearer_token(&headers(&["Bearer a.b.c"])), Ok("a.b.c"));
        assert_eq!(bearer_token(&headers(&["bearer   a.b.c  "])), Ok("a.b.c"));
    }

    #[test]
    fn refuses_missing_other_scheme_and_repeated_headers() {
        assert_eq!(bearer_token(&headers(&[])), Err(AuthError::MissingToken));
        assert_eq!(
            bearer_token(&headers(&["Basic dXNlcjpwdw=="])),
            Err(AuthError::MissingToken)
        );
        assert_eq!(
            bearer_token(&headers(&["Bearer"])),
            Err(AuthError::MissingToken)
        );
        assert_eq!(
            bearer_token(&headers(&["Bearer  "])),
            Err(AuthError::MissingToken)
        );
        assert!(matches!(
            bearer_token(&headers(&["Bearer a", "Bearer b"])),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn refuses_oversized_tokens() {
        let mut map = HeaderMap::new();
        let big = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        map.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&big).unwrap_or(HeaderValue::from_static("")),
        );
        assert_eq!(
            bearer_token(&map),
            Err(AuthError::Malformed("token too large"))
        );
    }

    #[test]
    fn inspect_refuses_none_and_hmac_before_anything_else() {
        for alg in ["none", "HS256", "HS512", "foo"] {
            let token = format!(
                "{}.{}.",
                part(&format!(r#"{{"alg":"{alg}"}}"#)),
                part(r#"{"iss":"x"}"#)
            );
            assert_eq!(
                inspect(&token).err(),
                Some(AuthError::DisallowedAlgorithm),
                "{alg}"
            );
        }
    }

    #[test]
    fn inspect_reads_kid_and_issuer() {
        let token = format!(
            "{}.{}.sig",
            part(r#"{"alg":"ES256","kid":"k1"}"#),
            part(r#"{"iss":"https://i"}"#)
        );
        let unverified = inspect(&token).ok();
        assert!(unverified.is_some_and(|u| u.alg == Algorithm::ES256
            && u.kid.as_deref() == Some("k1")
            && u.iss.as_deref() == Some("https://i")));
    }

    #[test]
    fn inspect_refuses_malformed_and_critical_headers() {
        assert_eq!(
            inspect("abc").err(),
            Some(AuthError::Malformed("not a compact jws"))
        );
        assert_eq!(
            inspect("a.b.c.d").err(),
            Some(AuthError::Malformed("not a compact jws"))
        );
        assert_eq!(
            inspect("!!.b.c").err(),
            Some(AuthError::Malformed("unreadable header"))
        );
        let crit = format!(
            "{}.{}.s",
            part(r#"{"alg":"RS256","crit":["exp"]}"#),
            part("{}")
        );
        assert_eq!(
            inspect(&crit).err(),
            Some(AuthError::Malformed("unsupported critical header"))
        );
        let bad_claims = format!("{}.{}.s", part(r#"{"alg":"RS256"}"#), part("[1]"));
        assert_eq!(
            inspect(&bad_claims).err(),
            Some(AuthError::Malformed("unreadable claims"))
        );
    }

    #[test]
    fn identity_stringifies_claims_into_sorted_tags() {
        let claims = serde_json::json!({
            "sub": "alice", "role": "refund-agent", "level": 3, "ok": true,
            "groups": ["a", "b"], "exp": 2000000000, "obj": { "k": 1 }
        });
        let Value::Object(map) = claims else {
            unreachable!()
        };
        let id = identity(map).ok();
        let id = id.as_ref();
        assert_eq!(id.map(|i| i.subject.as_str()), Some("alice"));
        assert_eq!(id.and_then(|i| i.expires_at), Some(2_000_000_000));
        let tags: Vec<(&str, &str)> = id
            .map(|i| {
                i.tags
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            tags,
            vec![
                ("exp", "2000000000"),
                ("groups", r#"["a","b"]"#),
                ("level", "3"),
                ("obj", r#"{"k":1}"#),
                ("ok", "true"),
                ("role", "refund-agent"),
            ]
        );
    }
}
