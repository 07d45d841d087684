//! The releases a gateway serves over HTTPS (the store is `crate::releases`):
//!
//! - `GET|HEAD /software/<sha256>/software.toml` and `/software/<sha256>/<artifact url>`:
//!   a published release, to anyone (a release is software, not a secret: a node's
//!   software user fetches it without a certificate, and checks every byte against the
//!   manifest's checksums, the manifest against its address).
//! - `HEAD /software/blob/<sha256>`: whether the store has a blob (a publisher skips it).
//! - `PUT /software/blob/<sha256>`: a blob, from an admin only (client certificate of a
//!   person the group records as an admin), kept only when its bytes hash to its name.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio_stream::StreamExt;

use super::app::App;
use crate::releases::StoreError;

/// How long an upload may take between two chunks of its body.
const BODY_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{}\n", body.into()),
    )
        .into_response()
}

fn no_store() -> Response {
    text(
        StatusCode::NOT_FOUND,
        "this gateway serves no releases (no [releases] in its configuration)",
    )
}

fn refusal(e: &StoreError) -> Response {
    let status = match e {
        StoreError::NotADigest(_) => StatusCode::BAD_REQUEST,
        StoreError::Missing(_) | StoreError::NoSuchArtifact { .. } => StatusCode::NOT_FOUND,
        StoreError::NotAManifest(..) => StatusCode::NOT_FOUND,
        StoreError::DigestMismatch { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        StoreError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        StoreError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(error = %e, "release store");
        return text(status, "the release store cannot be read or written");
    }
    text(status, e.to_string())
}

/// `GET /software/<release>/<name...>`: the file, streamed; immutable (its address is
/// its content), so cacheable for good.
pub async fn get(
    State(app): State<Arc<App>>,
    Path((release, name)): Path<(String, String)>,
) -> Response {
    let Some(store) = app.releases.clone() else {
        return no_store();
    };
    let path = match tokio::task::spawn_blocking(move || store.resolve(&release, &name)).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return refusal(&e),
        Err(_) => return text(StatusCode::INTERNAL_SERVER_ERROR, "interrupted"),
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => return refusal(&StoreError::Io { path, source: e }),
    };
    let len = file.metadata().await.map(|m| m.len()).unwrap_or_default();
    let etag = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| HeaderValue::from_str(&format!("\"{n}\"")).ok());
    let mut response = Response::new(Body::from_stream(chunks(file)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    if let Some(etag) = etag {
        headers.insert(header::ETAG, etag);
    }
    response
}

/// A file as a stream of chunks, read ahead by at most a few (the client sets the pace).
fn chunks(
    mut file: tokio::fs::File,
) -> tokio_stream::wrappers::ReceiverStream<Result<Bytes, std::io::Error>> {
    use tokio::io::AsyncReadExt;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let mut buf = vec![0u8; 256 << 10];
            match file.read(&mut buf).await {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.send(Ok(Bytes::from(buf))).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// `HEAD /software/blob/<sha256>`: 200 when the store has it, else 404; with the
/// group's gateways in `X-Slapos-Gateways`, as every SLAP answer (a publisher sends the
/// release to each of them).
pub async fn has_blob(State(app): State<Arc<App>>, Path(sha256): Path<String>) -> Response {
    let mut response = match app.releases.as_ref() {
        None => no_store(),
        Some(store) => match store.blob(&sha256) {
            Ok(_) => StatusCode::OK.into_response(),
            Err(e) => refusal(&e),
        },
    };
    if let Some(gateways) = app.gateways.get() {
        response
            .headers_mut()
            .insert(super::app::GATEWAYS_HEADER, gateways);
    }
    response
}

/// `PUT /software/blob/<sha256>`: an admin's blob, streamed to the store (never held in
/// memory whole), kept when its digest is its name. 201 when stored, 200 when the store
/// had it already.
pub async fn put_blob(
    State(app): State<Arc<App>>,
    Path(sha256): Path<String>,
    request: Request,
) -> Response {
    let Some(store) = app.releases.clone() else {
        return no_store();
    };
    let (parts, body) = request.into_parts();
    match super::authz::caller_of(&app, &parts) {
        Err(refusal) => {
            let status =
                StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::FORBIDDEN);
            return text(status, String::from_utf8_lossy(&refusal.body).trim());
        }
        Ok(None) => {
            return text(
                StatusCode::FORBIDDEN,
                "forbidden: publishing a release needs client certificates (this gateway has no client_ca)",
            )
        }
        Ok(Some(None)) => {
            return text(
                StatusCode::FORBIDDEN,
                "forbidden: publishing a release needs an admin's client certificate",
            )
        }
        Ok(Some(Some(caller))) if !caller.is_admin() => {
            return text(
                StatusCode::FORBIDDEN,
                "forbidden: only an admin of the group publishes releases (slapos user admin)",
            )
        }
        Ok(Some(Some(_))) => {}
    }
    if store.has(&sha256) {
        return StatusCode::OK.into_response();
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > store.max_blob_bytes()) {
        return refusal(&StoreError::TooLarge {
            limit: store.max_blob_bytes(),
        });
    }
    let mut upload = match store.upload(&sha256) {
        Ok(u) => u,
        Err(e) => return refusal(&e),
    };
    let mut stream = body.into_data_stream();
    loop {
        let chunk = match tokio::time::timeout(BODY_IDLE, stream.next()).await {
            Err(_) => return text(StatusCode::REQUEST_TIMEOUT, "the body stopped coming"),
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return text(StatusCode::BAD_REQUEST, format!("reading the body: {e}"))
            }
            Ok(Some(Ok(c))) => c,
        };
        // Small writes to a local file: done in place (a blocking pool round trip per
        // chunk would cost more than the write).
        if let Err(e) = upload.write(&chunk) {
            return refusal(&e);
        }
    }
    match tokio::task::spawn_blocking(move || upload.commit()).await {
        Ok(Ok(())) => {
            tracing::info!(blob = %sha256, "release blob published");
            StatusCode::CREATED.into_response()
        }
        Ok(Err(e)) => refusal(&e),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "interrupted"),
    }
}
