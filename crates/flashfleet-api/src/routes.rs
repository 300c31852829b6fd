//! The URL table: every route of the API, in one place.
//!
//! Paths are upstream's: `/api/v1/firmware-upgrader/...` (openwisp-firmware-upgrader),
//! `/api/v1/controller/...` (openwisp-controller's devices and credentials) and
//! `/api/v1/users/...` (openwisp-users), each ending with `/` as Django's do.

use actix_web::http::Method;
use actix_web::http::header::{ALLOW, HeaderValue};
use actix_web::{
    FromRequest, Handler, HttpRequest, HttpResponse, Resource, Responder, ResponseError, Route,
    guard, web,
};

use crate::error::ApiError;
use crate::input::MAX_BODY_BYTES;
use crate::{
    batches, builds, categories, connections, credentials, device_firmware, devices, images, live,
    openapi, operations, organizations, upgrades, users,
};

/// Where upstream's firmware-upgrader API lives.
pub const FIRMWARE_UPGRADER_PREFIX: &str = "/api/v1/firmware-upgrader/";

/// The name of the image download route, for `HttpRequest::url_for`.
pub(crate) const IMAGE_DOWNLOAD_ROUTE: &str = "flashfleet-image-download";

/// Mounts the whole API (under `/api/v1`) into an actix-web app or scope. The app must carry a
/// `web::Data<ApiState>`:
///
/// ```no_run
/// # fn example(state: flashfleet_api::ApiState) {
/// use actix_web::{App, web};
///
/// let app = App::new()
///     .app_data(web::Data::new(state))
///     .configure(flashfleet_api::configure);
/// # }
/// ```
pub fn configure(config: &mut web::ServiceConfig) {
    config.service(
        web::scope("/api/v1")
            .wrap(actix_web::middleware::from_fn(
                crate::request_context::request_context,
            ))
            .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
            .app_data(web::PathConfig::default().error_handler(|_, _| {
                // A malformed id in a path matches no object: upstream's URL patterns answer 404.
                ApiError::not_found("Not found.").into()
            }))
            .service(firmware_upgrader())
            .service(controller())
            .service(users())
            .service(resource("/openapi.json", &[Method::GET]).route(get().to(openapi::document)))
            .service(openapi::docs())
            .default_service(web::to(not_found)),
    );
}

fn firmware_upgrader() -> actix_web::Scope {
    use Method as M;
    web::scope("/firmware-upgrader")
        .service(collection("/build/", builds::list, builds::create))
        .service(detail(
            "/build/{id}/",
            builds::get,
            builds::update,
            builds::delete,
        ))
        .service(
            resource("/build/{id}/upgrade/", &[M::GET, M::POST])
                .route(get().to(upgrades::dry_run))
                .route(web::post().to(upgrades::start)),
        )
        .service(collection(
            "/build/{build}/image/",
            images::list,
            images::create,
        ))
        .service(
            resource("/build/{build}/image/{id}/", &[M::GET, M::DELETE])
                .route(get().to(images::get))
                .route(web::delete().to(images::delete)),
        )
        .service(
            resource("/build/{build}/image/{id}/download/", &[M::GET])
                .name(IMAGE_DOWNLOAD_ROUTE)
                .route(get().to(images::download)),
        )
        .service(collection(
            "/category/",
            categories::list,
            categories::create,
        ))
        .service(detail(
            "/category/{id}/",
            categories::get,
            categories::update,
            categories::delete,
        ))
        .service(resource("/batch-upgrade-operation/", &[M::GET]).route(get().to(batches::list)))
        .service(
            resource("/batch-upgrade-operation/{id}/", &[M::GET]).route(get().to(batches::get)),
        )
        .service(
            resource("/batch-upgrade-operation/{id}/cancel/", &[M::POST])
                .route(web::post().to(batches::cancel)),
        )
        .service(
            resource("/batch-upgrade-operation/{id}/events/", &[M::GET])
                .route(get().to(live::batch_events)),
        )
        .service(resource("/upgrade-operation/", &[M::GET]).route(get().to(operations::list)))
        .service(resource("/upgrade-operation/{id}/", &[M::GET]).route(get().to(operations::get)))
        .service(
            resource("/upgrade-operation/{id}/cancel/", &[M::POST])
                .route(web::post().to(operations::cancel)),
        )
        .service(
            resource("/upgrade-operation/{id}/events/", &[M::GET])
                .route(get().to(live::operation_events)),
        )
        .service(
            resource("/device/{id}/upgrade-operation/", &[M::GET])
                .route(get().to(operations::list_for_device)),
        )
        .service(detail(
            "/device/{id}/firmware/",
            device_firmware::get,
            device_firmware::update,
            device_firmware::delete,
        ))
        .service(resource("/device/{id}/events/", &[M::GET]).route(get().to(live::device_events)))
        .default_service(web::to(not_found))
}

