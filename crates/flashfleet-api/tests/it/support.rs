//! The API over a fresh database, organizations with their users and tokens, and a client that
//! sends requests through the real actix-web app.

use std::sync::Arc;

use actix_web::http::{Method, StatusCode, header};
use actix_web::test::{self, TestRequest};
use actix_web::{App, web};
use flashfleet_api::{ApiConfig, ApiState};
use flashfleet_db::Db;
use flashfleet_db::testing::TestDb;
use flashfleet_engine::{Engine, EngineConfig, EventBus};
use flashfleet_models::repository::{DirectoryRepository, FirmwareRepository};
use flashfleet_models::{
    Category, NewApiToken, NewCategory, NewOrganization, NewUser, Organization, Role, User,
};
use flashfleet_storage::{FirmwareStore, StorageConfig};
use flashfleet_upgrader::UpgraderRegistry;
use serde_json::Value;

/// A response, read.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: header::HeaderMap,
    pub(crate) body: Value,
    pub(crate) bytes: Vec<u8>,
}

impl Reply {
    /// The body's `key`.
    pub(crate) fn get(&self, key: &str) -> &Value {
        &self.body[key]
    }

    /// The keys of the body (an object), in the order the server wrote them.
    pub(crate) fn keys(&self) -> Vec<&str> {
        self.body
            .as_object()
            .map(|object| object.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }
}

/// An organization with an owner, a manager and a member, each with a token.
pub(crate) struct Tenant {
    pub(crate) organization: Organization,
    pub(crate) owner: String,
    pub(crate) manager: String,
    pub(crate) member: String,
}

/// The API on one test database.
pub(crate) struct TestApi {
    pub(crate) test_db: TestDb,
    pub(crate) state: ApiState,
    pub(crate) superuser: String,
}

impl TestApi {
    /// The API on `test_db` with default settings (no rate limit).
    pub(crate) async fn new(test_db: TestDb) -> TestApi {
        TestApi::with_config(
            test_db,
            ApiConfig {
                throttle: None,
                ..ApiConfig::default()
            },
        )
        .await
    }

    /// The API on `test_db` with `config`.
    pub(crate) async fn with_config(test_db: TestDb, config: ApiConfig) -> TestApi {
        let db = test_db.db().clone();
        let store = FirmwareStore::from_config(&StorageConfig::Memory, config.max_file_size)
            .expect("an in-memory store");
        let engine = Engine::new(
            Arc::new(db.clone()),
            UpgraderRegistry::default(),
            Arc::new(store.clone()),
            EventBus::default(),
            EngineConfig::default(),
        );
        let state = ApiState::new(Arc::new(db), engine, store, config);
        let superuser = user_with_token(test_db.db(), "root", true).await.1;
        TestApi {
            test_db,
            state,
            superuser,
        }
    }

    /// The database.
    pub(crate) fn db(&self) -> &Db {
        self.test_db.db()
    }

    /// The backend's name, for assertion messages.
    pub(crate) fn backend(&self) -> String {
        format!("{:?}", self.test_db.backend())
    }

    /// A new organization `slug` with its owner, manager and member.
    pub(crate) async fn tenant(&self, slug: &str) -> Tenant {
        let organization = self
            .db()
            .insert_organization(
                &NewOrganization::new(format!("Organization {slug}"), slug).into_organization(),
            )
            .await
            .expect("test setup");
        let mut tokens = Vec::new();
        for role in [Role::Owner, Role::Manager, Role::Member] {
            let (user, token) =
                user_with_token(self.db(), &format!("{slug}-{}", role.as_str()), false).await;
            self.db()
                .set_membership(user.id, organization.id, role)
                .await
                .expect("test setup");
            tokens.push(token);
        }
        Tenant {
            organization,
            owner: tokens[0].clone(),
            manager: tokens[1].clone(),
            member: tokens[2].clone(),
        }
    }

    /// A category of `tenant`'s organization (`None`: shared).
    pub(crate) async fn category(
        &self,
        organization: Option<&Organization>,
        name: &str,
    ) -> Category {
        self.db()
            .insert_category(
                &NewCategory::new(organization.map(|organization| organization.id), name)
                    .into_category(),
            )
            .await
            .expect("test setup")
    }

    /// Sends `method path` with `token` and a JSON `body`.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut request = TestRequest::default().method(method).uri(path);
        if let Some(token) = token {
            request = request.insert_header((header::AUTHORIZATION, format!("Bearer {token}")));
        }
        if let Some(body) = body {
            request = request.set_json(body);
        }
        self.send(request).await
    }

    /// `GET path` with `token`.
    pub(crate) async fn get(&self, path: &str, token: &str) -> Reply {
        self.call(Method::GET, path, Some(token), None).await
    }

