//! Upstream's pagination (openwisp-utils' `OpenWispPagination`, DRF's page numbers): `?page=`
//! and `?page_size=` (default 10, at most 100), answered as `{count, next, previous, results}`
//! where `next` and `previous` are absolute URLs with the request's other parameters kept, as
//! DRF writes them (parameters sorted by name, no `page` on the first page).
//!
//! Beyond upstream, list responses also carry `X-Total-Count` and an RFC 8288 `Link` header
//! (`rel="next"`, `rel="prev"`), which generic HTTP clients follow.

use actix_web::http::header::{HeaderName, HeaderValue, LINK};
use actix_web::{HttpRequest, HttpResponse};
use flashfleet_models::{Page, PageRequest};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::state::ApiState;

/// One page of a list, as upstream returns it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Paginated<T> {
    /// How many items the whole list has.
    pub count: u64,
    /// The absolute URL of the next page, if any.
    pub next: Option<String>,
    /// The absolute URL of the previous page, if any.
    pub previous: Option<String>,
    /// The items of this page.
    pub results: Vec<T>,
}

/// The page a list request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pagination {
    /// The 1-based page number.
    pub page: u64,
    /// Items per page.
    pub page_size: u64,
}

impl Pagination {
    /// Reads `page` and `page_size` from the request's query, as DRF does: a `page_size` that
    /// is not a positive number gives the default size, one over the maximum gives the
    /// maximum; a `page` that is not a positive number is a 404 "Invalid page.".
    pub fn from_request(request: &HttpRequest, state: &ApiState) -> Result<Pagination, ApiError> {
        let config = state.config();
        let mut page = 1;
        let mut page_size = config.default_page_size.max(1);
        for (name, value) in form_urlencoded::parse(request.query_string().as_bytes()) {
            match name.as_ref() {
                "page" => {
                    page = value
                        .parse::<u64>()
                        .ok()
                        .filter(|page| *page > 0)
                        .ok_or_else(invalid_page)?;
                }
                "page_size" => {
                    if let Some(size) = value.parse::<u64>().ok().filter(|size| *size > 0) {
                        page_size = size.min(config.max_page_size.max(1));
                    }
                }
                _ => {}
            }
        }
        Ok(Pagination { page, page_size })
    }

    /// The slice of the list to read.
    pub fn request(&self) -> PageRequest {
        PageRequest::page(self.page, self.page_size)
    }

    /// This page of `items`, a whole list already in memory (a device's connections).
    pub fn page_of<T>(&self, items: Vec<T>) -> Page<T> {
        let slice = self.request();
        Page {
            count: u64::try_from(items.len()).unwrap_or(u64::MAX),
            items: items
                .into_iter()
                .skip(usize::try_from(slice.offset).unwrap_or(usize::MAX))
                .take(usize::try_from(slice.limit).unwrap_or(usize::MAX))
                .collect(),
        }
    }

    /// The response for `page` of the list: 404 "Invalid page." past the last page (except the
    /// first page of an empty list, which is an empty page).
    pub fn respond<T: Serialize>(
        &self,
        request: &HttpRequest,
        state: &ApiState,
        page: Page<T>,
    ) -> Result<HttpResponse, ApiError> {
        let pages = page.count.div_ceil(self.page_size).max(1);
        if self.page > pages {
            return Err(invalid_page());
        }
        let next = (self.page < pages).then(|| page_url(request, state, Some(self.page + 1)));
        let previous = (self.page > 1).then(|| {
            page_url(
                request,
                state,
                if self.page == 2 {
                    None
                } else {
                    Some(self.page - 1)
                },
            )
        });
        let mut links = Vec::new();
        if let Some(next) = &next {
            links.push(format!("<{next}>; rel=\"next\""));
        }
        if let Some(previous) = &previous {
            links.push(format!("<{previous}>; rel=\"prev\""));
        }
        let mut response = HttpResponse::Ok();
        response.insert_header((
            HeaderName::from_static("x-total-count"),
            HeaderValue::from(page.count),
        ));
        if !links.is_empty()
            && let Ok(value) = HeaderValue::from_str(&links.join(", "))
        {
            response.insert_header((LINK, value));
        }
        Ok(response.json(Paginated {
            count: page.count,
            next,
            previous,
            results: page.items,
        }))
    }
}

fn invalid_page() -> ApiError {
    ApiError::not_found("Invalid page.")
}

/// The absolute URL of the request's own path on another page (`None`: the first page, written
/// without `page`), its other parameters kept and sorted by name as DRF does.
fn page_url(request: &HttpRequest, state: &ApiState, page: Option<u64>) -> String {
    let mut pairs: Vec<(String, String)> =
        form_urlencoded::parse(request.query_string().as_bytes())
            .filter(|(name, _)| name != "page")
            .map(|(name, value)| (name.into_owned(), value.into_owned()))
            .collect();
    if let Some(page) = page {
        pairs.push(("page".into(), page.to_string()));
    }
    pairs.sort_by(|left, right| left.0.cmp(&right.0));
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    let url = absolute_url(request, state, request.path());
    if query.is_empty() {
        url
    } else {
        format!("{url}?{query}")
    }
}

/// The absolute URL of `path`: the configured base URL (upstream's
/// `OPENWISP_FIRMWARE_API_BASEURL`) when set, else the request's scheme and host.
pub fn absolute_url(request: &HttpRequest, state: &ApiState, path: &str) -> String {
    match &state.config().base_url {
        Some(base_url) => format!("{}{path}", base_url.trim_end_matches('/')),
        None => {
            let connection = request.connection_info();
            format!("{}://{}{path}", connection.scheme(), connection.host())
        }
    }
}
