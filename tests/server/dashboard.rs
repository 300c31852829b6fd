//! The web dashboard in headless Chromium: an operator signs in, uploads an image, runs the
//! mass-upgrade flow (options, dry run, confirmation) against a simulated fleet, and watches
//! the batch page's counters reach the end live, without reloading. Screenshots of every page
//! go to `target/dashboard-screenshots/`.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use crate::client::{IMAGE_FILE, MODEL, NEW_VERSION, new_image};
use crate::support::{fleet, import_fleet, sites};
use crate::webdriver::chromedriver;

/// How many simulated devices the mass upgrade upgrades.
const DEVICES: usize = 6;
/// How long a page may take to load after a click.
const PAGE_LOAD: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_runs_a_mass_upgrade_from_the_dashboard_and_watches_it_live() {
    let Some(driver) = chromedriver().await else {
        return;
    };
    let screenshots = screenshot_directory();
    for (index, (site, directory, _test_db)) in sites().await.into_iter().enumerate() {
        let backend = if site.database_url.is_some() {
            "postgres"
        } else {
            "sqlite"
        };
        let shot = |name: &str| screenshots.join(format!("{backend}-{name}.png"));
        // The administrator the browser signs in as.
        site.admin_token();
        let fleet = fleet(DEVICES, 100 + index as u8, Duration::from_millis(800)).await;
        import_fleet(&site, &fleet);
        let server = site.serve("dashboard", &[]).await;
        let image_path = directory.path().join(IMAGE_FILE);
        std::fs::write(&image_path, new_image()).unwrap();

        let profile = tempfile::tempdir().unwrap();
        let browser = driver.session(profile.path()).await;
        let base = &server.base;

        // Signed-out visitors go to the sign-in page; a wrong password is refused.
        browser.goto(&format!("{base}/builds/")).await;
        assert!(
            browser.url().await.contains("/login?next=/builds/"),
            "{}",
            browser.url().await
        );
        browser.type_into("#username", "admin").await;
        browser.type_into("#password", "not the password").await;
        browser.click("#sign-in-button").await;
        browser
            .wait_for(
                "return document.querySelector('.notice-error') !== null;",
                PAGE_LOAD,
            )
            .await;
        assert!(
            browser
                .text(".notice-error")
                .await
                .contains("Unable to log in")
        );
        browser.screenshot(&shot("01-sign-in")).await;
        browser.type_into("#username", "").await;
        browser
            .run("document.getElementById('username').value = '';")
            .await;
        browser.type_into("#username", "admin").await;
        browser
            .type_into("#password", "correct horse battery staple")
            .await;
        browser.click("#sign-in-button").await;
        browser
            .wait_for("return location.pathname === '/builds/';", PAGE_LOAD)
            .await;
        assert_eq!(browser.url().await, format!("{base}/builds/"));
        browser.screenshot(&shot("02-builds-empty")).await;

        // A shared category, then a build of it, through the dashboard's forms.
        browser.goto(&format!("{base}/categories/")).await;
        browser.type_into("#category-name", "Archer C7").await;
        browser
            .run("document.getElementById('category-organization').value = '';")
            .await;
        browser.click("#category-create").await;
        browser
            .wait_for(
                "return location.search.includes('created=') && document.readyState === 'complete';",
                PAGE_LOAD,
            )
            .await;
        let created = browser.text("tr.highlighted").await;
        assert!(created.contains("Archer C7"), "{created}");
        assert!(created.contains("shared"), "{created}");
        browser.screenshot(&shot("03-category-created")).await;
        browser.goto(&format!("{base}/builds/")).await;
        // A refused form comes back with the API's message and what was typed.
        browser
            .type_into("#build-os", "OpenWrt without a version")
            .await;
        browser
            .run("document.getElementById('build-version').removeAttribute('required');")
            .await;
        browser.click("#build-create").await;
        browser
            .wait_for(
                "return document.querySelector('#build-form .notice-error') !== null;",
                PAGE_LOAD,
            )
            .await;
        let refusal = browser.text("#build-form .notice-error").await;
        assert!(refusal.contains("version"), "{refusal}");
        assert_eq!(
            browser
                .run("return document.getElementById('build-os').value;")
                .await,
            "OpenWrt without a version"
        );
        browser
            .run("document.getElementById('build-os').value = '';")
            .await;
        browser.type_into("#build-version", NEW_VERSION).await;
        browser
            .type_into(
                "#build-os",
                &format!("OpenWrt {NEW_VERSION} r28427-6df0e3d02a"),
            )
            .await;
        browser.click("#build-create").await;

        // The new build's page: upload the image, see its metadata and detected boards.
        browser
            .wait_for(
                "return document.getElementById('upload-form') !== null;",
                PAGE_LOAD,
            )
            .await;
        let build_url = browser.url().await;
        let build = build_url
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap()
            .to_owned();
        assert!(uuid::Uuid::parse_str(&build).is_ok(), "{build_url}");
        browser
            .type_into("#image-file", image_path.to_str().unwrap())
            .await;
        browser.click("#upload-button").await;
        browser.wait_for("return location.search.includes('uploaded=') && document.readyState === 'complete';", PAGE_LOAD).await;
        assert!(
            browser.url().await.contains("uploaded="),
            "{}",
            browser.url().await
        );
        let card = browser.text("article.image.highlighted").await;
        assert!(card.contains(MODEL), "the detected boards: {card}");
        assert!(
            card.contains(NEW_VERSION),
            "the release of the metadata: {card}"
        );
        browser.screenshot(&shot("04-build-uploaded")).await;

        // The mass-upgrade flow: options, dry run, confirmation.
        browser.click("#plan-mass-upgrade").await;
        browser
            .wait_for(
                "return document.getElementById('options-form') !== null;",
                PAGE_LOAD,
            )
            .await;
        browser.click("#upgrade-all").await;
        browser.click("#dry-run-button").await;
        browser
            .wait_for(
                "return document.getElementById('plan-total') !== null;",
                PAGE_LOAD,
            )
            .await;
        assert_eq!(browser.text("#plan-total").await, DEVICES.to_string());
        let plan = browser.text("#plan-table").await;
        assert_eq!(plan.matches("✓ compatible").count(), DEVICES, "{plan}");
        browser.screenshot(&shot("05-dry-run")).await;
        browser.click("#confirm-button").await;
        browser
            .wait_for(
                "return location.pathname.startsWith('/batches/') && document.readyState === 'complete';",
                Duration::from_secs(20),
            )
            .await;
        let batch_url = browser.url().await;
        assert!(batch_url.contains("/batches/"), "{batch_url}");

        // The batch page follows the mass upgrade live to its end, without reloading.
        let load_id = browser
            .run("return document.documentElement.dataset.loadId;")
            .await;
        let success_at_load: usize = browser.text("#counter-success").await.parse().unwrap();
        assert!(success_at_load < DEVICES, "the page loaded before the end");
        browser.screenshot(&shot("06-batch-started")).await;
        browser
            .wait_for(
                &format!(
                    "return document.getElementById('counter-success').textContent === '{DEVICES}' \
                     && document.getElementById('batch-status').dataset.status === 'success' \
                     && document.getElementById('live').textContent === 'finished';"
                ),
                Duration::from_secs(150),
            )
            .await;
        assert_eq!(
            browser
                .run("return document.documentElement.dataset.loadId;")
                .await,
            load_id,
            "the page was not reloaded"
        );
        assert_eq!(browser.url().await, batch_url);
        assert_eq!(
            browser.text("#progress-report").await,
            format!("{DEVICES} out of {DEVICES}")
        );
        let rows = browser.text("#operations").await;
        assert_eq!(rows.matches("success").count(), DEVICES, "{rows}");
        browser.screenshot(&shot("07-batch-finished")).await;

        // The devices, one device's history, the categories, the list of mass upgrades.
        browser.goto(&format!("{base}/devices/")).await;
        browser.screenshot(&shot("08-devices")).await;
        browser.click("td a[href^='/devices/']").await;
        browser
            .wait_for(
                "return document.querySelector('.history') !== null;",
                PAGE_LOAD,
            )
            .await;
        let history = browser.text(".history").await;
        assert!(history.contains("success"), "{history}");
        browser
            .run("document.querySelector('.history details').open = true;")
            .await;
        browser.screenshot(&shot("09-device")).await;
        // A single upgrade to the image the device already runs queues nothing.
        browser.click("#assign-form button[type=submit]").await;
        browser
            .wait_for(
                "return document.querySelector('.notice-success') !== null;",
                PAGE_LOAD,
            )
            .await;
        let notice = browser.text(".notice-success").await;
        assert!(notice.contains("nothing was queued"), "{notice}");
        browser.goto(&format!("{base}/builds/")).await;
        browser.screenshot(&shot("10-builds")).await;
        browser.goto(&format!("{base}/batches/")).await;
        browser.screenshot(&shot("11-batches")).await;

        // Sign out: the pages ask for a sign-in again.
        browser.click(".signout button").await;
        browser
            .wait_for("return location.pathname === '/login';", PAGE_LOAD)
            .await;
        browser.goto(&format!("{base}/devices/")).await;
        assert!(
            browser.url().await.contains("/login"),
            "{}",
            browser.url().await
        );
        browser.quit().await;

        for device in fleet.devices() {
            assert_eq!(device.flash_count(), 1);
            assert_eq!(device.release().version, NEW_VERSION);
        }
        fleet.shutdown().await;
        drop(server);
    }
}

