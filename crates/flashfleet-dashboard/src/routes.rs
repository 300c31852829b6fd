//! The URL table of the dashboard, in one place.

use actix_web::web;

use crate::layout::redirect;
use crate::{
    Dashboard, batches, builds, categories, devices, mass_upgrades, sign_in, static_files,
};

/// Mounts the dashboard at `/` into an actix-web app. Register it after the API and any other
/// route: its scope answers every path it is asked (a 404 page for unknown ones).
///
/// ```no_run
/// # fn example(api: flashfleet_api::ApiState, secret: [u8; 32]) {
/// use actix_web::{App, web};
/// use flashfleet_dashboard::{Dashboard, DashboardConfig};
///
/// let dashboard = Dashboard::new(api.clone(), &secret, DashboardConfig::default());
/// let app = App::new()
///     .app_data(web::Data::new(api))
///     .configure(flashfleet_api::configure)
///     .configure(|config| flashfleet_dashboard::configure(config, dashboard.clone()));
/// # }
/// ```
pub fn configure(config: &mut web::ServiceConfig, dashboard: Dashboard) {
    config.service(
        web::scope("")
            .wrap(
                actix_web::middleware::DefaultHeaders::new()
                    // The pages load only their own stylesheet and script: no inline script runs.
                    .add((
                        "content-security-policy",
                        "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
                    ))
                    .add(("x-content-type-options", "nosniff"))
                    .add(("referrer-policy", "same-origin")),
            )
            .wrap(actix_web::middleware::from_fn(
                flashfleet_api::request_context,
            ))
            .app_data(web::Data::new(dashboard))
            .route("/", web::get().to(|| async { redirect("/builds/") }))
            .route("/login", web::get().to(sign_in::form))
            .route("/login", web::post().to(sign_in::sign_in))
            .route("/logout", web::post().to(sign_in::sign_out))
            .route("/categories/", web::get().to(categories::list))
            .route("/categories/", web::post().to(categories::create))
            .route("/builds/", web::get().to(builds::list))
            .route("/builds/", web::post().to(builds::create))
            .route("/builds/{id}/", web::get().to(builds::detail))
            .route("/builds/{id}/images", web::post().to(builds::upload))
            .route(
                "/builds/{id}/upgrade",
                web::get().to(mass_upgrades::dry_run),
            )
            .route("/builds/{id}/upgrade", web::post().to(mass_upgrades::start))
            .route("/batches/", web::get().to(batches::list))
            .route("/batches/{id}/", web::get().to(batches::detail))
            .route("/batches/{id}/events", web::get().to(batches::events))
            .route("/batches/{id}/cancel", web::post().to(batches::cancel))
            .route("/devices/", web::get().to(devices::list))
            .route("/devices/{id}/", web::get().to(devices::detail))
            .route("/devices/{id}/firmware", web::post().to(devices::assign))
            .route(
                "/operations/{id}/cancel",
                web::post().to(devices::cancel_operation),
            )
            .route(
                "/static/dashboard.css",
                web::get().to(static_files::stylesheet),
            )
            .route("/static/dashboard.js", web::get().to(static_files::script))
            .default_service(web::to(not_found)),
    );
}

async fn not_found() -> Result<actix_web::HttpResponse, crate::DashboardError> {
    Err(crate::DashboardError::Api(
        flashfleet_api::ApiError::not_found("There is no such page."),
    ))
}
