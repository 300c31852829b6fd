//! What every page shows around its content (the navigation, who is signed in, the sign-out
//! form), and the small pieces pages share: times, status labels, rendering.

use actix_web::HttpResponse;
use actix_web::http::header::ContentType;
use askama::Template;
use chrono::{DateTime, SecondsFormat, Utc};

use crate::error::DashboardError;
use crate::session::Viewer;

/// The frame of a signed-in page.
pub(crate) struct Layout {
    /// The signed-in user's name.
    pub(crate) username: String,
    /// The session's CSRF token, for the forms of the page.
    pub(crate) csrf: String,
    /// Which navigation entry is current (`builds`, `categories`, `devices`, `batches`).
    pub(crate) section: &'static str,
}

impl Layout {
    /// The frame of a page of `section` for `viewer`.
    pub(crate) fn new(viewer: &Viewer, section: &'static str) -> Layout {
        Layout {
            username: viewer.caller.actor.username.clone(),
            csrf: viewer.session.csrf.clone(),
            section,
        }
    }

    /// The `aria-current` attribute value of a navigation entry.
    pub(crate) fn current(&self, section: &str) -> &'static str {
        if self.section == section {
            "page"
        } else {
            "false"
        }
    }
}

/// A time as the page carries it: UTC in RFC 3339, which the page's script shows in the
/// viewer's time zone (`<time datetime=...>`).
pub(crate) fn iso_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A status as a label that reads without colour: a symbol and the word, with a class for the
/// colour.
#[derive(Clone, Debug)]
pub(crate) struct StatusLabel {
    /// The status (`success`, `in-progress`, ...), also the CSS class suffix.
    pub(crate) status: String,
    /// A symbol that tells the status apart without colour.
    pub(crate) symbol: &'static str,
}

impl StatusLabel {
    /// The label of `status`.
    pub(crate) fn new(status: &str) -> StatusLabel {
        StatusLabel {
            status: status.to_owned(),
            symbol: status_symbol(status),
        }
    }
}

/// The symbol of a status (the script uses the same table).
pub(crate) fn status_symbol(status: &str) -> &'static str {
    match status {
        "success" | "compatible" => "✓",
        "failed" | "incompatible" => "✗",
        "aborted" => "⊘",
        "cancelled" => "–",
        "in-progress" => "…",
        "idle" => "○",
        _ => "?",
    }
}

/// The HTML response of `page`.
pub(crate) fn render(page: &impl Template) -> Result<HttpResponse, DashboardError> {
    let html = page
        .render()
        .map_err(|error| DashboardError::internal("rendering a page", error))?;
    Ok(HttpResponse::Ok()
        .content_type(ContentType::html())
        .insert_header(("cache-control", "no-store"))
        .body(html))
}

/// The HTML response of `page` with `status` (a form refused, shown again with why).
pub(crate) fn render_with_status(
    page: &impl Template,
    status: actix_web::http::StatusCode,
) -> Result<HttpResponse, DashboardError> {
    let mut response = render(page)?;
    *response.status_mut() = status;
    Ok(response)
}

/// A `303 See Other` to `location` (after a form).
pub(crate) fn redirect(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((actix_web::http::header::LOCATION, location.to_owned()))
        .finish()
}