/// A form without the session's CSRF token is refused, and so is a session cookie the server
/// did not make, or one of a session signed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_forms_need_the_session_and_its_csrf_token() {
    for (site, _directory, _test_db) in sites().await {
        site.admin_token();
        let server = site.serve("dashboard-csrf", &[]).await;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let page = client
            .get(format!("{}/login", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        let cookie = page.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(cookie.contains("HttpOnly"), "{cookie}");
        assert!(cookie.contains("SameSite=Strict"), "{cookie}");
        let anonymous = cookie.split(';').next().unwrap().to_owned();
        let html = page.text().await.unwrap();
        assert!(!html.contains("correct horse"));
        let csrf = html
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap()
            .to_owned();
        let credentials = [
            ("username", "admin"),
            ("password", "correct horse battery staple"),
            ("next", "/devices/"),
        ];
        let refused = client
            .post(format!("{}/login", server.base))
            .header("cookie", &anonymous)
            .form(&[&credentials[..], &[("csrf", "forged")]].concat())
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 403);
        let signed_in = client
            .post(format!("{}/login", server.base))
            .header("cookie", &anonymous)
            .form(&[&credentials[..], &[("csrf", csrf.as_str())]].concat())
            .send()
            .await
            .unwrap();
        assert_eq!(signed_in.status(), 303);
        assert_eq!(signed_in.headers()["location"], "/devices/");
        let session = signed_in.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        assert_ne!(session, anonymous);
        let devices = client
            .get(format!("{}/devices/", server.base))
            .header("cookie", &session)
            .send()
            .await
            .unwrap();
        assert_eq!(devices.status(), 200);
        // Signing in made a new token: the old one no longer signs out.
        let sign_out = client
            .post(format!("{}/logout", server.base))
            .header("cookie", &session)
            .form(&[("csrf", csrf.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(sign_out.status(), 403);
        // A forged cookie is no session.
        let forged = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .get(format!("{}/devices/", server.base))
            .header("cookie", "flashfleet_session=eyJ1c2VyIjpudWxsfQ")
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), 303);
        assert_eq!(forged.headers()["location"], "/login?next=/devices/");
        // Signing out ends the session on the server: a copy of its cookie opens nothing.
        let page = client
            .get(format!("{}/devices/", server.base))
            .header("cookie", &session)
            .send()
            .await
            .unwrap();
        let session_csrf = csrf_of(&page.text().await.unwrap());
        let signed_out = client
            .post(format!("{}/logout", server.base))
            .header("cookie", &session)
            .form(&[("csrf", session_csrf.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(signed_out.status(), 303);
        assert_eq!(signed_out.headers()["location"], "/login");
        let copied = client
            .get(format!("{}/devices/", server.base))
            .header("cookie", &session)
            .send()
            .await
            .unwrap();
        assert_eq!(copied.status(), 303);
        assert_eq!(copied.headers()["location"], "/login?next=/devices/");
    }
}

/// `target/dashboard-screenshots/`.
fn screenshot_directory() -> PathBuf {
    let target = std::env::current_exe()
        .unwrap()
        .ancestors()
        .nth(3)
        .unwrap()
        .to_path_buf();
    let directory = target.join("dashboard-screenshots");
    std::fs::create_dir_all(&directory).unwrap();
    directory
}

/// The dashboard applies the API's tenancy and roles: another organization's device is a 404,
/// a member sees but does not change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_pages_follow_the_apis_tenancy_and_roles() {
    for (site, _directory, _test_db) in sites().await {
        let token = site.admin_token();
        let server = site.serve("dashboard-tenancy", &[]).await;
        let api = server.api(&token);
        let mut organizations = Vec::new();
        for slug in ["acme", "other"] {
            let (status, organization) = api
                .post(
                    "/api/v1/users/organization/",
                    json!({"name": slug, "slug": slug}),
                )
                .await;
            assert_eq!(status, 201, "{organization}");
            organizations.push(organization["id"].as_str().unwrap().to_owned());
        }
        let (status, device) = api
            .post(
                "/api/v1/controller/device/",
                json!({"organization": organizations[0], "name": "acme-gateway",
                       "mac_address": "02:00:5e:03:00:01"}),
            )
            .await;
        assert_eq!(status, 201, "{device}");
        let device = device["id"].as_str().unwrap().to_owned();
        for (username, organization, is_admin) in [
            ("eve", &organizations[1], true),
            ("mo", &organizations[0], false),
        ] {
            let (status, user) = api
                .post(
                    "/api/v1/users/user/",
                    json!({"username": username, "password": "a long enough passphrase",
                           "organization_users": [{"organization": organization, "is_admin": is_admin}]}),
                )
                .await;
            assert_eq!(status, 201, "{user}");
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let device_page = format!("{}/devices/{device}/", server.base);
        let unknown_image = uuid::Uuid::new_v4().to_string();

        // Eve's organization has more devices than a page of the list shows.
        for index in 0..101 {
            let (status, device) = api
                .post(
                    "/api/v1/controller/device/",
                    json!({"organization": organizations[1], "name": format!("other-{index:03}"),
                           "mac_address": format!("02:00:5e:04:00:{index:02x}")}),
                )
                .await;
            assert_eq!(status, 201, "{device}");
        }
        let (eve, eve_csrf) = sign_in(&client, &server.base, "eve").await;
        let list_page = |page: u64| {
            client
                .get(format!("{}/devices/?page={page}", server.base))
                .header("cookie", eve.clone())
                .send()
        };
        let first = list_page(1).await.unwrap();
        assert_eq!(first.status(), 200);
        let html = first.text().await.unwrap();
        assert!(!html.contains("acme-gateway"));
        assert!(html.contains("1–100 of 101"), "{html}");
        assert!(html.contains("other-100") && !html.contains("other-000"));
        assert!(html.contains("href=\"/devices/?page=2\""));
        let second = list_page(2).await.unwrap().text().await.unwrap();
        assert!(second.contains("101–101 of 101"), "{second}");
        assert!(second.contains("other-000") && !second.contains("other-001"));
        let beyond = list_page(9).await.unwrap();
        assert_eq!(beyond.status(), 303);
        assert_eq!(beyond.headers()["location"], "/devices/?page=2");
        let page = client
            .get(&device_page)
            .header("cookie", &eve)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 404);
        let assign = client
            .post(format!("{device_page}firmware"))
            .header("cookie", &eve)
            .form(&[
                ("csrf", eve_csrf.as_str()),
                ("image", unknown_image.as_str()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(assign.status(), 404);

        // Eve manages "other": she creates categories there, never in "acme".
        let create_category = |session: &str, csrf: &str, name: &str, organization: &str| {
            client
                .post(format!("{}/categories/", server.base))
                .header("cookie", session.to_owned())
                .form(&[
                    ("csrf", csrf),
                    ("name", name),
                    ("organization", organization),
                ])
                .send()
        };
        let created = create_category(&eve, &eve_csrf, "eve's", &organizations[1])
            .await
            .unwrap();
        assert_eq!(created.status(), 303);
        let refused = create_category(&eve, &eve_csrf, "not eve's", &organizations[0])
            .await
            .unwrap();
        assert!(refused.status().is_client_error(), "{}", refused.status());
        let refused = create_category(&eve, &eve_csrf, "shared by eve", "")
            .await
            .unwrap();
        assert!(refused.status().is_client_error(), "{}", refused.status());
        let forged = create_category(&eve, "forged", "no token", &organizations[1])
            .await
            .unwrap();
        assert_eq!(forged.status(), 403);
        let (_, categories) = api.get("/api/v1/firmware-upgrader/category/").await;
        let names: Vec<&str> = categories["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|category| category["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["eve's"]);

        let (mo, mo_csrf) = sign_in(&client, &server.base, "mo").await;
        // A member sees no create form, and a forged one is refused.
        for page in ["categories", "builds"] {
            let html = client
                .get(format!("{}/{page}/", server.base))
                .header("cookie", &mo)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            assert!(
                !html.contains("<form class=\"card form\""),
                "{page}: {html}"
            );
        }
        let refused = create_category(&mo, &mo_csrf, "mo's", &organizations[0])
            .await
            .unwrap();
        assert!(refused.status().is_client_error(), "{}", refused.status());

        let page = client
            .get(&device_page)
            .header("cookie", &mo)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        let html = page.text().await.unwrap();
        assert!(html.contains("acme-gateway"));
        assert!(
            !html.contains("assign-form"),
            "a member gets no upgrade form"
        );
        let assign = client
            .post(format!("{device_page}firmware"))
            .header("cookie", &mo)
            .form(&[
                ("csrf", mo_csrf.as_str()),
                ("image", unknown_image.as_str()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(assign.status(), 403);
    }
}

/// Signs `username` in over plain HTTP: the session cookie and its CSRF token.
async fn sign_in(client: &reqwest::Client, base: &str, username: &str) -> (String, String) {
    let form_page = client.get(format!("{base}/login")).send().await.unwrap();
    let anonymous = cookie_of(&form_page);
    let csrf = csrf_of(&form_page.text().await.unwrap());
    let signed_in = client
        .post(format!("{base}/login"))
        .header("cookie", &anonymous)
        .form(&[
            ("csrf", csrf.as_str()),
            ("username", username),
            ("password", "a long enough passphrase"),
            ("next", "/devices/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303, "{username} signs in");
    let session = cookie_of(&signed_in);
    let page = client
        .get(format!("{base}/devices/"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    let csrf = csrf_of(&page.text().await.unwrap());
    (session, csrf)
}

fn cookie_of(response: &reqwest::Response) -> String {
    response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

fn csrf_of(html: &str) -> String {
    html.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a form with a CSRF token")
        .to_owned()
}
