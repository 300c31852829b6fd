//! Firmware images (upstream endpoints 4, 5 and 6): `build/<build>/image/` (list, multipart
//! upload), `build/<build>/image/<id>/` (get, delete) and `.../download/`.
//!
//! An upload streams to storage (never whole in memory) while its size, SHA-256 and OpenWrt
//! metadata are computed; the image type is then checked against the image map and the image's
//! own metadata, and only then is the file kept and the row written. A refused upload leaves
//! no object behind.

use actix_multipart::{Field, Multipart};
use actix_web::http::header::{self, ContentDisposition, DispositionParam, DispositionType};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use flashfleet_boards::{EntryOrigin, ImageMetadata, TypeSource};
use flashfleet_models::firmware_image::TYPE_MAX_LENGTH;
use flashfleet_models::page::ImageOrder;
use flashfleet_models::repository::ImageFilter;
use flashfleet_models::{
    BuildId, Category, Details, FirmwareImage, ImageId, NewFirmwareImage, StorageKey,
    ValidationErrors,
};
use flashfleet_storage::{StagedUpload, StorageError};
use futures_util::{StreamExt, TryStreamExt};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::input::Input;
use crate::pagination::{Paginated, Pagination, absolute_url};
use crate::state::ApiState;
use crate::timestamp::Timestamp;

/// The most bytes of a text field of an upload form (`type`, `details`).
const MAX_TEXT_FIELD_BYTES: usize = 64 * 1024;
/// Room for the multipart framing and text fields beyond the file itself.
const MULTIPART_OVERHEAD_BYTES: u64 = 1024 * 1024;

/// A firmware image as the API shows it: upstream's `FirmwareImageSerializer` (`id, created,
/// modified, file, type, build`), then what flashfleet knows beyond it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImageJson {
    /// Its id.
    pub id: Uuid,
    /// When it was uploaded.
    pub created: Timestamp,
    /// When it was last changed.
    pub modified: Timestamp,
    /// The absolute URL of its download endpoint.
    pub file: String,
    /// Its image type (a key of the image map).
    #[serde(rename = "type")]
    pub image_type: String,
    /// Its build.
    pub build: Uuid,
    /// The file name as uploaded.
    pub file_name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, hexadecimal.
    pub sha256: String,
    /// The image type's label in the map (or from the image's metadata).
    pub label: Option<String>,
    /// The device models (map) or board names (metadata) the image is for.
    pub boards: Vec<String>,
    /// The OpenWrt metadata the image carries (`fwtool -i`), if any.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// Integrators' own fields.
    #[schema(value_type = Object)]
    pub details: Details,
}

impl ImageJson {
    /// The JSON of `image`, its `file` URL made absolute for `request`.
    pub fn new(image: FirmwareImage, request: &HttpRequest, state: &ApiState) -> ImageJson {
        // The route's own URL, so that it carries the scope an embedding application mounted
        // the API under (`/portal/api/v1/...`); the fixed path if the route is not mounted.
        let path = request
            .url_for(
                crate::routes::IMAGE_DOWNLOAD_ROUTE,
                [image.build_id.to_string(), image.id.to_string()],
            )
            .map(|url| url.path().to_owned())
            .unwrap_or_else(|_| {
                format!(
                    "{}build/{}/image/{}/download/",
                    crate::routes::FIRMWARE_UPGRADER_PREFIX,
                    image.build_id,
                    image.id
                )
            });
        let (label, boards) = image_boards(state, &image);
        ImageJson {
            id: image.id.0,
            created: image.created.into(),
            modified: image.modified.into(),
            file: absolute_url(request, state, &path),
            image_type: image.image_type,
            build: image.build_id.0,
            file_name: image.file_name,
            size: image.size,
            sha256: image.sha256,
            label,
            boards,
            metadata: image.metadata,
            details: image.details,
        }
    }
}

/// The label and boards of an image: from the map, or from its metadata for types the map
/// does not know.
pub fn image_boards(state: &ApiState, image: &FirmwareImage) -> (Option<String>, Vec<String>) {
    if let Some(entry) = state.image_map().entry(&image.image_type) {
        return (Some(entry.label().to_owned()), entry.boards().to_vec());
    }
    let metadata = stored_metadata(image);
    let boards = metadata
        .as_ref()
        .and_then(ImageMetadata::active_supported_devices)
        .map(<[String]>::to_vec)
        .unwrap_or_default();
    let label = metadata.and_then(|metadata| metadata.version.board.clone());
    (label, boards)
}

