//! HTTP methods: POST carries JSON-RPC and is decided; GET opens the server's event stream and
//! DELETE ends a session, and neither may carry a body; every other method is refused (405)
//! before anything is forwarded.

use bytes::Bytes;
use http::Method;
use http_body::Body;
use http_body_util::{BodyExt, Limited};

use crate::body::BoxError;
use crate::reply::Refusal;

/// What a request is, by its method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// JSON-RPC messages to decide.
    Post,
    /// The server's event stream (or a resumed one, with `Last-Event-ID`).
    Get,
    /// The end of a session.
    Delete,
}

impl Route {
    /// The route of `method`.
    ///
    /// # Errors
    /// [`Refusal::MethodNotAllowed`] for any method but POST, GET and DELETE.
    pub fn of(method: &Method) -> Result<Self, Refusal> {
        match *method {
            Method::POST => Ok(Self::Post),
            Method::GET => Ok(Self::Get),
            Method::DELETE => Ok(Self::Delete),
            _ => Err(Refusal::MethodNotAllowed(method.clone())),
        }
    }
}

/// Reads the body of a GET or DELETE, which must be empty; what goes on is an empty body.
///
/// # Errors
/// [`Refusal::BodyNotAllowed`] when the body holds any byte, [`Refusal::Unreadable`] when it
/// cannot be read.
pub async fn empty_body<B>(method: &Method, body: B) -> Result<Bytes, Refusal>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    match Limited::new(body, 0).collect().await {
        Ok(_) => Ok(Bytes::new()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(Refusal::BodyNotAllowed(method.clone()))
        }
        Err(_) => Err(Refusal::Unreadable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Empty, Full};

    #[test]
    fn only_post_get_and_delete_are_routed() {
        assert_eq!(Route::of(&Method::POST), Ok(Route::Post));
        assert_eq!(Route::of(&Method::GET), Ok(Route::Get));
        assert_eq!(Route::of(&Method::DELETE), Ok(Route::Delete));
        for method in [
            "PUT", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT", "PROPFIND",
        ] {
            let method = Method::from_bytes(method.as_bytes()).expect("method");
            assert_eq!(
                Route::of(&method),
                Err(Refusal::MethodNotAllowed(method.clone()))
            );
        }
    }

    #[tokio::test]
    async fn a_get_with_a_body_is_refused() {
        let body = Full::new(Bytes::from_static(b"{}"));
        assert_eq!(
            empty_body(&Method::GET, body).await,
            Err(Refusal::BodyNotAllowed(Method::GET))
        );
        assert_eq!(
            empty_body(&Method::DELETE, Empty::<Bytes>::new()).await,
            Ok(Bytes::new())
        );
    }
}
