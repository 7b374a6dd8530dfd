//! Accepting connections and serving them with hyper until shutdown, then draining the
//! connections in flight within the grace period.
//!
//! The MCP listener runs one worker per core (`listen.workers`): each a thread with a
//! single-threaded runtime and a listening socket of its own on the same port (`SO_REUSEPORT`:
//! the kernel spreads connections over them), and each with its own pool of upstream
//! connections. A request, its upstream connection and its reply then live on one thread: no
//! task hands work to another thread, which on a multi-threaded runtime cost a futex wake-up
//! or two per request (`docs/performance.md`).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use policy_layer::PeerAddr;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::body::BoxError;

/// Time a client gets to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every connection finished its requests.
    All,
    /// The grace period ran out with connections still open.
    TimedOut,
}

/// Serves `listener` with `make_service` (cloned per connection) until `shutdown`; then stops
/// accepting and waits up to `grace` for the connections in flight.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    shutdown: CancellationToken,
    grace: Duration,
) -> Drained
where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A client that sends its headers too slowly is cut (slowloris).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // Each request knows its peer: the layer believes forwarded headers only from trusted
        // proxies.
        let service = service
            .clone()
            .map_request(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(PeerAddr(peer));
                request
            });
        let connection = builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    drain(graceful.shutdown(), grace).await
}

/// Binds `address` `count` times (at least once) with `SO_REUSEPORT`, one socket per worker:
/// the first as asked (port 0: a port the system picks), the others to the port it got.
///
/// # Errors
/// When a socket cannot be made, bound or listened on.
pub fn bind_workers(address: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let first = reuse_port_listener(address)?;
    let bound = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..count.max(1) {
        listeners.push(reuse_port_listener(bound)?);
    }
    Ok(listeners)
}

/// A non-blocking listening socket at `address` that others may share (`SO_REUSEPORT`).
fn reuse_port_listener(address: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// The worst of the workers' drains.
#[must_use]
pub fn worst(drains: impl IntoIterator<Item = Drained>) -> Drained {
    if drains.into_iter().any(|d| d == Drained::TimedOut) {
        Drained::TimedOut
    } else {
        Drained::All
    }
}

async fn drain(drained: impl Future<Output = ()>, grace: Duration) -> Drained {
    match tokio::time::timeout(grace, drained).await {
        Ok(()) => Drained::All,
        Err(_) => Drained::TimedOut,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_share_one_port() {
        let listeners = bind_workers("127.0.0.1:0".parse().expect("address"), 3).expect("bound");
        assert_eq!(listeners.len(), 3);
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().expect("address").port())
            .collect();
        assert!(ports.iter().all(|p| *p == ports[0] && *p != 0), "{ports:?}");
        assert_eq!(worst([Drained::All, Drained::TimedOut]), Drained::TimedOut);
        assert_eq!(worst([Drained::All]), Drained::All);
    }
}
