//! [`ProxyBody`]: the one body type of the proxy, for requests (client -> upstream) and
//! responses (upstream -> client). It streams hyper's body frame by frame, or carries bytes the
//! sidecar made itself; an upstream event stream can also be watched on its way through.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::Notify;
use tokio_util::sync::WaitForCancellationFutureOwned;

/// Boxed error of a proxied body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The notifications that the upstream's tool or prompt list changed (the catalog is fetched
/// again).
const LIST_CHANGED: [&[u8]; 2] = [
    b"notifications/tools/list_changed",
    b"notifications/prompts/list_changed",
];

/// Watches an upstream event stream: signals a tool or prompt list change, and ends the
/// stream (cleanly, for the client to reconnect) when the sidecar shuts down.
pub struct StreamWatch {
    /// Woken when the list-changed notification passes.
    list_changed: Arc<Notify>,
    /// The end of the previous chunk, so a match split across chunks is found.
    tail: Vec<u8>,
    /// Resolves at shutdown; `None` for streams that must run to their end.
    shutdown: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
}

impl StreamWatch {
    /// A watch signalling `list_changed`, ending the stream on `shutdown` if given.
    #[must_use]
    pub fn new(
        list_changed: Arc<Notify>,
        shutdown: Option<WaitForCancellationFutureOwned>,
    ) -> Self {
        Self {
            list_changed,
            tail: Vec::new(),
            shutdown: shutdown.map(Box::pin),
        }
    }

    fn scan(&mut self, chunk: &[u8]) {
        let keep = LIST_CHANGED.iter().map(|n| n.len()).max().unwrap_or(1) - 1;
        let any = |haystack: &[u8]| LIST_CHANGED.iter().any(|needle| contains(haystack, needle));
        let found = if self.tail.is_empty() {
            any(chunk)
        } else {
            let head = &chunk[..chunk.len().min(keep)];
            let mut joined = std::mem::take(&mut self.tail);
            joined.extend_from_slice(head);
            any(&joined) || any(chunk)
        };
        if found {
            self.list_changed.notify_one();
        }
        self.tail.clear();
        self.tail
            .extend_from_slice(&chunk[chunk.len().saturating_sub(keep)..]);
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

pin_project_lite::pin_project! {
    /// A request or response body passing through the sidecar.
    #[project = ProxyBodyProj]
    pub enum ProxyBody {
        /// A body read from a connection, streamed frame by frame.
        Incoming { #[pin] body: Incoming, watch: Option<Box<StreamWatch>> },
        /// Bytes the sidecar made (a filtered request, an error answer).
        Full { data: Option<Bytes> },
    }
}

impl ProxyBody {
    /// Streams `body` unchanged.
    #[must_use]
    pub fn incoming(body: Incoming) -> Self {
        Self::Incoming { body, watch: None }
    }

    /// Streams `body` unchanged while `watch` looks at it.
    #[must_use]
    pub fn watched(body: Incoming, watch: StreamWatch) -> Self {
        Self::Incoming {
            body,
            watch: Some(Box::new(watch)),
        }
    }

    /// A complete body.
    #[must_use]
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        Self::Full {
            data: (!data.is_empty()).then_some(data),
        }
    }
}

impl From<Bytes> for ProxyBody {
    fn from(data: Bytes) -> Self {
        Self::full(data)
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            ProxyBodyProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ProxyBodyProj::Incoming { body, watch } => {
                if let Some(shutdown) = watch.as_mut().and_then(|w| w.shutdown.as_mut())
                    && shutdown.as_mut().poll(cx).is_ready()
                {
                    return Poll::Ready(None);
                }
                let polled = body.poll_frame(cx).map_err(BoxError::from);
                if let (Poll::Ready(Some(Ok(frame))), Some(watch)) = (&polled, watch.as_mut())
                    && let Some(data) = frame.data_ref()
                {
                    watch.scan(data);
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full { data } => data.is_none(),
            Self::Incoming { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Self::Incoming { body, watch } if watch.is_none() => body.size_hint(),
            Self::Incoming { .. } => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_list_changed_split_across_chunks() {
        let notify = Arc::new(Notify::new());
        let mut watch = StreamWatch::new(Arc::clone(&notify), None);
        watch.scan(b"data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/tools/li");
        watch.scan(b"st_changed\"}\n\n");
        let notified = notify.notified();
        tokio::pin!(notified);
        // notify_one stored a permit: the next `notified` completes at once.
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(notified.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn finds_a_prompt_list_change_too() {
        let notify = Arc::new(Notify::new());
        let mut watch = StreamWatch::new(Arc::clone(&notify), None);
        watch.scan(b"data: {\"method\":\"notifications/prompts/list_changed\"}\n\n");
        let notified = notify.notified();
        tokio::pin!(notified);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(notified.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn ignores_other_messages() {
        let notify = Arc::new(Notify::new());
        let mut watch = StreamWatch::new(Arc::clone(&notify), None);
        watch.scan(b"data: {\"method\":\"notifications/resources/list_changed\"}\n\n");
        let notified = notify.notified();
        tokio::pin!(notified);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(notified.as_mut().poll(&mut cx).is_pending());
    }
}