/// openwisp-controller's devices, device connections and credentials.
fn controller() -> actix_web::Scope {
    use Method as M;
    web::scope("/controller")
        .service(collection("/device/", devices::list, devices::create))
        .service(detail(
            "/device/{id}/",
            devices::get,
            devices::update,
            devices::delete,
        ))
        .service(
            resource("/device/{id}/register/", &[M::POST]).route(web::post().to(devices::register)),
        )
        .service(
            resource("/device/{id}/deactivate/", &[M::POST])
                .route(web::post().to(devices::deactivate)),
        )
        .service(
            resource("/device/{id}/activate/", &[M::POST]).route(web::post().to(devices::activate)),
        )
        .service(collection(
            "/device/{id}/connection/",
            connections::list,
            connections::create,
        ))
        .service(detail(
            "/device/{id}/connection/{connection_id}/",
            connections::get,
            connections::update,
            connections::delete,
        ))
        .service(collection(
            "/credential/",
            credentials::list,
            credentials::create,
        ))
        .service(detail(
            "/credential/{id}/",
            credentials::get,
            credentials::update,
            credentials::delete,
        ))
        .default_service(web::to(not_found))
}

/// openwisp-users' token, organizations and users.
fn users() -> actix_web::Scope {
    use Method as M;
    web::scope("/users")
        .service(resource("/token/", &[M::POST]).route(web::post().to(users::obtain_token)))
        .service(collection(
            "/organization/",
            organizations::list,
            organizations::create,
        ))
        .service(detail(
            "/organization/{id}/",
            organizations::get,
            organizations::update,
            organizations::delete,
        ))
        .service(collection("/user/", users::list, users::create))
        .service(detail(
            "/user/{id}/",
            users::get,
            users::update,
            users::delete,
        ))
        .default_service(web::to(not_found))
}

/// A list resource: `GET` lists, `POST` creates.
fn collection<L, LA, C, CA>(path: &str, list: L, create: C) -> Resource
where
    L: Handler<LA>,
    LA: FromRequest + 'static,
    L::Output: Responder + 'static,
    C: Handler<CA>,
    CA: FromRequest + 'static,
    C::Output: Responder + 'static,
{
    resource(path, &[Method::GET, Method::POST])
        .route(get().to(list))
        .route(web::post().to(create))
}

/// An object resource: `GET` reads, `PUT` and `PATCH` change (one handler: the body's reader
/// knows a `PATCH` is partial), `DELETE` deletes.
fn detail<G, GA, U, UA, D, DA>(path: &str, read: G, update: U, delete: D) -> Resource
where
    G: Handler<GA>,
    GA: FromRequest + 'static,
    G::Output: Responder + 'static,
    U: Handler<UA>,
    UA: FromRequest + 'static,
    U::Output: Responder + 'static,
    D: Handler<DA>,
    DA: FromRequest + 'static,
    D::Output: Responder + 'static,
{
    resource(
        path,
        &[Method::GET, Method::PUT, Method::PATCH, Method::DELETE],
    )
    .route(get().to(read))
    .route(web::put().to(update.clone()))
    .route(web::patch().to(update))
    .route(web::delete().to(delete))
}

/// A resource that answers methods outside `methods` with a 405 problem naming the allowed
/// ones (and `OPTIONS`, `HEAD` as upstream lists them).
pub(crate) fn resource(path: &str, methods: &[Method]) -> Resource {
    let mut allowed: Vec<&str> = methods.iter().map(Method::as_str).collect();
    if methods.contains(&Method::GET) {
        allowed.push("HEAD");
    }
    allowed.push("OPTIONS");
    let allow = allowed.join(", ");
    web::resource(path).default_service(web::to(move |request: HttpRequest| {
        let allow = allow.clone();
        async move {
            let mut response = if request.method() == Method::OPTIONS {
                HttpResponse::Ok().finish()
            } else {
                ApiError::MethodNotAllowed {
                    method: request.method().to_string(),
                }
                .error_response()
            };
            if let Ok(value) = HeaderValue::from_str(&allow) {
                response.headers_mut().insert(ALLOW, value);
            }
            response
        }
    }))
}

/// A route for `GET` and `HEAD` (actix-http sends no body for `HEAD`).
pub(crate) fn get() -> Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found("Not found."))
}
