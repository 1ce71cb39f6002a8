//! What one client may hold of the token service: a bounded number of
//! connections, none of them idle, slow to send its headers or slow to
//! finish a request for long. Without these a few thousand idle or
//! slow-header TLS connections hold a file descriptor and memory each, for
//! ever (axum-server turns hyper's header-read timeout off and sets no idle
//! or first-request timeout).

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    extract::Request,
    http::StatusCode,
    middleware::Next,
    response::{IntoResponse, Response},
};
use axum_server::accept::Accept;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};

/// The limits, with their defaults in [`Default`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// The TLS handshake must be done within this.
    pub handshake_timeout: Duration,
    /// The first request must have arrived within this after the handshake.
    pub first_request_timeout: Duration,
    /// Each request's headers must have arrived within this, the time a
    /// kept-alive HTTP/1 connection waits for its next request included.
    pub header_read_timeout: Duration,
    /// A request (its body read included) must be answered within this.
    pub request_timeout: Duration,
    /// A connection that sends and receives nothing for this long is closed
    /// (HTTP/2 and TLS alike).
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(10),
            first_request_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Accepts a TCP connection only while fewer than the limit are open, and
/// closes one that stays idle.
#[derive(Clone)]
pub struct LimitedAcceptor {
    permits: Arc<Semaphore>,
    idle_timeout: Duration,
}

impl LimitedAcceptor {
    pub fn new(limits: &ConnectionLimits) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            idle_timeout: limits.idle_timeout,
        }
    }

    /// Connections that may still be opened.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }
}

impl<S> Accept<TcpStream, S> for LimitedAcceptor {
    type Stream = Guarded;
    type Service = S;
    type Future = std::future::Ready<io::Result<(Guarded, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        std::future::ready(match self.permits.clone().try_acquire_owned() {
            Ok(permit) => Ok((Guarded::new(stream, permit, self.idle_timeout), service)),
            // Dropping the stream closes it: better one refused client than
            // a service that stops answering everyone.
            Err(_) => Err(io::Error::other("the connection limit is reached")),
        })
    }
}

/// A connection that holds one of the limited permits while it is open, and
/// fails its reads and writes once nothing moved for the idle timeout.
pub struct Guarded {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    idle_timeout: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl Guarded {
    fn new(stream: TcpStream, permit: OwnedSemaphorePermit, idle_timeout: Duration) -> Self {
        Self {
            stream,
            _permit: permit,
            idle_timeout,
            deadline: Box::pin(tokio::time::sleep(idle_timeout)),
        }
    }

    fn moved(&mut self) {
        let next = Instant::now() + self.idle_timeout;
        self.deadline.as_mut().reset(next);
    }

    /// `Ready(Err)` once the connection has been idle too long; registers a
    /// wake-up for that moment otherwise.
    fn expired(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the connection was idle too long",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.moved();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.expired(cx),
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write(cx, data) {
            Poll::Ready(Ok(written)) => {
                if written > 0 {
                    this.moved();
                }
                Poll::Ready(Ok(written))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => this.expired(cx).map(|r| r.map(|()| 0)),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Answers 408 to a request not answered within `timeout` (a body that
/// trickles in, say).
pub async fn request_timeout(timeout: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            axum::Json(serde_json::json!({
                "error": "invalid_request",
                "error_description": "the request took too long to arrive",
            })),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair(acceptor: &LimitedAcceptor) -> io::Result<(Guarded, TcpStream)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let client = TcpStream::connect(listener.local_addr()?).await?;
        let (server, _) = listener.accept().await?;
        let (guarded, ()) = acceptor.accept(server, ()).await?;
        Ok((guarded, client))
    }

    #[tokio::test]
    async fn refuses_connections_beyond_the_limit_until_one_closes() {
        let limits = ConnectionLimits {
            max_connections: 2,
            ..ConnectionLimits::default()
        };
        let acceptor = LimitedAcceptor::new(&limits);
        let first = pair(&acceptor).await.unwrap();
        let _second = pair(&acceptor).await.unwrap();
        assert!(pair(&acceptor).await.is_err(), "a third is refused");
        drop(first);
        assert_eq!(acceptor.available(), 1);
        assert!(pair(&acceptor).await.is_ok(), "room again once one closed");
    }

    #[tokio::test]
    async fn an_idle_connection_fails_and_an_active_one_lives() {
        let limits = ConnectionLimits {
            idle_timeout: Duration::from_millis(300),
            ..ConnectionLimits::default()
        };
        let acceptor = LimitedAcceptor::new(&limits);
        let (mut active, mut peer) = pair(&acceptor).await.unwrap();
        // Traffic every 100 ms keeps it open past the idle timeout.
        let mut last_traffic = Instant::now();
        for _ in 0..6 {
            peer.write_all(b"x").await.unwrap();
            let mut byte = [0u8; 1];
            active.read_exact(&mut byte).await.unwrap();
            last_traffic = Instant::now();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut byte = [0u8; 1];
        let error = active.read(&mut byte).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        let idle = last_traffic.elapsed();
        assert!(
            idle >= Duration::from_millis(290),
            "closed after {idle:?} idle"
        );
        assert!(idle < Duration::from_secs(2), "closed after {idle:?} idle");
    }
}
