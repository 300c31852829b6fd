//! The one error type of the API and its wire format: `application/problem+json` (RFC 9457)
//! with a stable `code` and the request id, carrying upstream's keys as extension members so
//! upstream's clients keep working.
//!
//! The body of every error has:
//! - RFC 9457's `type` (a `urn:flashfleet:problem:<code>` URI), `title`, `status`, `detail`;
//! - `code`, a stable machine-readable name of the error (the table is [`ApiError::code`]);
//! - `request_id`, the id the server logged the request with (also in the `X-Request-Id`
//!   header);
//! - on a validation error (400): `errors`, an object of field → list of messages, and the same
//!   field lists at the top level, as upstream (Django REST framework) returns them
//!   (`{"version": [...]}`, `{"non_field_errors": [...]}`, `{"__all__": [...]}`). A field named
//!   `type` (an image's type) keeps upstream's list in place of RFC 9457's `type`: RFC 9457
//!   consumers ignore a member whose value has the wrong type, upstream's clients read the
//!   list. A field named like another member above (a `status` filter) is only under `errors`;
//! - whatever upstream's endpoint put in its body besides `detail` (the cancel endpoint's
//!   `error`, for example), through [`ApiError::with_member`].
//!
//! Internal failures are logged with their cause and answered with a generic 500 that says
//! nothing of the cause; only deliberate client errors carry their message.

use std::fmt;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use flashfleet_engine::EngineError;
use flashfleet_models::{CancelError, RepoError, ValidationErrors};
use serde_json::{Map, Value};

use crate::request_context;

/// The media type of error bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The members of every problem body, which a field of the same name does not replace (except
/// `type`, see the module documentation).
const RESERVED_MEMBERS: [&str; 7] = [
    "type",
    "title",
    "status",
    "detail",
    "code",
    "request_id",
    "errors",
];

/// Boxed cause of an internal failure.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What went wrong with a request.
#[derive(Debug)]
#[non_exhaustive]
pub enum ApiError {
    /// No credentials (401, upstream's "Authentication credentials were not provided.").
    NotAuthenticated,
    /// Credentials that are wrong: an unknown token, a wrong password (401).
    AuthenticationFailed {
        /// What to tell the client ("Invalid token.").
        detail: String,
    },
    /// The caller may see the object but not do this to it (403). Never used for objects of
    /// other organizations: those are [`ApiError::NotFound`].
    PermissionDenied {
        /// Why.
        detail: String,
    },
    /// No such object, or not in the caller's organizations (404).
    NotFound {
        /// Upstream's message ("No Build matches the given query.").
        detail: String,
    },
    /// The route exists, the method does not (405).
    MethodNotAllowed {
        /// The method that was used.
        method: String,
    },
    /// The request's data breaks validation rules (400).
    Invalid(ValidationErrors),
    /// The request cannot be read: malformed JSON, a query parameter of the wrong type (400).
    BadRequest {
        /// What is wrong.
        detail: String,
    },
    /// The object is in a state that does not allow this (409), such as cancelling an upgrade
    /// that is flashing.
    Conflict {
        /// Why.
        detail: String,
    },
    /// An upload over the size limit (413).
    PayloadTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// A body of a media type this endpoint does not read (415).
    UnsupportedMediaType {
        /// What was sent.
        media_type: String,
    },
    /// The caller sent too many requests (429).
    Throttled {
        /// How long until the next request is accepted.
        wait: Duration,
    },
    /// A dependency (the database, storage) is unreachable right now (503).
    Unavailable {
        /// What is unavailable.
        detail: String,
    },
    /// A failure of the server (500): logged with its cause, answered generically.
    Internal {
        /// What failed, for the log.
        context: String,
        /// The cause.
        source: BoxError,
    },
    /// Another error with extra members in its body (upstream's keys besides `detail`).
    WithMembers {
        /// The error.
        error: Box<ApiError>,
        /// The members to add.
        members: Map<String, Value>,
    },
}

impl ApiError {
    /// A 404 with upstream's message for a model: "No Build matches the given query.".
    pub fn no_match(model: &str) -> ApiError {
        ApiError::NotFound {
            detail: format!("No {model} matches the given query."),
        }
    }

    /// A 404 with `detail`.
    pub fn not_found(detail: impl Into<String>) -> ApiError {
        ApiError::NotFound {
            detail: detail.into(),
        }
    }

    /// A 403 with `detail`.
    pub fn permission_denied(detail: impl Into<String>) -> ApiError {
        ApiError::PermissionDenied {
            detail: detail.into(),
        }
    }

