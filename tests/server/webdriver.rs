//! A small W3C WebDriver client over reqwest, and chromedriver with Debian's headless Chromium.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::client::free_port;

/// The key of an element reference in WebDriver answers.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver on a free loopback port, or `None` (with a notice) when it is not installed and
/// browser tests are not required (`FLASHFLEET_REQUIRE_BROWSER_TESTS=1` makes its absence fail).
pub(crate) async fn chromedriver() -> Option<ChromeDriver> {
    let required =
        std::env::var("FLASHFLEET_REQUIRE_BROWSER_TESTS").is_ok_and(|value| value == "1");
    let binary = std::env::var_os("FLASHFLEET_CHROMEDRIVER")
        .map(PathBuf::from)
        .or_else(|| find_in_path("chromedriver"));
    let browser = std::env::var_os("FLASHFLEET_CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| find_in_path("chromium"));
    let (Some(binary), Some(browser)) = (binary, browser) else {
        assert!(
            !required,
            "FLASHFLEET_REQUIRE_BROWSER_TESTS=1 but chromedriver or chromium is not installed (apt-get install chromium chromium-driver)"
        );
        eprintln!(
            "skipped: chromedriver and chromium are not installed (apt-get install chromium chromium-driver)"
        );
        return None;
    };
    let port = free_port();
    let child = Command::new(&binary)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = ChromeDriver {
        child,
        base: format!("http://127.0.0.1:{port}"),
        browser,
        client: reqwest::Client::new(),
    };
    for _ in 0..200 {
        if let Ok(response) = driver
            .client
            .get(format!("{}/status", driver.base))
            .send()
            .await
            && response.status().is_success()
        {
            return Some(driver);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("chromedriver did not answer on port {port}");
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|directory| directory.join(name))
        .find(|path| path.is_file())
}

/// A running chromedriver.
pub(crate) struct ChromeDriver {
    child: Child,
    base: String,
    browser: PathBuf,
    client: reqwest::Client,
}

impl ChromeDriver {
    /// A new headless browser session with an empty profile in `profile`.
    pub(crate) async fn session(&self, profile: &Path) -> Browser {
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": self.browser,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,1100",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let answer = post(
            &self.client,
            &format!("{}/session", self.base),
            capabilities,
        )
        .await;
        let id = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("a WebDriver session: {answer}"))
            .to_owned();
        Browser {
            client: self.client.clone(),
            session: format!("{}/session/{id}", self.base),
        }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser session.
pub(crate) struct Browser {
    client: reqwest::Client,
    session: String,
}

/// An element of the current page.
pub(crate) struct Element(String);

impl Browser {
    pub(crate) async fn goto(&self, url: &str) {
        self.command("url", json!({"url": url})).await;
    }

    pub(crate) async fn url(&self) -> String {
        self.get("url")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub(crate) async fn find(&self, css: &str) -> Element {
        let value = self
            .command("element", json!({"using": "css selector", "value": css}))
            .await;
        Element(
            value[ELEMENT_KEY]
                .as_str()
                .unwrap_or_else(|| panic!("no element {css}: {value}"))
                .to_owned(),
        )
    }

    pub(crate) async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.command(&format!("element/{}/click", element.0), json!({}))
            .await;
    }

    pub(crate) async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.command(
            &format!("element/{}/value", element.0),
            json!({"text": text}),
        )
        .await;
    }

    pub(crate) async fn text(&self, css: &str) -> String {
        let element = self.find(css).await;
        self.get(&format!("element/{}/text", element.0))
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs `script` (a function body) in the page; its return value.
    pub(crate) async fn run(&self, script: &str) -> Value {
        self.command("execute/sync", json!({"script": script, "args": []}))
            .await
    }

    /// Waits (bounded) until `script` returns true.
    pub(crate) async fn wait_for(&self, script: &str, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.run(script).await == json!(true) {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                let page = self.run("return document.body.innerText;").await;
                panic!(
                    "waited {limit:?} for `{script}` on {}:\n{page}",
                    self.url().await
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Saves a PNG screenshot of the page to `path`.
    pub(crate) async fn screenshot(&self, path: &Path) {
        let data = self.get("screenshot").await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().expect("base64 PNG data"))
            .expect("a base64 screenshot");
        std::fs::write(path, png).expect("the screenshot is saved");
    }

    pub(crate) async fn quit(self) {
        let _ = self.client.delete(&self.session).send().await;
    }

    async fn command(&self, path: &str, body: Value) -> Value {
        post(&self.client, &format!("{}/{path}", self.session), body).await["value"].take()
    }

    async fn get(&self, path: &str) -> Value {
        let response = self
            .client
            .get(format!("{}/{path}", self.session))
            .send()
            .await
            .expect("chromedriver answers");
        let mut answer: Value = response.json().await.expect("a JSON answer");
        assert!(answer["value"]["error"].is_null(), "{path}: {answer}");
        answer["value"].take()
    }
}

async fn post(client: &reqwest::Client, url: &str, body: Value) -> Value {
    let response = client
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("chromedriver answers");
    let answer: Value = response.json().await.expect("a JSON answer");
    let value = answer.get("value").cloned().unwrap_or(Value::Null);
    assert!(
        !value.is_object() || value["error"].is_null(),
        "{url}: {answer}"
    );
    answer
}
