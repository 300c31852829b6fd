//! Signing in and out: `GET`/`POST /login`, `POST /logout`.

use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use crate::Dashboard;
use crate::error::DashboardError;
use crate::layout::redirect;
use crate::session::{Session, Viewer};

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    csrf: String,
    next: String,
    username: String,
    error: Option<String>,
}

/// The query of the sign-in page.
#[derive(Debug, Deserialize)]
pub(crate) struct NextQuery {
    next: Option<String>,
}

/// The sign-in form.
#[derive(Deserialize)]
pub(crate) struct SignInForm {
    csrf: String,
    username: String,
    password: String,
    #[serde(default)]
    next: String,
}

/// `GET /login`: the form, with an anonymous session carrying its CSRF token.
pub(crate) async fn form(
    request: HttpRequest,
    dashboard: web::Data<Dashboard>,
    query: web::Query<NextQuery>,
) -> Result<HttpResponse, DashboardError> {
    let session = match Session::of_request(&dashboard, &request) {
        Some(session) => session,
        None => Session::anonymous(&dashboard)?,
    };
    let next = local_path(query.next.as_deref().unwrap_or("/"));
    respond(
        &dashboard,
        &session,
        SignInPage {
            csrf: session.csrf.clone(),
            next,
            username: String::new(),
            error: None,
        },
        actix_web::http::StatusCode::OK,
    )
}

/// `POST /login`: a new session for the user whose password this is.
pub(crate) async fn sign_in(
    request: HttpRequest,
    dashboard: web::Data<Dashboard>,
    form: web::Form<SignInForm>,
) -> Result<HttpResponse, DashboardError> {
    let form = form.into_inner();
    let session = Session::of_request(&dashboard, &request).ok_or(DashboardError::Csrf)?;
    session.check_csrf(&form.csrf)?;
    let api = dashboard.api();
    flashfleet_api::users::check_address_throttle(api, request.peer_addr())?;
    let username = form.username.trim().to_owned();
    let user = if username.is_empty()
        || form.password.is_empty()
        || form.password.chars().count() > flashfleet_api::users::PASSWORD_MAX_LENGTH
    {
        None
    } else {
        flashfleet_api::users::check_password(api, &username, form.password).await?
    };
    let Some(user) = user else {
        tracing::info!(username = %username, "dashboard sign-in refused");
        let fresh = Session::anonymous(&dashboard)?;
        return respond(
            &dashboard,
            &fresh,
            SignInPage {
                csrf: fresh.csrf.clone(),
                next: local_path(&form.next),
                username,
                error: Some(flashfleet_api::users::INVALID_CREDENTIALS.to_owned()),
            },
            actix_web::http::StatusCode::UNAUTHORIZED,
        );
    };
    tracing::info!(user = %user.username, "signed in to the dashboard");
    // A new session (and CSRF token) on signing in: a token seen before cannot be reused.
    let signed_in = Session::sign_in(&dashboard, user.id).await?;
    let mut response = redirect(&local_path(&form.next));
    signed_in.store(&dashboard, &mut response)?;
    Ok(response)
}

/// `POST /logout`.
pub(crate) async fn sign_out(
    dashboard: web::Data<Dashboard>,
    viewer: Viewer,
    form: web::Form<crate::session::CsrfForm>,
) -> Result<HttpResponse, DashboardError> {
    viewer.check_csrf(&form.csrf)?;
    viewer.sign_out(&dashboard).await?;
    tracing::info!(user = %viewer.caller.actor.username, "signed out of the dashboard");
    let mut response = redirect("/login");
    Session::clear(&dashboard, &mut response)?;
    Ok(response)
}

fn respond(
    dashboard: &Dashboard,
    session: &Session,
    page: SignInPage,
    status: actix_web::http::StatusCode,
) -> Result<HttpResponse, DashboardError> {
    let mut response = crate::layout::render_with_status(&page, status)?;
    session.store(dashboard, &mut response)?;
    Ok(response)
}

/// `next` if it is a path of this site, `/` otherwise (no open redirect).
fn local_path(next: &str) -> String {
    if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') {
        next.to_owned()
    } else {
        "/".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed() {
        assert_eq!(local_path("/devices/"), "/devices/");
        assert_eq!(local_path("//evil.example/"), "/");
        assert_eq!(local_path("https://evil.example/"), "/");
        assert_eq!(local_path("/\\evil.example"), "/");
    }
}
