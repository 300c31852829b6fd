//! What can go wrong while serving a page, and the page that says so.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentType};
use actix_web::{HttpResponse, ResponseError};
use askama::Template;
use flashfleet_api::ApiError;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a page could not be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DashboardError {
    /// The page needs a signed-in user: the browser goes to the sign-in page, then back to
    /// `next`.
    #[error("sign in first")]
    SignIn {
        /// The page to return to.
        next: String,
    },
    /// A form came without the session's CSRF token.
    #[error("the form expired or did not come from this dashboard; reload the page and try again")]
    Csrf,
    /// The API's rules refused the request (not found, forbidden, invalid, conflict, ...).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// Something failed that the user cannot fix (logged; the page says only that).
    #[error("{context}")]
    Internal {
        /// What was being done.
        context: String,
        /// What failed.
        #[source]
        source: BoxError,
    },
}

impl DashboardError {
    /// What a form's page shows when `error` refused the form: its status and message, for
    /// what the user can fix there (invalid fields, a conflict, a file too large or of the
    /// wrong type); any other failure (not signed in, forbidden, not found, internal) stays an
    /// error, for the error page.
    pub(crate) fn into_form_refusal(
        self,
    ) -> Result<(actix_web::http::StatusCode, String), DashboardError> {
        let status = self.status_code();
        if status.is_server_error()
            || status == StatusCode::UNAUTHORIZED
            || status == StatusCode::FORBIDDEN
            || status == StatusCode::NOT_FOUND
            || !status.is_client_error()
            || matches!(self, DashboardError::Csrf | DashboardError::SignIn { .. })
        {
            return Err(self);
        }
        let message = self.message();
        Ok((status, message))
    }

    /// An internal failure while doing `context`.
    pub(crate) fn internal(
        context: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> DashboardError {
        DashboardError::Internal {
            context: context.into(),
            source: source.into(),
        }
    }

    /// What the page says: the API's messages for what the user can fix, nothing more for
    /// internal failures.
    pub(crate) fn message(&self) -> String {
        match self {
            DashboardError::Api(ApiError::Invalid(errors)) => errors
                .iter()
                .flat_map(|(field, messages)| {
                    messages.iter().map(move |message| {
                        if field == flashfleet_models::ValidationErrors::NON_FIELD {
                            message.clone()
                        } else {
                            format!("{field}: {message}")
                        }
                    })
                })
                .collect::<Vec<_>>()
                .join(" "),
            error if error.status_code().is_server_error() => {
                "A server error occurred; it was logged.".to_owned()
            }
            error => error.to_string(),
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    status: u16,
    reason: String,
    message: String,
}

impl ResponseError for DashboardError {
    fn status_code(&self) -> StatusCode {
        match self {
            DashboardError::SignIn { .. } => StatusCode::SEE_OTHER,
            DashboardError::Csrf => StatusCode::FORBIDDEN,
            DashboardError::Api(error) => error.status_code(),
            DashboardError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let DashboardError::SignIn { next } = self {
            let query = form_urlencoded_next(next);
            return HttpResponse::SeeOther()
                .insert_header((header::LOCATION, format!("/login?next={query}")))
                .finish();
        }
        let status = self.status_code();
        if let DashboardError::Internal { context, source } = self {
            tracing::error!(%source, "{context}");
        }
        let page = ErrorPage {
            status: status.as_u16(),
            reason: status.canonical_reason().unwrap_or("Error").to_owned(),
            message: self.message(),
        };
        match page.render() {
            Ok(html) => HttpResponse::build(status)
                .content_type(ContentType::html())
                .body(html),
            Err(error) => {
                tracing::error!(%error, "rendering the error page");
                HttpResponse::build(status).finish()
            }
        }
    }
}

/// `next` as a query value: only a local path is kept (no open redirect).
fn form_urlencoded_next(next: &str) -> String {
    let local = if next.starts_with('/') && !next.starts_with("//") {
        next
    } else {
        "/"
    };
    local
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' => {
                char::from(byte).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}
