//! Request bodies, read as upstream (Django REST framework) reads them: a JSON object or an
//! HTML form (`application/x-www-form-urlencoded`), with DRF's messages for each field that is
//! missing, blank, too long or of the wrong type, all reported at once.
//!
//! Handlers take an [`Input`], read each field with a typed accessor, and call
//! [`Input::finish`], which answers 400 with every field's messages when any was wrong. For a
//! partial update (`PATCH`), absent fields are not required: their accessors return `None` and
//! the handler keeps the stored value.

use std::str::FromStr;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use flashfleet_models::ValidationErrors;
use flashfleet_models::page::SortKey;
use futures_util::future::LocalBoxFuture;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::ApiError;

/// The largest JSON or form body read (images arrive as multipart, elsewhere).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// DRF's message for a missing field.
pub const REQUIRED: &str = "This field is required.";

/// The fields of a request body, and the errors found while reading them.
///
/// `Debug` shows the names of the fields, never their values: bodies carry passwords and keys.
#[derive(Default)]
pub struct Input {
    fields: Map<String, Value>,
    errors: ValidationErrors,
    partial: bool,
}

impl std::fmt::Debug for Input {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Input")
            .field("fields", &self.fields.keys().collect::<Vec<_>>())
            .field("errors", &self.errors)
            .field("partial", &self.partial)
            .finish()
    }
}

impl Input {
    /// The fields of `fields`; `partial` for a `PATCH`.
    pub fn new(fields: Map<String, Value>, partial: bool) -> Input {
        Input {
            fields,
            errors: ValidationErrors::new(),
            partial,
        }
    }

    /// The same input read as a partial update (absent fields are not required).
    pub fn partial(mut self) -> Input {
        self.partial = true;
        self
    }

    /// Whether this is a partial update.
    pub fn is_partial(&self) -> bool {
        self.partial
    }

    /// Whether the body has `name`.
    pub fn has(&self, name: &str) -> bool {
        self.fields.contains_key(name)
    }

    /// Whether an error was recorded on `name`.
    pub fn has_error(&self, name: &str) -> bool {
        !self.errors.messages(name).is_empty()
    }

    /// The raw value of `name`.
    pub fn raw(&self, name: &str) -> Option<&Value> {
        self.fields.get(name)
    }

    /// Records an error on `name` (for checks the accessors do not make).
    pub fn error(&mut self, name: &str, message: impl Into<String>) {
        self.errors.add(name, message);
    }

    /// A required text field: `None` when absent (an error unless partial), blank, too long or
    /// not text.
    pub fn required_string(&mut self, name: &str, max_length: usize) -> Option<String> {
        match self.fields.get(name) {
            None => {
                if !self.partial {
                    self.errors.add(name, REQUIRED);
                }
                None
            }
            Some(Value::Null) => {
                self.errors.add(name, "This field may not be null.");
                None
            }
            Some(_) => {
                let text = self.text(name, max_length)?;
                if text.trim().is_empty() {
                    self.errors.add(name, "This field may not be blank.");
                    return None;
                }
                Some(text)
            }
        }
    }

    /// An optional text field (blank allowed): `None` when absent, `Some("")` for null.
    pub fn optional_string(&mut self, name: &str, max_length: usize) -> Option<String> {
        match self.fields.get(name) {
            None => None,
            Some(Value::Null) => Some(String::new()),
            Some(_) => self.text(name, max_length),
        }
    }

    /// A text field that may be null: `None` when absent, `Some(None)` for null or blank.
    pub fn nullable_string(&mut self, name: &str, max_length: usize) -> Option<Option<String>> {
        match self.fields.get(name) {
            None => None,
            Some(Value::Null) => Some(None),
            Some(_) => self
                .text(name, max_length)
                .map(|text| (!text.trim().is_empty()).then_some(text)),
        }
    }