fn stored_metadata(image: &FirmwareImage) -> Option<ImageMetadata> {
    let json = image.metadata.as_ref()?.to_string();
    ImageMetadata::from_json(json.as_bytes()).ok()
}

/// The multipart form of an upload.
#[derive(Debug, ToSchema)]
#[expect(
    dead_code,
    reason = "documents the request body in the OpenAPI document"
)]
pub struct ImageUpload {
    /// The image file.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    /// Its image type; derived from the file name (and the image's metadata) when absent.
    #[serde(rename = "type")]
    #[schema(rename = "type")]
    image_type: Option<String>,
}

/// Lists the images of a build (`-created`; filter `type`).
#[utoipa::path(
    get, path = "/api/v1/firmware-upgrader/build/{build}/image/", tag = "firmware-upgrader",
    params(("build" = Uuid, Path),
        ("type" = Option<String>, Query, description = "Only images of this type"),
        ("ordering" = Option<String>, Query, description = "type, created, modified; `-` for descending"),
        ("page" = Option<u64>, Query), ("page_size" = Option<u64>, Query)),
    responses((status = 200, body = Paginated<ImageJson>), (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn list(
    request: HttpRequest,
    state: web::Data<ApiState>,
    caller: Caller,
    build: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let scope = caller.read_scope();
    let (build, _) = parent_build(&state, &scope, BuildId(*build)).await?;
    let pagination = Pagination::from_request(&request, &state)?;
    let mut query = Input::from_query(&request);
    let filter = ImageFilter {
        image_type: query.filter_text("type"),
        ordering: query.ordering::<ImageOrder>(),
    };
    query.finish()?;
    let page = state
        .repository()
        .list_images(&scope, build.id, &filter, pagination.request())
        .await?
        .map(|image| ImageJson::new(image, &request, &state));
    pagination.respond(&request, &state, page)
}

/// Uploads an image (multipart: `file`, optional `type`).
#[utoipa::path(
    post, path = "/api/v1/firmware-upgrader/build/{build}/image/", tag = "firmware-upgrader",
    params(("build" = Uuid, Path)),
    request_body(content = ImageUpload, content_type = "multipart/form-data"),
    responses((status = 201, body = ImageJson), (status = 400, body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn create(
    request: HttpRequest,
    state: web::Data<ApiState>,
    caller: Caller,
    build: web::Path<Uuid>,
    multipart: Multipart,
) -> Result<HttpResponse, ApiError> {
    let stored = upload(
        &state,
        &caller,
        BuildId(*build),
        content_length(&request),
        multipart,
    )
    .await?;
    Ok(HttpResponse::Created().json(ImageJson::new(stored, &request, &state)))
}

/// Uploads an image into build `build` for `caller` from a multipart form (`file`, `type`,
/// `details`; other fields are ignored) of `content_length` bytes: the stored image. The file
/// streams to storage and is kept only once it passed every check.
pub async fn upload(
    state: &ApiState,
    caller: &Caller,
    build: BuildId,
    content_length: Option<u64>,
    multipart: Multipart,
) -> Result<FirmwareImage, ApiError> {
    let (build, category) = parent_build(state, &caller.read_scope(), build).await?;
    caller.require_change(category.organization_id)?;
    if let (Some(limit), Some(length)) = (state.config().max_file_size, content_length)
        && length > limit.saturating_add(MULTIPART_OVERHEAD_BYTES)
    {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let form = read_upload_form(state, build.id, multipart).await?;
    let image = match validate_upload(state, build.id, &form) {
        Ok(image) => image,
        Err(error) => {
            if let Some(staged) = form.staged {
                discard(staged).await;
            }
            return Err(error);
        }
    };
    let Some(staged) = form.staged else {
        return Err(ApiError::internal(
            "uploading an image",
            "a validated upload has a file",
        ));
    };
    let storage_key = staged.storage_key().clone();
    staged
        .commit()
        .await
        .map_err(|error| storage_error("keeping an uploaded image", error))?;
    let stored = match state.repository().insert_image(&image.into_image()).await {
        Ok(stored) => stored,
        Err(error) => {
            delete_files(state, std::slice::from_ref(&storage_key)).await;
            return Err(error.into());
        }
    };
    tracing::info!(image = %stored.id, build = %build.id, image_type = %stored.image_type, size = stored.size, "image uploaded");
    if let Err(error) = state.engine().image_added(stored.id).await {
        tracing::warn!(image = %stored.id, %error, "could not record which devices run the new image");
    }
    Ok(stored)
}

/// One image of a build.
#[utoipa::path(
    get, path = "/api/v1/firmware-upgrader/build/{build}/image/{id}/", tag = "firmware-upgrader",
    params(("build" = Uuid, Path), ("id" = Uuid, Path)),
    responses((status = 200, body = ImageJson), (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn get(
    request: HttpRequest,
    state: web::Data<ApiState>,
    caller: Caller,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (build, image) = path.into_inner();
    let (image, _) = visible_image(&state, &caller, BuildId(build), ImageId(image)).await?;
    Ok(HttpResponse::Ok().json(ImageJson::new(image, &request, &state)))
}

/// Deletes an image and its file. Operations that used it keep a null image.
#[utoipa::path(
    delete, path = "/api/v1/firmware-upgrader/build/{build}/image/{id}/", tag = "firmware-upgrader",
    params(("build" = Uuid, Path), ("id" = Uuid, Path)),
    responses((status = 204), (status = 403, body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn delete(
    state: web::Data<ApiState>,
    caller: Caller,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (build, image) = path.into_inner();
    let (image, category) = visible_image(&state, &caller, BuildId(build), ImageId(image)).await?;
    caller.require_change(category.organization_id)?;
    let key = state
        .repository()
        .delete_image(image.id)
        .await?
        .ok_or_else(|| ApiError::no_match("Firmware Image"))?;
    delete_files(&state, &[key]).await;
    Ok(HttpResponse::NoContent().finish())
}

/// Downloads an image's file (superusers, and managers of the image's organization; images of
/// shared categories only superusers, as upstream's private storage).
#[utoipa::path(
    get, path = "/api/v1/firmware-upgrader/build/{build}/image/{id}/download/", tag = "firmware-upgrader",
    params(("build" = Uuid, Path), ("id" = Uuid, Path)),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 403, body = crate::openapi::Problem, content_type = "application/problem+json"), (status = 404, body = crate::openapi::Problem, content_type = "application/problem+json")),
    security(("bearer" = []))
)]
pub async fn download(
    state: web::Data<ApiState>,
    caller: Caller,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (build, image) = path.into_inner();
    let (image, category) = visible_image(&state, &caller, BuildId(build), ImageId(image)).await?;
    let allowed = caller.actor.is_superuser
        || category
            .organization_id
            .is_some_and(|organization| caller.can_change(Some(organization)));
    if !allowed {
        return Err(ApiError::permission_denied("Private storage access denied"));
    }
    let file = state
        .store()
        .open(&image.storage_key)
        .await
        .map_err(|error| match error {
            StorageError::NotFound { .. } => {
                ApiError::not_found("No Firmware Image found matching the query")
            }
            error => storage_error("opening an image", error),
        })?;
    let disposition = ContentDisposition {
        disposition: DispositionType::Inline,
        parameters: vec![DispositionParam::Filename(image.file_name.clone())],
    };
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header((header::CONTENT_DISPOSITION, disposition))
        .no_chunking(file.size())
        .streaming(tokio_util::io::ReaderStream::new(file.into_async_read())))
}

/// Throws a refused upload away; a failure is logged (the backend's own cleanup of unfinished
/// uploads applies then).
async fn discard(staged: StagedUpload) {
    if let Err(error) = staged.abort().await {
        tracing::error!(%error, "could not discard a refused upload");
    }
}

/// Deletes stored files whose rows are gone; failures are logged, as upstream's
/// `_remove_file` does, since the rows are already deleted.
pub(crate) async fn delete_files(state: &ApiState, keys: &[StorageKey]) {
    if keys.is_empty() {
        return;
    }
    match state.store().delete_all(keys).await {
        Ok(()) => tracing::info!(files = keys.len(), "deleted firmware files"),
        Err(error) => tracing::error!(%error, "error deleting firmware files"),
    }
}

/// The build of an image URL: upstream's 404 "build not found" when the caller cannot see it.
async fn parent_build(
    state: &ApiState,
    scope: &flashfleet_models::Scope,
    id: BuildId,
) -> Result<(flashfleet_models::Build, Category), ApiError> {
    state
        .repository()
        .build(scope, id)
        .await?
        .ok_or_else(|| ApiError::not_found("build not found"))
}

/// The image `id` of build `build` if the caller sees it, with its category.
async fn visible_image(
    state: &ApiState,
    caller: &Caller,
    build: BuildId,
    id: ImageId,
) -> Result<(FirmwareImage, Category), ApiError> {
    let scope = caller.read_scope();
    let (_, category) = parent_build(state, &scope, build).await?;
    let image = state
        .repository()
        .image(&scope, id)
        .await?
        .filter(|image| image.build_id == build)
        .ok_or_else(|| ApiError::no_match("Firmware Image"))?;
    Ok((image, category))
}

/// What an upload form held.
struct UploadForm {
    staged: Option<StagedUpload>,
    file_name: Option<String>,
    image_type: Option<String>,
    details: Option<Details>,
    errors: ValidationErrors,
}

async fn read_upload_form(
    state: &ApiState,
    build: BuildId,
    mut multipart: Multipart,
) -> Result<UploadForm, ApiError> {
    let mut form = UploadForm {
        staged: None,
        file_name: None,
        image_type: None,
        details: None,
        errors: ValidationErrors::new(),
    };
    let result = read_fields(state, build, &mut multipart, &mut form).await;
    if let Err(error) = result {
        if let Some(staged) = form.staged.take() {
            discard(staged).await;
        }
        return Err(error);
    }
    Ok(form)
}

async fn read_fields(
    state: &ApiState,
    build: BuildId,
    multipart: &mut Multipart,
    form: &mut UploadForm,
) -> Result<(), ApiError> {
    while let Some(field) = multipart.try_next().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_owned();
        match name.as_str() {
            "file" => {
                let file_name = field
                    .content_disposition()
                    .and_then(|disposition| disposition.get_filename())
                    .unwrap_or_default()
                    .to_owned();
                if form.staged.is_some() {
                    form.errors.add("file", "Upload a single file.");
                    drain(field).await?;
                    continue;
                }
                let staged = state
                    .store()
                    .upload(build, &file_name, field)
                    .await
                    .map_err(|error| match error {
                        StorageError::TooLarge { limit } => ApiError::PayloadTooLarge { limit },
                        StorageError::UploadRead { message } => ApiError::bad_request(format!(
                            "The upload could not be read: {message}"
                        )),
                        error => storage_error("storing an upload", error),
                    })?;
                form.file_name = Some(file_name);
                form.staged = Some(staged);
            }
            "type" => form.image_type = Some(text_field(field).await?),
            "details" => {
                let text = text_field(field).await?;
                match serde_json::from_str::<serde_json::Value>(&text) {
                    Ok(serde_json::Value::Object(details)) => form.details = Some(details),
                    _ => form
                        .errors
                        .add("details", "Value must be valid JSON object."),
                }
            }
            _ => drain(field).await?,
        }
    }
    Ok(())
}

/// Checks an upload as upstream's `clean()` does, plus the image's own metadata: the new image
/// row, or 400 with every problem.
fn validate_upload(
    state: &ApiState,
    build: BuildId,
    form: &UploadForm,
) -> Result<NewFirmwareImage, ApiError> {
    let mut errors = form.errors.clone();
    let Some(staged) = &form.staged else {
        errors.add("file", "No file was submitted.");
        return Err(ApiError::Invalid(errors));
    };
    let file_name = form.file_name.clone().unwrap_or_default();
    if file_name.is_empty() {
        errors.add("file", "No filename could be determined.");
    }
    let metadata = match staged.inspection() {
        Ok(inspection) => inspection.metadata.clone(),
        Err(error) => {
            errors.add(
                "file",
                format!("The image's metadata cannot be read: {error}."),
            );
            None
        }
    };
    let image_map = state.image_map();
    let explicit_type = form
        .image_type
        .as_deref()
        .map(str::trim)
        .filter(|image_type| !image_type.is_empty());
    let resolved = image_map.resolve_image_type(&file_name, metadata.as_ref());
    let image_type = match explicit_type {
        Some(image_type) => {
            let known = image_map.entry(image_type).is_some()
                || resolved.as_ref().is_ok_and(|resolved| {
                    resolved.source == TypeSource::ImageMetadata
                        && resolved.image_type == image_type
                });
            if image_type.chars().count() > TYPE_MAX_LENGTH {
                errors.add(
                    "type",
                    format!("Ensure this field has no more than {TYPE_MAX_LENGTH} characters."),
                );
            } else if !known {
                errors.add("type", format!("\"{image_type}\" is not a valid choice."));
            }
            image_type.to_owned()
        }
        None => match &resolved {
            Ok(resolved) => resolved.image_type.clone(),
            Err(_) => {
                errors.add("type", "Could not find boards for this type");
                String::new()
            }
        },
    };
    if let (Some(metadata), Some(entry)) = (&metadata, image_map.entry(&image_type))
        && entry.origin() == EntryOrigin::BuiltIn
        && let Some(message) = metadata_contradiction(metadata, &image_type)
    {
        errors.add("file", message);
    }
    errors.into_result()?;
    let mut image = NewFirmwareImage {
        build_id: build,
        image_type,
        file_name: flashfleet_models::firmware_image::sanitize_file_name(&file_name),
        size: staged.size(),
        sha256: staged.sha256().to_owned(),
        storage_key: staged.storage_key().clone(),
        metadata: metadata
            .as_ref()
            .and_then(|metadata| serde_json::from_str(metadata.raw_json()).ok()),
        details: form.details.clone().unwrap_or_default(),
    };
    let known_type = image.image_type.clone();
    image.validate(|image_type| image_type == known_type)?;
    Ok(image)
}

/// When an image's metadata names the target it was built for, an OpenWrt image type starts
/// with it (`ath79-generic-...` for `ath79/generic`), followed by one of the names the
/// metadata gives the device: its `board` (`tplink_archer-c7-v2`) or a supported device, with
/// `,` as `_` (`tplink,archer-c7-v2`) or without its vendor (`gl-mt300n-v2`, the name before
/// OpenWrt 19.07). Anything else means the file is not an image of that type.
fn metadata_contradiction(metadata: &ImageMetadata, image_type: &str) -> Option<String> {
    let target = metadata.version.target.as_deref()?;
    let target_prefix = format!("{}-", target.replace('/', "-"));
    let Some(device_part) = image_type.strip_prefix(&target_prefix) else {
        return Some(format!(
            "The image is built for the target {target} (its metadata), not for the image type \"{image_type}\"."
        ));
    };
    let mut names: Vec<String> = metadata.version.board.iter().cloned().collect();
    for device in metadata.supported_devices.iter().flatten() {
        names.push(device.replace(',', "_"));
        if let Some((_, name)) = device.split_once(',') {
            names.push(name.to_owned());
        }
    }
    if names.is_empty()
        || names
            .iter()
            .any(|name| device_part.starts_with(&format!("{name}-")))
    {
        return None;
    }
    Some(format!(
        "The image is built for {} (its metadata), not for the image type \"{image_type}\".",
        names.join(", ")
    ))
}

async fn text_field(mut field: Field) -> Result<String, ApiError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.try_next().await.map_err(multipart_error)? {
        if bytes.len() + chunk.len() > MAX_TEXT_FIELD_BYTES {
            return Err(ApiError::bad_request(format!(
                "A form field is longer than {MAX_TEXT_FIELD_BYTES} bytes."
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes).map_err(|_| ApiError::bad_request("A form field is not UTF-8 text."))
}

async fn drain(mut field: Field) -> Result<(), ApiError> {
    while let Some(chunk) = field.next().await {
        let _: Bytes = chunk.map_err(multipart_error)?;
    }
    Ok(())
}

fn multipart_error(error: actix_multipart::MultipartError) -> ApiError {
    ApiError::bad_request(format!("Multipart form parse error - {error}"))
}

fn content_length(request: &HttpRequest) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn storage_error(context: &str, error: StorageError) -> ApiError {
    ApiError::internal(context.to_owned(), error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_naming_another_board_contradicts_the_type() {
        let metadata = ImageMetadata::from_json(
            br#"{"version": {"target": "ath79/generic", "board": "tplink_archer-c7-v2"}, "supported_devices": ["tplink,archer-c7-v2"]}"#,
        )
        .unwrap();
        assert_eq!(
            metadata_contradiction(
                &metadata,
                "ath79-generic-tplink_archer-c7-v2-squashfs-sysupgrade.bin"
            ),
            None
        );
        assert!(
            metadata_contradiction(
                &metadata,
                "ath79-generic-comfast_cf-e375ac-squashfs-sysupgrade.bin"
            )
            .is_some()
        );
        assert!(
            metadata_contradiction(
                &metadata,
                "ramips-mt76x8-tplink_archer-c7-v2-squashfs-sysupgrade.bin"
            )
            .is_some(),
            "another target"
        );
        let renamed = ImageMetadata::from_json(
            br#"{"version": {"target": "ramips/mt76x8", "board": "glinet_gl-mt300n-v2"}, "supported_devices": ["glinet,gl-mt300n-v2", "gl-mt300n-v2"]}"#,
        )
        .unwrap();
        assert_eq!(
            metadata_contradiction(
                &renamed,
                "ramips-mt76x8-gl-mt300n-v2-squashfs-sysupgrade.bin"
            ),
            None,
            "the name before OpenWrt 19.07"
        );
        let anonymous = ImageMetadata::from_json(br#"{"supported_devices": ["x"]}"#).unwrap();
        assert_eq!(metadata_contradiction(&anonymous, "anything.bin"), None);
    }
}