    /// A 400 with one message on `field`.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::Invalid(ValidationErrors::field(field, message))
    }

    /// A 400 for a request that cannot be read.
    pub fn bad_request(detail: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            detail: detail.into(),
        }
    }

    /// A 500 for `source`, logged with `context`.
    pub fn internal(context: impl Into<String>, source: impl Into<BoxError>) -> ApiError {
        ApiError::Internal {
            context: context.into(),
            source: source.into(),
        }
    }

    /// This error with `name: value` added to its body (for upstream's keys, such as the
    /// cancel endpoint's `error`).
    pub fn with_member(self, name: &str, value: impl Into<Value>) -> ApiError {
        match self {
            ApiError::WithMembers { error, mut members } => {
                members.insert(name.to_owned(), value.into());
                ApiError::WithMembers { error, members }
            }
            error => {
                let mut members = Map::new();
                members.insert(name.to_owned(), value.into());
                ApiError::WithMembers {
                    error: Box::new(error),
                    members,
                }
            }
        }
    }

    /// The stable name of the error, for programs (the `code` member).
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::NotAuthenticated => "not_authenticated",
            ApiError::AuthenticationFailed { .. } => "authentication_failed",
            ApiError::PermissionDenied { .. } => "permission_denied",
            ApiError::NotFound { .. } => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Invalid(_) => "invalid",
            ApiError::BadRequest { .. } => "bad_request",
            ApiError::Conflict { .. } => "conflict",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType { .. } => "unsupported_media_type",
            ApiError::Throttled { .. } => "throttled",
            ApiError::Unavailable { .. } => "unavailable",
            ApiError::Internal { .. } => "internal_error",
            ApiError::WithMembers { error, .. } => error.code(),
        }
    }

    /// The message of the `detail` member.
    pub fn detail(&self) -> String {
        match self {
            ApiError::NotAuthenticated => "Authentication credentials were not provided.".into(),
            ApiError::AuthenticationFailed { detail }
            | ApiError::PermissionDenied { detail }
            | ApiError::NotFound { detail }
            | ApiError::BadRequest { detail }
            | ApiError::Conflict { detail }
            | ApiError::Unavailable { detail } => detail.clone(),
            ApiError::MethodNotAllowed { method } => format!("Method \"{method}\" not allowed."),
            ApiError::Invalid(errors) => errors.to_string(),
            ApiError::PayloadTooLarge { limit } => {
                format!("The file may not be larger than {}.", human_size(*limit))
            }
            ApiError::UnsupportedMediaType { media_type } => {
                format!("Unsupported media type \"{media_type}\" in request.")
            }
            ApiError::Throttled { wait } => {
                let seconds = wait_seconds(*wait);
                let unit = if seconds == 1 { "second" } else { "seconds" };
                format!("Request was throttled. Expected available in {seconds} {unit}.")
            }
            ApiError::Internal { .. } => "A server error occurred.".into(),
            ApiError::WithMembers { error, .. } => error.detail(),
        }
    }

    /// The problem body, with `request_id`.
    pub fn body(&self, request_id: Option<&str>) -> Map<String, Value> {
        let status = self.status_code();
        let code = self.code();
        let mut body = Map::new();
        body.insert(
            "type".into(),
            Value::String(format!("urn:flashfleet:problem:{code}")),
        );
        body.insert(
            "title".into(),
            Value::String(status.canonical_reason().unwrap_or("Error").to_owned()),
        );
        body.insert("status".into(), Value::from(status.as_u16()));
        body.insert("detail".into(), Value::String(self.detail()));
        body.insert("code".into(), Value::String(code.to_owned()));
        if let Some(request_id) = request_id {
            body.insert("request_id".into(), Value::String(request_id.to_owned()));
        }
        self.add_members(&mut body);
        body
    }

    fn add_members(&self, body: &mut Map<String, Value>) {
        match self {
            ApiError::Invalid(errors) => {
                let fields = serde_json::to_value(errors).unwrap_or_default();
                if let Value::Object(fields) = &fields {
                    for (field, messages) in fields {
                        // Upstream's list replaces RFC 9457's `type` (an image's type is a
                        // field upstream's clients read); the other members keep their
                        // meaning, and such a field's messages are under `errors` only.
                        if field == "type" || !RESERVED_MEMBERS.contains(&field.as_str()) {
                            body.insert(field.clone(), messages.clone());
                        }
                    }
                }
                body.insert("errors".into(), fields);
            }
            ApiError::PayloadTooLarge { limit } => {
                body.insert(
                    "file".into(),
                    Value::Array(vec![Value::String(self.detail())]),
                );
                body.insert("limit".into(), Value::from(*limit));
            }
            ApiError::WithMembers { error, members } => {
                error.add_members(body);
                for (name, value) in members {
                    body.insert(name.clone(), value.clone());
                }
            }
            _ => {}
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::Throttled { wait } => Some(wait_seconds(*wait)),
            ApiError::WithMembers { error, .. } => error.retry_after(),
            _ => None,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Internal { context, source } => write!(formatter, "{context}: {source}"),
            other => formatter.write_str(&other.detail()),
        }
    }
}