    /// `POST path` with `token` and a JSON body.
    pub(crate) async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    /// `PATCH path` with `token` and a JSON body.
    pub(crate) async fn patch(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::PATCH, path, Some(token), Some(body))
            .await
    }

    /// `PUT path` with `token` and a JSON body.
    pub(crate) async fn put(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::PUT, path, Some(token), Some(body)).await
    }

    /// `DELETE path` with `token`.
    pub(crate) async fn delete(&self, path: &str, token: &str) -> Reply {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    /// A build of a category of `organization` whose OS identifier is `os`, with one image of
    /// type `image_type`: what the device hook looks for.
    pub(crate) async fn build_with_image(
        &self,
        organization: &Organization,
        os: &str,
        image_type: &str,
    ) -> flashfleet_models::FirmwareImage {
        let category = self.category(Some(organization), "Routers").await;
        let mut build = flashfleet_models::NewBuild::new(category.id, "1.0");
        build.os = Some(os.to_owned());
        let build = self
            .db()
            .insert_build(&build.into_build())
            .await
            .expect("test setup");
        stored_image(self.db(), build.id, image_type).await
    }

    /// Sends a prepared request through the app.
    pub(crate) async fn send(&self, request: TestRequest) -> Reply {
        let app = test::init_service(
            App::new()
                .app_data(web::Data::new(self.state.clone()))
                .configure(flashfleet_api::configure),
        )
        .await;
        let response = test::call_service(&app, request.to_request()).await;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = test::read_body(response).await.to_vec();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            bytes,
        }
    }

    /// Uploads `bytes` as `file_name` to `build` (multipart), with an optional `type`.
    pub(crate) async fn upload(
        &self,
        build: &str,
        token: &str,
        file_name: &str,
        bytes: &[u8],
        image_type: Option<&str>,
    ) -> Reply {
        let (content_type, body) = multipart(file_name, bytes, image_type);
        let request = TestRequest::post()
            .uri(&format!("/api/v1/firmware-upgrader/build/{build}/image/"))
            .insert_header((header::AUTHORIZATION, format!("Bearer {token}")))
            .insert_header((header::CONTENT_TYPE, content_type))
            .set_payload(body);
        self.send(request).await
    }
}

/// A multipart form with a `file` part and an optional `type` part.
pub(crate) fn multipart(
    file_name: &str,
    bytes: &[u8],
    image_type: Option<&str>,
) -> (String, Vec<u8>) {
    let boundary = "flashfleet-test-boundary-7d2f";
    let mut body = Vec::new();
    if let Some(image_type) = image_type {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\n{image_type}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// A user with a token.
pub(crate) async fn user_with_token(db: &Db, username: &str, is_superuser: bool) -> (User, String) {
    let mut user = NewUser::new(username);
    user.is_superuser = is_superuser;
    let user = db.insert_user(&user.into_user()).await.expect("test setup");
    let token = NewApiToken::generate(user.id, "test").expect("test setup");
    db.insert_token(&token.token).await.expect("test setup");
    (user, token.secret.expose().to_owned())
}

/// A user who logs in with `password` (argon2 is slow in debug builds: use sparingly).
pub(crate) async fn user_with_password(db: &Db, username: &str, password: &str) -> User {
    let mut user = NewUser::new(username);
    user.password_hash = Some(flashfleet_models::PasswordHash::hash(password).expect("test setup"));
    db.insert_user(&user.into_user()).await.expect("test setup")
}

/// The user named `username`.
pub(crate) async fn user_named(db: &Db, username: &str) -> User {
    db.user_by_username(username)
        .await
        .expect("test setup")
        .expect("the user exists")
}

/// Every test database available here, each with its API.
pub(crate) async fn apis() -> Vec<TestApi> {
    let mut apis = Vec::new();
    for test_db in TestDb::all().await {
        apis.push(TestApi::new(test_db).await);
    }
    apis
}

/// A device of `organization` with model `model`, SSH credentials and a connection.
pub(crate) async fn connected_device(
    db: &Db,
    organization: &Organization,
    name: &str,
    model: &str,
) -> flashfleet_models::Device {
    use flashfleet_models::credentials::{CredentialsSecret, SecretText};
    use flashfleet_models::repository::DeviceRepository;
    use flashfleet_models::{MacAddress, NewCredentials, NewDevice, NewDeviceConnection};

    let mac = {
        let digest = name.bytes().fold(0_u32, |hash, byte| {
            hash.wrapping_mul(31).wrapping_add(u32::from(byte))
        });
        let bytes = digest.to_be_bytes();
        MacAddress::from_bytes([0x02, 0x00, bytes[0], bytes[1], bytes[2], bytes[3]])
    };
    let mut device = NewDevice::new(organization.id, name, mac);
    device.model = model.to_owned();
    device.management_ip = Some("127.0.0.1".into());
    let device = db
        .insert_device(&device.into_device())
        .await
        .expect("test setup");
    let credentials = db
        .insert_credentials(
            &NewCredentials::new(
                Some(organization.id),
                format!("{name} credentials"),
                "root",
                CredentialsSecret::Password(SecretText::new("s3cret-password")),
            )
            .into_credentials(),
        )
        .await
        .expect("test setup");
    db.insert_connection(
        &NewDeviceConnection::new(device.id, credentials.id).into_connection(&credentials),
    )
    .await
    .expect("test setup");
    device
}

/// An image of `build` of type `image_type`, stored directly (no file).
pub(crate) async fn stored_image(
    db: &Db,
    build: flashfleet_models::BuildId,
    image_type: &str,
) -> flashfleet_models::FirmwareImage {
    use flashfleet_models::{NewFirmwareImage, StorageKey};

    let mut image = NewFirmwareImage {
        build_id: build,
        image_type: image_type.to_owned(),
        file_name: "image.bin".into(),
        size: 4,
        sha256: "a".repeat(64),
        storage_key: StorageKey::for_image(build, "image.bin"),
        metadata: None,
        details: Default::default(),
    };
    image.validate(|_| true).expect("test setup");
    db.insert_image(&image.into_image())
        .await
        .expect("test setup")
}
