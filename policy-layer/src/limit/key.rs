//! The limit key of a call: `<id>` followed by `/<value>` per key part, the counter's name in
//! the store and the `limitKey` of the throttled reply.
//!
//! Values are escaped so the key is unambiguous whatever the caller sends: `%`, `/` and control
//! characters (and, in header values, bytes that are not UTF-8) become `%XX`. A value longer than
//! [`MAX_VALUE_BYTES`] is replaced by `%#` and 32 hex digits of its SHA-256, which an escaped value
//! can never spell, so a caller cannot make keys (and the store) grow with its input.
//!
//! A part the call does not carry (claim absent, header absent, argument absent or `null`) is
//! the empty value: every such call of the caller shares one counter. Skipping the limit
//! instead would let a caller escape it by leaving the value out; refusing the call would make
//! an optional argument unusable. Numbers are written in one form (`500` and `500.0` are the
//! same value), so respelling a number does not open a new counter either.

use std::fmt::Write as _;

use http::HeaderMap;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::config::{KeyPart, RateLimit};
use crate::auth::Identity;

/// Longest value written into a key as it is; longer ones are hashed.
pub const MAX_VALUE_BYTES: usize = 64;

/// The limit key of `limit` for this call.
pub(crate) fn limit_key(
    limit: &RateLimit,
    identity: &Identity,
    headers: &HeaderMap,
    arguments: Option<&Value>,
) -> String {
    let mut key = String::with_capacity(limit.id.len() + 24 * limit.key.len());
    key.push_str(&limit.id);
    for part in &limit.key {
        key.push('/');
        match part {
            KeyPart::Subject => push_text(&mut key, &identity.subject),
            KeyPart::Claim(claim) => push_text(&mut key, identity.tag(claim).unwrap_or_default()),
            KeyPart::Header(name) => {
                let mut values = headers.get_all(name).iter();
                if let Some(first) = values.next() {
                    let mut joined = first.as_bytes().to_vec();
                    for value in values {
                        joined.extend_from_slice(b", ");
                        joined.extend_from_slice(value.as_bytes());
                    }
                    push_bytes(&mut key, &joined);
                }
            }
            KeyPart::Body(path) => {
                let value = arguments.and_then(|arguments| {
                    path.iter()
                        .try_fold(arguments, |value, segment| match value {
                            Value::Object(map) => map.get(&**segment),
                            Value::Array(items) => {
                                segment.parse::<usize>().ok().and_then(|i| items.get(i))
                            }
                            _ => None,
                        })
                });
                match value {
                    None | Some(Value::Null) => {}
                    Some(Value::String(text)) => push_text(&mut key, text),
                    Some(Value::Number(number)) => push_text(&mut key, &number_text(number)),
                    Some(other) => push_text(&mut key, &other.to_string()),
                }
            }
        }
    }
    key
}

/// One spelling per number: integral values without a fraction.
fn number_text(number: &serde_json::Number) -> String {
    if number.is_i64() || number.is_u64() {
        return number.to_string();
    }
    match number.as_f64() {
        // Below 2^53 an integral f64 is exactly an i64.
        Some(f) if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 => {
            #[allow(clippy::cast_possible_truncation)]
            let integral = f as i64;
            integral.to_string()
        }
        _ => number.to_string(),
    }
}

fn needs_escape(c: char) -> bool {
    c == '%' || c == '/' || c.is_control()
}

fn push_text(key: &mut String, text: &str) {
    if text.len() > MAX_VALUE_BYTES {
        push_digest(key, text.as_bytes());
        return;
    }
    for c in text.chars() {
        if needs_escape(c) {
            let mut utf8 = [0; 4];
            for b in c.encode_utf8(&mut utf8).bytes() {
                let _ = write!(key, "%{b:02X}");
            }
        } else {
            key.push(c);
        }
    }
}

fn push_bytes(key: &mut String, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => push_text(key, text),
        Err(_) if bytes.len() > MAX_VALUE_BYTES => push_digest(key, bytes),
        Err(_) => {
            for &b in bytes {
                if b.is_ascii() && !needs_escape(char::from(b)) {
                    key.push(char::from(b));
                } else {
                    let _ = write!(key, "%{b:02X}");
                }
            }
        }
    }
}

