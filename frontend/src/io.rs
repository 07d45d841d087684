//! The client connection's stream, with the slow-client bounds hyper does not answer:
//! a request head must arrive within `header_timeout` of its first byte (else a `408`
//! is written and the connection closed), and a connection with no request in flight
//! is closed after `idle_timeout`. The proxy tells the stream when a request is in
//! flight (`ConnState`); an upgraded (WebSocket) connection has no bound.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::Counters;

const TIMEOUT_408: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

/// What the proxy tells a connection's stream.
#[derive(Debug, Default)]
pub(crate) struct ConnState {
    /// Requests in flight (from the head read to the end of the answer's body).
    active: AtomicUsize,
    /// Requests begun, ever.
    begun: AtomicU64,
    /// Upgraded (a WebSocket): no more bounds.
    upgraded: AtomicBool,
}

impl ConnState {
    /// A request begins; it ends when the guard is dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.begun.fetch_add(1, Ordering::AcqRel);
        self.active.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    pub(crate) fn upgraded(&self) {
        self.upgraded.store(true, Ordering::Release);
    }
}

/// A request in flight (kept by its answer's body).
#[derive(Debug)]
pub(crate) struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub(crate) header: Duration,
    pub(crate) idle: Duration,
    /// HTTP/1: a `408` can be written; HTTP/2 is only closed.
    pub(crate) http1: bool,
}

pub(crate) struct TimedIo<S> {
    inner: S,
    state: Arc<ConnState>,
    counters: Arc<Counters>,
    bounds: Bounds,
    seen: u64,
    got_bytes: bool,
    timer: Option<Pin<Box<Sleep>>>,
    /// Bytes of the `408` written so far, once it is being written.
    closing: Option<usize>,
}

impl<S> TimedIo<S> {
    pub(crate) fn new(
        inner: S,
        state: Arc<ConnState>,
        counters: Arc<Counters>,
        bounds: Bounds,
    ) -> Self {
        TimedIo {
            inner,
            state,
            counters,
            bounds,
            seen: 0,
            got_bytes: false,
            timer: None,
            closing: None,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TimedIo<S> {
    fn poll_408(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let written = self.closing.unwrap_or(0);
            if written < TIMEOUT_408.len() {
                match Pin::new(&mut self.inner).poll_write(cx, &TIMEOUT_408[written..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Ok(())),
                    Poll::Ready(Ok(n)) => self.closing = Some(written + n),
                    Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                    Poll::Pending => return Poll::Pending,
                }
            } else {
                // Flush and close (a TLS close_notify); then an end of file to hyper.
                return match Pin::new(&mut self.inner).poll_shutdown(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(_) => Poll::Ready(Ok(())),
                };
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TimedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.closing.is_some() {
            return this.poll_408(cx);
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        let got = buf.filled().len() > before;
        if this.state.upgraded.load(Ordering::Acquire) {
            this.timer = None;
            return polled;
        }
        let begun = this.state.begun.load(Ordering::Acquire);
        if begun != this.seen {
            this.seen = begun;
            this.got_bytes = false;
            this.timer = None;
        }
        if this.state.active.load(Ordering::Acquire) > 0 {
            this.timer = None;
            return polled;
        }
        if got && !this.got_bytes && this.bounds.http1 {
            this.got_bytes = true;
            this.timer = Some(Box::pin(tokio::time::sleep(this.bounds.header)));
        }
        if polled.is_ready() {
            return polled;
        }
        let bound = this.bounds.idle;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(bound)));
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.timer = None;
        if this.got_bytes {
            this.counters
                .header_timeouts
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!("no request head in time: 408");
            this.closing = Some(0);
            return this.poll_408(cx);
        }
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "idle connection",
        )))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TimedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
