//! MCP request headers: the ones that decide something appear at most once, the protocol
//! version is one the layer knows, and the routing headers of stateless (2026-07-28) requests
//! agree with the body they route.

use http::HeaderMap;

use super::ProtocolVersion;
use crate::jsonrpc::Envelope;
use crate::reply::Refusal;

/// Header of stateless (2026-07-28) requests naming the method.
pub const MCP_METHOD: &str = "mcp-method";
/// Header of stateless (2026-07-28) requests naming the tool, prompt or resource.
pub const MCP_NAME: &str = "mcp-name";
/// The protocol version header.
pub const MCP_PROTOCOL_VERSION: &str = "mcp-protocol-version";
/// The session header.
pub const MCP_SESSION_ID: &str = "mcp-session-id";

/// Headers a request may carry at most once: each decides something (who calls, what is
/// parsed, which session, stream or version), and two copies could be read differently here
/// and upstream.
const AT_MOST_ONCE: [&str; 9] = [
    "authorization",
    "content-type",
    "content-encoding",
    "origin",
    "last-event-id",
    MCP_SESSION_ID,
    MCP_PROTOCOL_VERSION,
    MCP_METHOD,
    MCP_NAME,
];

/// Checks the headers of any request; returns the protocol version it speaks (2025-03-26
/// when it names none, as the MCP transport says).
///
/// # Errors
/// [`Refusal::RepeatedHeader`], [`Refusal::UnreadableHeader`] or
/// [`Refusal::UnsupportedVersion`].
pub fn check(headers: &HeaderMap) -> Result<ProtocolVersion, Refusal> {
    for name in AT_MOST_ONCE {
        let mut values = headers.get_all(name).iter();
        if values.next().is_some() && values.next().is_some() {
            return Err(Refusal::RepeatedHeader(name));
        }
    }
    let Some(value) = headers.get(MCP_PROTOCOL_VERSION) else {
        return Ok(ProtocolVersion::default());
    };
    let text = value
        .to_str()
        .map_err(|_| Refusal::UnreadableHeader(MCP_PROTOCOL_VERSION))?;
    ProtocolVersion::parse(text).ok_or_else(|| Refusal::UnsupportedVersion(text.to_owned()))
}

/// Stateless requests name their method (and tool) in headers too: both must agree.
///
/// # Errors
/// [`Refusal::HeaderMismatch`] naming the disagreement.
pub fn check_routing(
    headers: &HeaderMap,
    envelope: &Envelope,
    version: ProtocolVersion,
) -> Result<(), Refusal> {
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"));
    let method_header = header(MCP_METHOD);
    let name_header = header(MCP_NAME);
    let stateless = version.routes_by_header();
    if method_header.is_none() && name_header.is_none() && !stateless {
        return Ok(());
    }
    let mismatch = |text: String| Err(Refusal::HeaderMismatch(text));
    let [message] = envelope.messages.as_slice() else {
        return mismatch("a stateless request carries exactly one message".to_owned());
    };
    let Some(method) = message.method() else {
        return Ok(());
    };
    if stateless && method_header.is_none() {
        return mismatch(format!(
            "header Mcp-Method is required by protocol {}",
            ProtocolVersion::V2026_07_28
        ));
    }
    if let Some(h) = method_header.filter(|h| *h != method) {
        return mismatch(format!(
            "header Mcp-Method `{h}` does not match the body's method `{method}`"
        ));
    }
    let params = message.params();
    let (key, body_name) = match method {
        "tools/call" | "prompts/get" => ("name", params.and_then(|p| p.name.as_deref())),
        "resources/read" => ("uri", params.and_then(|p| p.uri.as_deref())),
        _ => return Ok(()),
    };
    match (name_header, body_name) {
        (Some(h), Some(b)) if h == b => Ok(()),
        (None, _) if !stateless => Ok(()),
        (h, b) => mismatch(format!(
            "header Mcp-Name `{}` does not match the body's {key} `{}`",
            h.unwrap_or_default(),
            b.unwrap_or_default()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn call(name: &str) -> Envelope {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{name}"}}}}"#
        );
        crate::jsonrpc::parse(&Bytes::from(body), 10).expect("parses")
    }

    #[test]
    fn deciding_headers_appear_at_most_once() {
        for name in AT_MOST_ONCE {
            let map = headers(&[(name, "a"), (name, "b")]);
            assert_eq!(check(&map), Err(Refusal::RepeatedHeader(name)), "{name}");
        }
        assert!(check(&headers(&[("accept", "a"), ("accept", "b")])).is_ok());
    }

    #[test]
    fn an_unknown_version_is_refused_and_none_is_the_oldest() {
        assert_eq!(check(&HeaderMap::new()), Ok(ProtocolVersion::V2025_03_26));
        assert_eq!(
            check(&headers(&[(MCP_PROTOCOL_VERSION, "2025-11-25")])),
            Ok(ProtocolVersion::V2025_11_25)
        );
        assert_eq!(
            check(&headers(&[(MCP_PROTOCOL_VERSION, "2099-01-01")])),
            Err(Refusal::UnsupportedVersion("2099-01-01".into()))
        );
    }

    #[test]
    fn stateless_routing_headers_must_agree_with_the_body() {
        let v = ProtocolVersion::V2026_07_28;
        let ok = headers(&[(MCP_METHOD, "tools/call"), (MCP_NAME, "refund")]);
        assert_eq!(check_routing(&ok, &call("refund"), v), Ok(()));
        assert!(matches!(
            check_routing(&ok, &call("delete"), v),
            Err(Refusal::HeaderMismatch(_))
        ));
        let no_method = headers(&[(MCP_NAME, "refund")]);
        assert!(check_routing(&no_method, &call("refund"), v).is_err());
        assert_eq!(
            check_routing(&HeaderMap::new(), &call("x"), ProtocolVersion::V2025_06_18),
            Ok(())
        );
    }
}