fn push_digest(key: &mut String, bytes: &[u8]) {
    key.push_str("%#");
    for b in &Sha256::digest(bytes)[..16] {
        let _ = write!(key, "{b:02x}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::PrincipalKind;
    use crate::limit::config::{Metric, Per};
    use serde_json::json;

    fn limit(parts: Vec<KeyPart>) -> RateLimit {
        RateLimit {
            id: "lim".into(),
            tool: None,
            key: parts.into(),
            metric: Metric::Requests(Per::Second),
            rate: 1,
        }
    }

    fn alice() -> Identity {
        Identity {
            kind: PrincipalKind::OAuthUser,
            subject: "alice".to_owned(),
            tags: vec![
                ("groups".to_owned(), r#"["a","b"]"#.to_owned()),
                ("tenant".to_owned(), "acme/eu".to_owned()),
            ],
            expires_at: None,
        }
    }

    fn body(path: &str) -> KeyPart {
        KeyPart::Body(path.split('.').map(Box::from).collect())
    }

    #[test]
    fn joins_the_id_and_every_value() {
        let mut headers = HeaderMap::new();
        headers.insert("x-workload", "batch".parse().expect("header"));
        let key = limit_key(
            &limit(vec![
                KeyPart::Subject,
                KeyPart::Header("x-workload".parse().expect("name")),
                body("order.customer_id"),
            ]),
            &alice(),
            &headers,
            Some(&json!({"order": {"customer_id": "C001"}})),
        );
        assert_eq!(key, "lim/alice/batch/C001");
    }

    #[test]
    fn an_empty_key_is_the_id_alone() {
        assert_eq!(
            limit_key(&limit(vec![]), &alice(), &HeaderMap::new(), None),
            "lim"
        );
    }

    #[test]
    fn escapes_separators_so_values_cannot_forge_parts() {
        let l = limit(vec![KeyPart::Claim("tenant".into()), body("a")]);
        let key = limit_key(&l, &alice(), &HeaderMap::new(), Some(&json!({"a": "x%2F"})));
        assert_eq!(key, "lim/acme%2Feu/x%252F");
        let other = Identity {
            tags: vec![("tenant".to_owned(), "acme".to_owned())],
            ..alice()
        };
        let forged = limit_key(
            &l,
            &other,
            &HeaderMap::new(),
            Some(&json!({"a": "eu/x%2F"})),
        );
        assert_ne!(key, forged);
    }

    #[test]
    fn a_missing_part_is_the_empty_value() {
        let l = limit(vec![
            KeyPart::Subject,
            KeyPart::Claim("team".into()),
            KeyPart::Header("x-workload".parse().expect("name")),
            body("customer_id"),
        ]);
        assert_eq!(
            limit_key(
                &l,
                &alice(),
                &HeaderMap::new(),
                Some(&json!({"customer_id": null}))
            ),
            "lim/alice///"
        );
        assert_eq!(
            limit_key(&l, &alice(), &HeaderMap::new(), None),
            "lim/alice///"
        );
    }

    #[test]
    fn claims_read_as_cedar_tags() {
        let key = limit_key(
            &limit(vec![KeyPart::Claim("groups".into())]),
            &alice(),
            &HeaderMap::new(),
            None,
        );
        assert_eq!(key, r#"lim/["a","b"]"#);
    }

    #[test]
    fn numbers_have_one_spelling() {
        let l = limit(vec![KeyPart::Subject, body("amount")]);
        let whole = limit_key(
            &l,
            &alice(),
            &HeaderMap::new(),
            Some(&json!({"amount": 500})),
        );
        let fraction = limit_key(
            &l,
            &alice(),
            &HeaderMap::new(),
            Some(&json!({"amount": 500.0})),
        );
        assert_eq!(whole, "lim/alice/500");
        assert_eq!(whole, fraction);
        assert_eq!(
            limit_key(
                &l,
                &alice(),
                &HeaderMap::new(),
                Some(&json!({"amount": 12.5}))
            ),
            "lim/alice/12.5"
        );
    }

    #[test]
    fn reads_array_items_and_objects_as_json() {
        let l = limit(vec![KeyPart::Subject, body("items.1")]);
        let key = limit_key(
            &l,
            &alice(),
            &HeaderMap::new(),
            Some(&json!({"items": ["a", {"b": 1}]})),
        );
        assert_eq!(key, r#"lim/alice/{"b":1}"#);
    }

    #[test]
    fn long_values_are_hashed_to_a_bounded_length() {
        let l = limit(vec![KeyPart::Subject, body("note")]);
        let long = "x".repeat(10_000);
        let key = limit_key(
            &l,
            &alice(),
            &HeaderMap::new(),
            Some(&json!({"note": long})),
        );
        assert!(key.starts_with("lim/alice/%#"), "{key}");
        assert_eq!(key.len(), "lim/alice/%#".len() + 32);
        let other = limit_key(
            &l,
            &alice(),
            &HeaderMap::new(),
            Some(&json!({"note": "y".repeat(10_000)})),
        );
        assert_ne!(key, other);
    }

    #[test]
    fn joins_repeated_headers_and_escapes_opaque_bytes() {
        let name: http::HeaderName = "x-workload".parse().expect("name");
        let mut headers = HeaderMap::new();
        headers.append(&name, "a".parse().expect("value"));
        headers.append(
            &name,
            http::HeaderValue::from_bytes(b"b\xff").expect("value"),
        );
        let key = limit_key(
            &limit(vec![KeyPart::Subject, KeyPart::Header(name)]),
            &alice(),
            &headers,
            None,
        );
        assert_eq!(key, "lim/alice/a, b%FF");
    }
}