    /// A boolean field (`true`/`false`, and in forms `1`/`0`, `on`/`off`, `yes`/`no`): `None`
    /// when absent or invalid.
    pub fn boolean(&mut self, name: &str) -> Option<bool> {
        let value = self.fields.get(name)?;
        let parsed = match value {
            Value::Bool(flag) => Some(*flag),
            Value::Number(number) => match number.as_i64() {
                Some(1) => Some(true),
                Some(0) => Some(false),
                _ => None,
            },
            Value::String(text) => match text.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "on" | "yes" | "y" | "t" => Some(true),
                "false" | "0" | "off" | "no" | "n" | "f" | "" => Some(false),
                _ => None,
            },
            _ => None,
        };
        if parsed.is_none() {
            self.errors.add(name, "Must be a valid boolean.");
        }
        parsed
    }

    /// A required reference to another object by UUID, DRF's `PrimaryKeyRelatedField`: `None`
    /// when absent (an error unless partial) or malformed.
    pub fn required_id<T: From<Uuid>>(&mut self, name: &str) -> Option<T> {
        match self.nullable_id(name) {
            None => {
                if !self.partial {
                    self.errors.add(name, REQUIRED);
                }
                None
            }
            Some(None) => {
                if !self.errors.messages(name).is_empty() {
                    return None;
                }
                self.errors.add(name, "This field may not be null.");
                None
            }
            Some(Some(id)) => Some(id),
        }
    }

    /// A reference that may be null: `None` when absent, `Some(None)` for null or blank.
    pub fn nullable_id<T: From<Uuid>>(&mut self, name: &str) -> Option<Option<T>> {
        let value = self.fields.get(name)?;
        match value {
            Value::Null => Some(None),
            Value::String(text) if text.trim().is_empty() => Some(None),
            Value::String(text) => match Uuid::from_str(text.trim()) {
                Ok(uuid) => Some(Some(T::from(uuid))),
                Err(_) => {
                    self.errors.add(
                        name,
                        format!("Invalid pk \"{text}\" - object does not exist."),
                    );
                    Some(None)
                }
            },
            other => {
                self.errors.add(
                    name,
                    format!(
                        "Incorrect type. Expected pk value, received {}.",
                        json_type(other)
                    ),
                );
                Some(None)
            }
        }
    }

    /// A non-negative integer: `None` when absent or invalid.
    pub fn integer(&mut self, name: &str, maximum: u64) -> Option<u64> {
        let value = self.fields.get(name)?;
        let parsed = match value {
            Value::Number(number) => number.as_u64(),
            Value::String(text) => text.trim().parse::<u64>().ok(),
            _ => None,
        };
        match parsed {
            Some(number) if number <= maximum => Some(number),
            Some(_) => {
                self.errors.add(
                    name,
                    format!("Ensure this value is less than or equal to {maximum}."),
                );
                None
            }
            None => {
                self.errors.add(name, "A valid integer is required.");
                None
            }
        }
    }

    /// A JSON object field (upgrade options, `details`): `None` when absent or not an object.
    /// In forms the object may arrive as JSON text.
    pub fn object(&mut self, name: &str) -> Option<Map<String, Value>> {
        let value = self.fields.get(name)?;
        let parsed = match value {
            Value::Object(object) => Some(object.clone()),
            Value::Null => Some(Map::new()),
            Value::String(text) if text.trim().is_empty() => Some(Map::new()),
            Value::String(text) => match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(object)) => Some(object),
                _ => None,
            },
            _ => None,
        };
        if parsed.is_none() {
            self.errors.add(name, "Value must be valid JSON object.");
        }
        parsed
    }

    /// A list of UUIDs: `None` when absent or invalid.
    pub fn id_list<T: From<Uuid>>(&mut self, name: &str) -> Option<Vec<T>> {
        let value = self.fields.get(name)?;
        let items: Vec<Value> = match value {
            Value::Array(items) => items.clone(),
            Value::String(text) => text
                .split(',')
                .filter(|item| !item.trim().is_empty())
                .map(|item| Value::String(item.trim().to_owned()))
                .collect(),
            _ => {
                self.errors.add(
                    name,
                    format!(
                        "Expected a list of items but got type \"{}\".",
                        json_type(value)
                    ),
                );
                return None;
            }
        };
        let mut ids = Vec::with_capacity(items.len());
        for item in items {
            match item.as_str().map(|text| Uuid::from_str(text.trim())) {
                Some(Ok(uuid)) => ids.push(T::from(uuid)),
                _ => {
                    self.errors.add(
                        name,
                        format!("Invalid pk \"{item}\" - object does not exist."),
                    );
                    return None;
                }
            }
        }
        Some(ids)
    }

    /// The parameters of a request's query string, read like body fields.
    pub fn from_query(request: &HttpRequest) -> Input {
        let mut fields = Map::new();
        for (name, value) in form_urlencoded::parse(request.query_string().as_bytes()) {
            fields.insert(name.into_owned(), Value::String(value.into_owned()));
        }
        Input::new(fields, true)
    }

    /// The `ordering` parameter (`-created,version`): empty when absent, an error naming an
    /// unknown field.
    pub fn ordering<F: FromStr>(&mut self) -> Vec<SortKey<F>> {
        let Some(text) = self.optional_string("ordering", 1000) else {
            return Vec::new();
        };
        match SortKey::parse_list(&text) {
            Ok(keys) => keys,
            Err(errors) => {
                self.errors.merge(errors);
                Vec::new()
            }
        }
    }

    /// A text filter: `None` when absent or empty.
    pub fn filter_text(&mut self, name: &str) -> Option<String> {
        self.optional_string(name, 1000)
            .filter(|text| !text.is_empty())
    }

    /// A UUID filter: `None` when absent or empty; django-filter's message when malformed.
    pub fn filter_id<T: From<Uuid>>(&mut self, name: &str) -> Option<T> {
        let text = self.filter_text(name)?;
        match Uuid::from_str(text.trim()) {
            Ok(uuid) => Some(T::from(uuid)),
            Err(_) => {
                self.errors.add(
                    name,
                    "Select a valid choice. That choice is not one of the available choices.",
                );
                None
            }
        }
    }

    /// A filter parsed with `FromStr` (a status, a time): `None` when absent or empty.
    pub fn filter_parsed<T: FromStr>(&mut self, name: &str, message: &str) -> Option<T> {
        let text = self.filter_text(name)?;
        match text.trim().parse() {
            Ok(value) => Some(value),
            Err(_) => {
                self.errors.add(name, message);
                None
            }
        }
    }

    /// 400 with every message recorded, or `Ok`.
    pub fn finish(self) -> Result<(), ApiError> {
        self.errors.into_result().map_err(ApiError::Invalid)
    }

    /// The messages recorded so far, leaving the input to be read further.
    pub fn take_errors(&mut self) -> ValidationErrors {
        std::mem::take(&mut self.errors)
    }

    fn text(&mut self, name: &str, max_length: usize) -> Option<String> {
        let text = match self.fields.get(name)? {
            Value::String(text) => text.clone(),
            Value::Number(number) => number.to_string(),
            Value::Bool(flag) => flag.to_string(),
            _ => {
                self.errors.add(name, "Not a valid string.");
                return None;
            }
        };
        if text.chars().count() > max_length {
            self.errors.add(
                name,
                format!("Ensure this field has no more than {max_length} characters."),
            );
            return None;
        }
        Some(text)
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// Parses a body of media type `content_type` into its fields.
pub fn parse_body(content_type: &str, bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if bytes.is_empty() {
        return Ok(Map::new());
    }
    match media_type.as_str() {
        "application/json" | "" => match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(fields)) => Ok(fields),
            Ok(other) => Err(ApiError::invalid_field(
                "non_field_errors",
                format!(
                    "Invalid data. Expected a dictionary, but got {}.",
                    json_type(&other)
                ),
            )),
            Err(error) => Err(ApiError::bad_request(format!("JSON parse error - {error}"))),
        },
        "application/x-www-form-urlencoded" => {
            let mut fields = Map::new();
            for (name, value) in form_urlencoded::parse(bytes) {
                fields.insert(name.into_owned(), Value::String(value.into_owned()));
            }
            Ok(fields)
        }
        other => Err(ApiError::UnsupportedMediaType {
            media_type: other.to_owned(),
        }),
    }
}

