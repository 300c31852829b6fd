//! The request id: every request gets one, every log line written while serving it carries it
//! (a tracing span), its response carries it in `X-Request-Id`, and error bodies carry it in
//! `request_id`, so an operator finds the log lines of a failed request from what the client
//! saw.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};
use tracing::Instrument;
use uuid::Uuid;

/// The header that carries the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being served, as a request extension (for handlers that want it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(pub String);

/// The id of the request this task serves, if any.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Middleware (for `actix_web::middleware::from_fn`): gives the request an id (a client's own
/// `X-Request-Id` when it is a short printable token, a new UUID otherwise), serves it inside a
/// `request` span with that id, and logs one line per request with its status and duration.
pub async fn request_context(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, Error> {
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|value| is_acceptable_id(value))
        .map(str::to_owned)
        .unwrap_or_else(|| Uuid::new_v4().to_string());
    request
        .extensions_mut()
        .insert(RequestId(request_id.clone()));
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %request.method(),
        path = %request.path(),
    );
    let started = Instant::now();
    // The request is served on a task of its own, so that a client going away (which drops
    // this future) does not cut a database query in the middle: the task runs to its end.
    // diesel-async's SQLite connections block the thread to finish a dropped query, which
    // panics on actix-web's single-threaded workers.
    let served = actix_web::rt::spawn(
        REQUEST_ID
            .scope(request_id.clone(), next.call(request))
            .instrument(span.clone()),
    )
    .await;
    let mut response = match served {
        Ok(result) => result?,
        Err(join_error) => {
            span.in_scope(|| tracing::error!(%join_error, "serving the request panicked"));
            return Err(actix_web::error::ErrorInternalServerError(
                "A server error occurred.",
            ));
        }
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
    }
    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "served"
        );
    });
    Ok(response)
}

/// A client-supplied id is kept when it cannot forge log lines: up to 64 characters of
/// `[A-Za-z0-9._-]`.
fn is_acceptable_id(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_plain_client_ids_are_kept() {
        assert!(is_acceptable_id("abc-123_x.y"));
        assert!(!is_acceptable_id(""));
        assert!(!is_acceptable_id("a b"));
        assert!(!is_acceptable_id("line\nbreak"));
        assert!(!is_acceptable_id(&"a".repeat(65)));
    }
}
