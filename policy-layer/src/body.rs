//! The response body of [`crate::PolicyService`]: the upstream's body untouched, a local
//! answer, or an SSE stream being rewritten event by event; any of them possibly holding the
//! rate limits' connection slots of the calls it answers.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::filter::sse::SseRewriter;
use crate::limit::Admitted;

/// Boxed error type of the response body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project_lite::pin_project! {
    /// The response body of [`crate::PolicyService`].
    #[project = PolicyBodyProj]
    #[allow(missing_docs)] // variant fields: `pin_project_lite` takes no field docs
    pub enum PolicyBody<B> {
        /// The upstream's body, streamed unchanged.
        Inner {
            #[pin]
            body: B,
        },
        /// A body made by the layer (local answers, rewritten JSON).
        Full {
            data: Option<Bytes>,
        },
        /// An upstream SSE stream with the tools/list event rewritten.
        Sse {
            #[pin]
            body: B,
            rewriter: Box<SseRewriter>,
            done: bool,
        },
        /// Another body, holding the `connections` slots of the calls it answers until it
        /// ends or is dropped (`docs/rate-limits.md`).
        Held {
            body: Pin<Box<PolicyBody<B>>>,
            permits: Option<Admitted>,
        },
    }
}

impl<B> PolicyBody<B> {
    /// A complete body.
    #[must_use]
    pub fn full(data: Bytes) -> Self {
        Self::Full {
            data: (!data.is_empty()).then_some(data),
        }
    }
}

impl<B> PolicyBody<B> {
    /// This body, holding `permits` until it is finished or dropped.
    #[must_use]
    pub fn holding(self, permits: Admitted) -> Self {
        Self::Held {
            body: Box::pin(self),
            permits: Some(permits),
        }
    }
}

impl<B> From<Bytes> for PolicyBody<B> {
    fn from(data: Bytes) -> Self {
        Self::full(data)
    }
}

impl<B> Body for PolicyBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            PolicyBodyProj::Inner { body } => body.poll_frame(cx).map_err(Into::into),
            PolicyBodyProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            PolicyBodyProj::Sse {
                mut body,
                rewriter,
                done,
            } => loop {
                if *done {
                    return Poll::Ready(None);
                }
                match ready!(body.as_mut().poll_frame(cx)) {
                    Some(Ok(frame)) => {
                        // Trailers (not data): SSE has none worth keeping.
                        if let Ok(chunk) = frame.into_data() {
                            match rewriter.feed(chunk) {
                                Ok(out) if out.is_empty() => {}
                                Ok(out) => return Poll::Ready(Some(Ok(Frame::data(out)))),
                                Err((out, e)) => {
                                    *done = true;
                                    tracing::warn!(error = %e, "closing the event stream");
                                    return Poll::Ready(Some(Ok(Frame::data(out))));
                                }
                            }
                        }
                    }
                    Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                    None => {
                        *done = true;
                        let out = rewriter.finish();
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                }
            },
            PolicyBodyProj::Held { body, permits } => {
                let frame = ready!(body.as_mut().poll_frame(cx));
                if frame.is_none() {
                    // The reply is complete: the calls are no longer in flight.
                    permits.take();
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Inner { body } => body.is_end_stream(),
            Self::Full { data } => data.is_none(),
            Self::Sse { done, .. } => *done,
            Self::Held { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Inner { body } => body.size_hint(),
            Self::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Self::Sse { .. } => SizeHint::default(),
            Self::Held { body, .. } => body.size_hint(),
        }
    }
}