impl FromRequest for Input {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("application/json")
            .to_owned();
        let partial = request.method() == actix_web::http::Method::PATCH;
        let body = web::Bytes::from_request(request, payload);
        Box::pin(async move {
            let bytes = body.await.map_err(|error| {
                if error.as_response_error().status_code() == 413 {
                    ApiError::bad_request(format!(
                        "The request body is larger than {MAX_BODY_BYTES} bytes."
                    ))
                } else {
                    ApiError::bad_request(format!("The request body could not be read: {error}"))
                }
            })?;
            Ok(Input::new(parse_body(&content_type, &bytes)?, partial))
        })
    }
}

#[cfg(test)]
mod tests {
    use flashfleet_models::CategoryId;
    use serde_json::json;

    use super::*;

    fn input(value: Value, partial: bool) -> Input {
        let Value::Object(fields) = value else {
            panic!("an object")
        };
        Input::new(fields, partial)
    }

    fn errors(input: Input) -> Value {
        match input.finish() {
            Err(ApiError::Invalid(errors)) => serde_json::to_value(errors).unwrap(),
            other => panic!("expected validation errors, got {other:?}"),
        }
    }

    #[test]
    fn missing_required_fields_get_drfs_message_all_at_once() {
        let mut body = input(json!({}), false);
        assert_eq!(body.required_string("version", 32), None);
        assert_eq!(body.required_id::<CategoryId>("category"), None);
        assert_eq!(
            errors(body),
            json!({"version": [REQUIRED], "category": [REQUIRED]})
        );
    }