impl std::error::Error for ApiError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ApiError::Internal { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::NotAuthenticated | ApiError::AuthenticationFailed { .. } => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::PermissionDenied { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Invalid(_) | ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::WithMembers { error, .. } => error.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        let request_id = request_context::current_request_id();
        let status = self.status_code();
        if status.is_server_error() {
            tracing::error!(error = %self, code = self.code(), "request failed");
        } else {
            tracing::info!(status = status.as_u16(), code = self.code(), detail = %self.detail(), "request refused");
        }
        let mut response = HttpResponse::build(status);
        response.insert_header((header::CONTENT_TYPE, PROBLEM_JSON));
        if matches!(
            self,
            ApiError::NotAuthenticated | ApiError::AuthenticationFailed { .. }
        ) {
            response.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
        }
        if let Some(seconds) = self.retry_after() {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        let body = Value::Object(self.body(request_id.as_deref()));
        response.body(body.to_string())
    }
}

impl From<RepoError> for ApiError {
    fn from(error: RepoError) -> Self {
        match error {
            RepoError::AlreadyExists { constraint } => {
                let (field, message) = constraint.field_and_message();
                ApiError::invalid_field(field, message)
            }
            RepoError::MissingReference { what } => ApiError::invalid_field(
                ValidationErrors::NON_FIELD,
                format!("{what} does not exist."),
            ),
            RepoError::Invalid(errors) => ApiError::Invalid(errors),
            RepoError::Cancel(error) => ApiError::Conflict {
                detail: cancel_message(&error),
            },
            RepoError::Transition(error) => ApiError::Conflict {
                detail: capitalize(&error.to_string()),
            },
            error => ApiError::internal("the repository failed", error),
        }
    }
}

impl From<ValidationErrors> for ApiError {
    fn from(errors: ValidationErrors) -> Self {
        ApiError::Invalid(errors)
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::NotFound { what } => ApiError::not_found(format!("{} not found", what)),
            EngineError::Repository(error) => error.into(),
            error => ApiError::internal("the engine failed", error),
        }
    }
}

/// Upstream's wording of a refused cancellation (`ValueError` texts of `cancel()`).
pub(crate) fn cancel_message(error: &CancelError) -> String {
    capitalize(&error.to_string())
}

fn capitalize(text: &str) -> String {
    let mut characters = text.chars();
    match characters.next() {
        Some(first) => first.to_uppercase().chain(characters).collect(),
        None => String::new(),
    }
}

