//! The blocking client: the async [`Client`] on a current-thread runtime of its own.
//!
//! The runtime is driven only while a call waits (its connections' tasks and the idle
//! pool's clock run then). A call made where a tokio runtime is current (an async task,
//! `spawn_blocking`) is driven on a helper thread of its own, so that it blocks its caller
//! as a socket call would instead of panicking; that thread has the caller's credentials
//! (Linux copies them to a new thread), which matters to callers that are some user for
//! the length of a thread (`slapgrid::process::run_as`).

use std::sync::Arc;

use crate::{Client, Endpoint, Error, Options, Request, Response};

/// A blocking HTTP/1.1 client; its calls may come from several threads at once.
pub struct BlockingClient {
    client: Client,
    /// `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for BlockingClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingClient")
            .field("client", &self.client)
            .finish()
    }
}

impl BlockingClient {
    pub fn new(
        tls: Option<Arc<rustls::ClientConfig>>,
        options: Options,
    ) -> Result<BlockingClient, Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Runtime(e.to_string()))?;
        Ok(BlockingClient {
            client: Client::new(tls, options),
            runtime: Some(runtime),
        })
    }

    pub fn options(&self) -> &Options {
        self.client.options()
    }

    /// [`Client::send`], waiting for it.
    pub fn send(&self, endpoint: &Endpoint, request: Request) -> Result<Response, Error> {
        let Some(runtime) = &self.runtime else {
            return Err(Error::Runtime("the client is being dropped".into()));
        };
        let call = self.client.send(endpoint, request);
        if tokio::runtime::Handle::try_current().is_err() {
            return runtime.block_on(call);
        }
        std::thread::scope(|s| {
            s.spawn(|| runtime.block_on(call))
                .join()
                .unwrap_or_else(|_| Err(Error::Runtime("the call's thread panicked".into())))
        })
    }
}

impl Drop for BlockingClient {
    fn drop(&mut self) {
        // Without waiting for its tasks (connections) to end: a runtime dropped the
        // ordinary way panics when that happens inside another runtime.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