    #[test]
    fn a_partial_update_does_not_require_absent_fields() {
        let mut body = input(json!({"name": "x"}), true);
        assert_eq!(body.required_string("version", 32), None);
        assert_eq!(body.required_string("name", 32).as_deref(), Some("x"));
        assert!(body.finish().is_ok());
    }

    #[test]
    fn blank_long_null_and_wrongly_typed_values_are_reported() {
        let mut body = input(
            json!({"a": " ", "b": "xxxx", "c": null, "d": [1], "e": 7, "f": "nope", "g": "maybe"}),
            false,
        );
        body.required_string("a", 10);
        body.required_string("b", 3);
        body.required_string("c", 10);
        body.required_string("d", 10);
        body.required_id::<CategoryId>("e");
        body.required_id::<CategoryId>("f");
        body.boolean("g");
        assert_eq!(
            errors(body),
            json!({
                "a": ["This field may not be blank."],
                "b": ["Ensure this field has no more than 3 characters."],
                "c": ["This field may not be null."],
                "d": ["Not a valid string."],
                "e": ["Incorrect type. Expected pk value, received int."],
                "f": ["Invalid pk \"nope\" - object does not exist."],
                "g": ["Must be a valid boolean."],
            })
        );
    }

    #[test]
    fn forms_and_json_give_the_same_fields() {
        let form = parse_body(
            "application/x-www-form-urlencoded; charset=utf-8",
            b"username=admin&password=p%40ss",
        )
        .unwrap();
        assert_eq!(form["password"], "p@ss");
        let json = parse_body("application/json", br#"{"username": "admin"}"#).unwrap();
        assert_eq!(json["username"], "admin");
        assert!(matches!(
            parse_body("application/json", b"{oops"),
            Err(ApiError::BadRequest { .. })
        ));
        assert!(matches!(
            parse_body("application/json", b"[1]"),
            Err(ApiError::Invalid(_))
        ));
        assert!(matches!(
            parse_body("text/plain", b"x"),
            Err(ApiError::UnsupportedMediaType { .. })
        ));
        assert!(parse_body("application/json", b"").unwrap().is_empty());
    }

    #[test]
    fn debug_output_names_the_fields_without_their_values() {
        let body = input(json!({"username": "root", "password": "hunter2"}), false);
        let debug = format!("{body:?}");
        assert!(debug.contains("password"), "{debug}");
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn booleans_objects_and_lists_are_read_from_forms_too() {
        let mut body = input(
            json!({"all": "true", "off": "0", "options": "{\"c\": true}", "ids": "00000000-0000-0000-0000-000000000001"}),
            false,
        );
        assert_eq!(body.boolean("all"), Some(true));
        assert_eq!(body.boolean("off"), Some(false));
        assert_eq!(body.object("options").unwrap()["c"], true);
        assert_eq!(body.id_list::<CategoryId>("ids").unwrap().len(), 1);
        assert!(body.finish().is_ok());
    }
}