fn wait_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// A size as Django's `filesizeformat` writes it ("30.0 MB").
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KB", "MB", "GB", "TB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use actix_web::body::MessageBody;
    use serde_json::json;

    use super::*;

    fn rendered(error: ApiError) -> (u16, Value, Vec<(String, String)>) {
        let response = error.error_response();
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
            .collect();
        let body = response.into_body().try_into_bytes().unwrap();
        (status, serde_json::from_slice(&body).unwrap(), headers)
    }

    #[test]
    fn a_validation_error_has_upstreams_field_lists_and_the_problem_members() {
        let mut errors = ValidationErrors::field("version", "This field is required.");
        errors.add("type", "\"x.bin\" is not a valid choice.");
        let (status, body, headers) = rendered(ApiError::Invalid(errors));
        assert_eq!(status, 400);
        assert_eq!(body["version"], json!(["This field is required."]));
        // Upstream's field list wins over RFC 9457's `type` member.
        assert_eq!(body["type"], json!(["\"x.bin\" is not a valid choice."]));
        assert_eq!(
            body["errors"]["version"],
            json!(["This field is required."])
        );
        assert_eq!(body["code"], "invalid");
        assert_eq!(body["status"], 400);
        assert_eq!(body["title"], "Bad Request");
        assert!(headers.contains(&("content-type".into(), PROBLEM_JSON.into())));
    }

    #[test]
    fn a_field_named_like_a_problem_member_does_not_replace_it() {
        let errors = ValidationErrors::field("status", "Select a valid choice.");
        let (_, body, _) = rendered(ApiError::Invalid(errors));
        assert_eq!(body["status"], 400);
        assert_eq!(body["errors"]["status"], json!(["Select a valid choice."]));
    }

    #[test]
    fn each_variant_has_its_status_code_and_upstreams_detail() {
        let cases = [
            (
                ApiError::NotAuthenticated,
                401,
                "not_authenticated",
                "Authentication credentials were not provided.",
            ),
            (
                ApiError::AuthenticationFailed {
                    detail: "Invalid token.".into(),
                },
                401,
                "authentication_failed",
                "Invalid token.",
            ),
            (
                ApiError::no_match("Build"),
                404,
                "not_found",
                "No Build matches the given query.",
            ),
            (
                ApiError::permission_denied("no"),
                403,
                "permission_denied",
                "no",
            ),
            (
                ApiError::MethodNotAllowed {
                    method: "PUT".into(),
                },
                405,
                "method_not_allowed",
                "Method \"PUT\" not allowed.",
            ),
            (
                ApiError::Conflict {
                    detail: "Cannot cancel upgrade: firmware reflashing has already started".into(),
                },
                409,
                "conflict",
                "Cannot cancel upgrade: firmware reflashing has already started",
            ),
            (
                ApiError::PayloadTooLarge { limit: 30 << 20 },
                413,
                "payload_too_large",
                "The file may not be larger than 30.0 MB.",
            ),
            (
                ApiError::Throttled {
                    wait: Duration::from_millis(300),
                },
                429,
                "throttled",
                "Request was throttled. Expected available in 1 second.",
            ),
            (
                ApiError::Unavailable {
                    detail: "database unreachable".into(),
                },
                503,
                "unavailable",
                "database unreachable",
            ),
        ];
        for (error, status, code, detail) in cases {
            let (actual_status, body, _) = rendered(error);
            assert_eq!(actual_status, status, "{body}");
            assert_eq!(body["code"], code);
            assert_eq!(body["detail"], detail);
            assert_eq!(body["type"], format!("urn:flashfleet:problem:{code}"));
        }
    }

    #[test]
    fn an_internal_error_hides_its_cause() {
        let (status, body, _) = rendered(ApiError::internal(
            "reading the build",
            std::io::Error::other("password=hunter2 connection refused"),
        ));
        assert_eq!(status, 500);
        assert_eq!(body["detail"], "A server error occurred.");
        assert!(!body.to_string().contains("hunter2"));
    }

    #[test]
    fn authentication_errors_carry_the_bearer_challenge_and_throttling_retry_after() {
        let (_, _, headers) = rendered(ApiError::NotAuthenticated);
        assert!(headers.contains(&("www-authenticate".into(), "Bearer".into())));
        let (_, _, headers) = rendered(ApiError::Throttled {
            wait: Duration::from_secs(3),
        });
        assert!(headers.contains(&("retry-after".into(), "3".into())));
    }

    #[test]
    fn upstream_members_are_added_to_the_body() {
        let (status, body, _) = rendered(
            ApiError::Conflict {
                detail: "Cannot cancel operation with status: success".into(),
            }
            .with_member("error", "Cannot cancel operation with status: success"),
        );
        assert_eq!(status, 409);
        assert_eq!(
            body["error"],
            "Cannot cancel operation with status: success"
        );
        assert_eq!(body["code"], "conflict");
    }

    #[test]
    fn repository_errors_map_to_client_errors_with_upstreams_keys() {
        let error: ApiError = RepoError::AlreadyExists {
            constraint: flashfleet_models::Constraint::BuildVersion,
        }
        .into();
        let (status, body, _) = rendered(error);
        assert_eq!(status, 400);
        assert_eq!(
            body["non_field_errors"],
            json!(["The fields category, version must make a unique set."])
        );
        let error: ApiError = RepoError::Cancel(CancelError::Finished {
            status: flashfleet_models::UpgradeStatus::Success,
        })
        .into();
        let (status, body, _) = rendered(error);
        assert_eq!(status, 409);
        assert_eq!(
            body["detail"],
            "Cannot cancel operation with status: success"
        );
    }

    #[test]
    fn sizes_are_written_like_django() {
        assert_eq!(human_size(512), "512 bytes");
        assert_eq!(human_size(30 * 1024 * 1024), "30.0 MB");
        assert_eq!(human_size(1536), "1.5 KB");
    }

    #[test]
    fn the_body_carries_the_request_id_when_there_is_one() {
        let body = ApiError::no_match("Build").body(Some("abc"));
        assert_eq!(body["request_id"], "abc");
        assert!(
            ApiError::no_match("Build")
                .body(None)
                .get("request_id")
                .is_none()
        );
    }
}
