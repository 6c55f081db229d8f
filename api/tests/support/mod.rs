//! A running API over real HTTP, on the embedded store or on FerretDB, and sessions that talk to it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{Value, json};
use traffoflex_api::{ApiSettings, ApiState};
use traffoflex_core::analytics::{Analytics, SqliteAnalytics};
use traffoflex_core::store::{ConfigStore, MongoStore, SqliteStore};

pub const ADMIN_EMAIL: &str = "admin@example.org";
pub const ADMIN_PASSWORD: &str = "admin-password-1";

/// An API served on a free loopback port.
pub struct Api {
    pub base: String,
    pub store: Arc<dyn ConfigStore>,
    pub analytics: Arc<dyn Analytics>,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Api {
    /// On the embedded SQLite store.
    pub async fn sqlite() -> Self {
        Self::sqlite_with(ApiSettings::default()).await
    }

    pub async fn sqlite_with(settings: ApiSettings) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("config.sqlite")).await.unwrap());
        Self::start(store, dir, settings).await
    }

    /// On FerretDB (a database of its own), or `None` outside CI when no server is configured.
    pub async fn ferretdb() -> Option<Self> {
        Self::ferretdb_with(ApiSettings::default()).await
    }

    pub async fn ferretdb_with(settings: ApiSettings) -> Option<Self> {
        let uri = traffoflex_core::testenv::mongo_uri()?;
        let name = traffoflex_core::testenv::unique_name("api");
        let store = Arc::new(MongoStore::connect(&uri, Some(&name)).await.unwrap());
        Some(Self::start(store, tempfile::tempdir().unwrap(), settings).await)
    }

    async fn start(store: Arc<dyn ConfigStore>, dir: tempfile::TempDir, settings: ApiSettings) -> Self {
        store.ensure_indexes().await.unwrap();
        let analytics: Arc<dyn Analytics> =
            Arc::new(SqliteAnalytics::open(&dir.path().join("analytics.sqlite")).await.unwrap());
        analytics.migrate().await.unwrap();
        traffoflex_api::auth::bootstrap_admin(store.as_ref(), ADMIN_EMAIL, ADMIN_PASSWORD).await.unwrap();
        let state = Arc::new(ApiState::new(Arc::clone(&store), Arc::clone(&analytics), settings));
        let app = traffoflex_api::router(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await.unwrap();
        });
        Self {
            base: format!("http://{addr}/api/v1"),
            store,
            analytics,
            http: reqwest::Client::new(),
            _dir: dir,
            server,
        }
    }

    /// A request without credentials.
    pub async fn anonymous(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        read(req.send().await.unwrap()).await
    }

    /// Logs in; panics unless it works.
    pub async fn login(&self, email: &str, password: &str) -> Session {
        let resp = self
            .http
            .post(format!("{}/auth/login", self.base))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap();
        let cookie = resp
            .headers()
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_else(|| panic!("no session cookie for {email}"));
        let (status, body) = read(resp).await;
        assert_eq!(status, StatusCode::OK, "login of {email}: {body}");
        let cookie = cookie.split(';').next().unwrap().to_owned();
        Session {
            base: self.base.clone(),
            http: self.http.clone(),
            auth: Auth::Cookie { cookie, csrf: body["csrfToken"].as_str().unwrap().to_owned() },
            user: body["user"].clone(),
        }
    }

    pub async fn admin(&self) -> Session {
        self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await
    }

    /// Registers `email`, has the admin approve it with `role` (and `team`), and logs it in.
    pub async fn user(&self, email: &str, role: &str, team: Option<&str>) -> Session {
        let password = "user-password-1";
        let (status, body) = self
            .anonymous(
                reqwest::Method::POST,
                "/auth/register",
                Some(json!({"email": email, "password": password, "name": email})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id = body["id"].as_str().unwrap().to_owned();
        let admin = self.admin().await;
        let mut approve = json!({"role": role});
        if let Some(t) = team {
            approve["teamId"] = json!(t);
        }
        let (status, body) = admin.post(&format!("/users/{id}/approve"), approve).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        self.login(email, password).await
    }
}

#[derive(Clone)]
pub enum Auth {
    Cookie { cookie: String, csrf: String },
    Bearer(String),
}

/// A logged-in caller.
#[derive(Clone)]
pub struct Session {
    pub base: String,
    pub http: reqwest::Client,
    pub auth: Auth,
    pub user: Value,
}

pub async fn read(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    (status, body)
}

impl Session {
    /// The same user with an API token instead of the cookie.
    pub fn with_token(&self, token: &str) -> Session {
        Session { auth: Auth::Bearer(token.to_owned()), ..self.clone() }
    }

    /// The same session, but sending no CSRF token.
    pub fn without_csrf(&self) -> Session {
        let auth = match &self.auth {
            Auth::Cookie { cookie, .. } => Auth::Cookie { cookie: cookie.clone(), csrf: String::new() },
            other => other.clone(),
        };
        Session { auth, ..self.clone() }
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.send_with(method, path, body, &[]).await
    }

    pub async fn send_with(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        match &self.auth {
            Auth::Cookie { cookie, csrf } => {
                req = req.header("cookie", cookie);
                if !csrf.is_empty() {
                    req = req.header("x-csrf-token", csrf);
                }
            }
            Auth::Bearer(t) => req = req.bearer_auth(t),
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        read(req.send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::DELETE, path, None).await
    }

    /// Creates an object and returns its ID; panics unless the API answers 201.
    pub async fn create(&self, path: &str, body: Value) -> String {
        let (status, got) = self.post(path, body).await;
        assert_eq!(status, StatusCode::CREATED, "POST {path}: {got}");
        got["id"].as_str().unwrap().to_owned()
    }
}

/// The error code of an error body.
pub fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_else(|| panic!("not an error body: {body}"))
}

/// Runs each listed test, given the settings `$settings()` makes, on the embedded store and on FerretDB.
#[macro_export]
macro_rules! on_both_stores_with {
    ($settings:ident: $($name:ident),* $(,)?) => { $(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                let (settings, extra) = super::$settings();
                super::$name(super::support::Api::sqlite_with(settings).await, extra).await;
            }
            #[tokio::test]
            async fn ferretdb() {
                let (settings, extra) = super::$settings();
                if let Some(api) = super::support::Api::ferretdb_with(settings).await {
                    super::$name(api, extra).await;
                }
            }
        }
    )* };
}

/// Runs each listed test on the embedded store and on FerretDB.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => { $(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name(super::support::Api::sqlite().await).await;
            }
            #[tokio::test]
            async fn ferretdb() {
                if let Some(api) = super::support::Api::ferretdb().await {
                    super::$name(api).await;
                }
            }
        }
    )* };
}
