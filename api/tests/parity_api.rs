//! The API features users of the original MVP rely on: login by e-mail one-time code, CORS for an admin UI
//! served elsewhere, request IDs, totals on lists, and network presets with the link builder. Store-backed
//! tests run on the embedded store and on FerretDB.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Api, Session, code};
use traffoflex_api::ApiSettings;
use traffoflex_api::auth::otp::{CodeDelivery, DeliveryError, OtpSettings};
use traffoflex_core::store::Collection;

// ---------------------------------------------------------------- login by e-mail code

/// Codes "sent" by the API, instead of e-mail.
#[derive(Debug, Default)]
struct Outbox(Mutex<Vec<(String, String)>>);

#[async_trait]
impl CodeDelivery for Outbox {
    async fn deliver(&self, email: &str, code: &str, _valid_for: Duration) -> Result<(), DeliveryError> {
        self.0.lock().unwrap().push((email.to_owned(), code.to_owned()));
        Ok(())
    }
}

impl Outbox {
    /// The codes sent to `email` so far (waiting a little: delivery runs after the answer).
    async fn codes_for(&self, email: &str) -> Vec<String> {
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.0.lock().unwrap().iter().filter(|(to, _)| to == email).map(|(_, c)| c.clone()).collect()
    }

    async fn only_code_for(&self, email: &str) -> String {
        let codes = self.codes_for(email).await;
        assert_eq!(codes.len(), 1, "one code for {email}: {codes:?}");
        codes[0].clone()
    }
}

fn otp_settings_with(ttl: Duration) -> (ApiSettings, Arc<Outbox>) {
    let outbox = Arc::new(Outbox::default());
    let otp = OtpSettings { ttl, max_attempts: 3, ..OtpSettings::new(Arc::clone(&outbox) as Arc<dyn CodeDelivery>) };
    (ApiSettings { otp: Some(otp), ..ApiSettings::default() }, outbox)
}

fn otp_settings() -> (ApiSettings, Arc<Outbox>) {
    otp_settings_with(Duration::from_secs(600))
}

fn short_otp_settings() -> (ApiSettings, Arc<Outbox>) {
    otp_settings_with(Duration::from_secs(1))
}

on_both_stores_with!(otp_settings:
    a_code_logs_in_once,
    wrong_codes_are_refused_and_limited,
    no_new_code_while_one_is_valid,
    only_approved_users_get_codes,
);
on_both_stores_with!(short_otp_settings: an_expired_code_is_refused);

async fn ask_code(api: &Api, email: &str) -> (StatusCode, Value, Option<String>) {
    let resp =
        api.http.post(format!("{}/auth/otp/request", api.base)).json(&json!({"email": email})).send().await.unwrap();
    let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    let (status, body) = support::read(resp).await;
    (status, body, retry)
}

/// Verifies a code; on success the session it opened.
async fn verify_code(api: &Api, email: &str, code: &str) -> (StatusCode, Value, Option<Session>) {
    let resp = api
        .http
        .post(format!("{}/auth/otp/verify", api.base))
        .json(&json!({"email": email, "code": code}))
        .send()
        .await
        .unwrap();
    let cookie = resp.headers().get("set-cookie").map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned());
    let (status, body) = support::read(resp).await;
    let session = match (status, cookie) {
        (StatusCode::OK, Some(cookie)) => Some(Session {
            base: api.base.clone(),
            http: api.http.clone(),
            auth: support::Auth::Cookie { cookie, csrf: body["csrfToken"].as_str().unwrap().to_owned() },
            user: body["user"].clone(),
        }),
        _ => None,
    };
    (status, body, session)
}

async fn a_code_logs_in_once(api: Api, outbox: Arc<Outbox>) {
    let (status, body, _) = ask_code(&api, " Admin@Example.org ").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!((body["status"].as_str(), body["expiresInSeconds"].as_u64()), (Some("requested"), Some(600)));
    let code = outbox.only_code_for(support::ADMIN_EMAIL).await;
    assert!(code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()), "{code}");
    // Only a salted hash is stored.
    let stored = api.store.find(Collection::Meta, &Default::default()).await.unwrap();
    let challenge = stored.iter().find(|d| d["kind"] == "loginCode").expect("a stored challenge");
    assert!(challenge["codeHash"].as_str().is_some_and(|h| h.len() == 64), "{challenge}");
    assert!(!challenge.to_string().contains(&format!("\"{code}\"")), "the code itself is not stored: {challenge}");

    let (status, body, session) =
        verify_code(&api, support::ADMIN_EMAIL, &format!("{} {}", &code[..3], &code[3..])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["csrfToken"].as_str().is_some_and(|t| !t.is_empty()), "{body}");
    assert_eq!(body["user"]["email"], support::ADMIN_EMAIL);
    let session = session.expect("a session cookie");
    let (status, me) = session.get("/auth/me").await;
    assert_eq!((status, me["authenticatedBy"].as_str()), (StatusCode::OK, Some("session")));
    // The session writes like a password session: with the CSRF token.
    let (status, _) = session.post("/teams", json!({"name": "By code"})).await;
    assert_eq!(status, StatusCode::CREATED);

    // Used up: the same code does not log in twice, and a new one may be asked for at once.
    let (status, body, _) = verify_code(&api, support::ADMIN_EMAIL, &code).await;
    assert_eq!((status, code_of(&body)), (StatusCode::UNAUTHORIZED, "invalidCode"));
    let (status, _, _) = ask_code(&api, support::ADMIN_EMAIL).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // Passwords still work beside codes.
    api.admin().await;
}

fn code_of(body: &Value) -> &str {
    code(body)
}

/// A six-digit code other than `code`.
fn other_than(code: &str) -> String {
    let n: u32 = code.parse().unwrap();
    format!("{:06}", (n + 1) % 1_000_000)
}

async fn wrong_codes_are_refused_and_limited(api: Api, outbox: Arc<Outbox>) {
    let (status, _, _) = ask_code(&api, support::ADMIN_EMAIL).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let code = outbox.only_code_for(support::ADMIN_EMAIL).await;
    let wrong = other_than(&code);
    let (status, body, session) = verify_code(&api, support::ADMIN_EMAIL, &wrong).await;
    assert_eq!((status, code_of(&body)), (StatusCode::UNAUTHORIZED, "invalidCode"), "{body}");
    assert!(session.is_none());
    let (status, body, _) = verify_code(&api, support::ADMIN_EMAIL, "12345").await;
    assert_eq!((status, body["error"]["fields"][0]["path"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("code")));
    // Another address's code is not this one's.
    let (status, _, _) = verify_code(&api, "someone@example.org", &code).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    for _ in 0..2 {
        let (status, _, _) = verify_code(&api, support::ADMIN_EMAIL, &wrong).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    // Three tries were allowed: now even the right code is refused until the code expires.
    let (status, body, session) = verify_code(&api, support::ADMIN_EMAIL, &code).await;
    assert_eq!((status, code_of(&body)), (StatusCode::TOO_MANY_REQUESTS, "tooManyAttempts"), "{body}");
    assert!(session.is_none());
    let (status, body, _) = ask_code(&api, support::ADMIN_EMAIL).await;
    assert_eq!((status, code_of(&body)), (StatusCode::TOO_MANY_REQUESTS, "codeAlreadySent"));
}

async fn an_expired_code_is_refused(api: Api, outbox: Arc<Outbox>) {
    let (status, _, _) = ask_code(&api, support::ADMIN_EMAIL).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let code = outbox.only_code_for(support::ADMIN_EMAIL).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (status, body, session) = verify_code(&api, support::ADMIN_EMAIL, &code).await;
    assert_eq!((status, code_of(&body)), (StatusCode::UNAUTHORIZED, "invalidCode"), "{body}");
    assert!(session.is_none());
    // Expired challenges are swept when codes are asked for, whichever the address.
    let id = traffoflex_api::auth::otp::challenge_id(support::ADMIN_EMAIL);
    assert!(api.store.get(Collection::Meta, &id).await.unwrap().is_some());
    let (status, _, _) = ask_code(&api, "someone.else@example.org").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(api.store.get(Collection::Meta, &id).await.unwrap().is_none(), "the expired challenge is gone");
    // Once expired, a new code may be asked for, and it works.
    let (status, _, _) = ask_code(&api, support::ADMIN_EMAIL).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let codes = outbox.codes_for(support::ADMIN_EMAIL).await;
    assert_eq!(codes.len(), 2);
    let (status, body, _) = verify_code(&api, support::ADMIN_EMAIL, &codes[1]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn no_new_code_while_one_is_valid(api: Api, outbox: Arc<Outbox>) {
    let (status, first, _) = ask_code(&api, support::ADMIN_EMAIL).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, body, retry) = ask_code(&api, support::ADMIN_EMAIL).await;
    assert_eq!((status, code_of(&body)), (StatusCode::TOO_MANY_REQUESTS, "codeAlreadySent"), "{body}");
    let wait: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((590..=600).contains(&wait), "{wait}");
    assert!(body["error"]["message"].as_str().unwrap().contains("valid until"), "{body}");
    assert_eq!(outbox.codes_for(support::ADMIN_EMAIL).await.len(), 1, "no second code was sent");

    // An address without an account is answered exactly the same, both times.
    let (status, unknown, _) = ask_code(&api, "nobody@example.org").await;
    assert_eq!((status, &unknown), (StatusCode::ACCEPTED, &first));
    let (status, again, _) = ask_code(&api, "nobody@example.org").await;
    assert_eq!((status, code_of(&again)), (StatusCode::TOO_MANY_REQUESTS, "codeAlreadySent"));
    assert!(outbox.codes_for("nobody@example.org").await.is_empty());
    let (status, body, _) = ask_code(&api, "not-an-address").await;
    assert_eq!(
        (status, body["error"]["fields"][0]["path"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("email"))
    );
}

async fn only_approved_users_get_codes(api: Api, outbox: Arc<Outbox>) {
    let email = "pending@example.org";
    let (status, body) = api
        .anonymous(
            Method::POST,
            "/auth/register",
            Some(json!({"email": email, "password": "pending-password", "name": "P"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body, _) = ask_code(&api, email).await;
    assert_eq!(status, StatusCode::ACCEPTED, "the answer does not tell: {body}");
    assert!(outbox.codes_for(email).await.is_empty(), "a pending account gets no code");
    for guess in ["000000", "123456"] {
        let (status, _, session) = verify_code(&api, email, guess).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(session.is_none());
    }

    // Approved, then rejected after the code was sent: the code no longer logs in.
    let admin = api.admin().await;
    let user = "late@example.org";
    let (status, _) = api
        .anonymous(
            Method::POST,
            "/auth/register",
            Some(json!({"email": user, "password": "late-password", "name": "L"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let late = body_id(&api, user).await;
    let (status, _) = admin.post(&format!("/users/{late}/approve"), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = ask_code(&api, user).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let code = outbox.only_code_for(user).await;
    let (status, _) = admin.post(&format!("/users/{late}/reject"), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body, session) = verify_code(&api, user, &code).await;
    assert_eq!((status, code_of(&body)), (StatusCode::FORBIDDEN, "rejected"), "{body}");
    assert!(session.is_none());
}

async fn body_id(api: &Api, email: &str) -> String {
    let users = api.store.find(Collection::Users, &Default::default()).await.unwrap();
    users.iter().find(|u| u["email"] == email).unwrap()["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn login_by_code_is_off_by_default() {
    let api = Api::sqlite().await;
    for (path, body) in [
        ("/auth/otp/request", json!({"email": support::ADMIN_EMAIL})),
        ("/auth/otp/verify", json!({"email": support::ADMIN_EMAIL, "code": "123456"})),
    ] {
        let (status, body) = api.anonymous(Method::POST, path, Some(body)).await;
        assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "notEnabled"), "{path}");
    }
    let stored = api.store.find(Collection::Meta, &Default::default()).await.unwrap();
    assert!(!stored.iter().any(|d| d["kind"] == "loginCode"), "nothing was stored");
}

// ---------------------------------------------------------------- CORS

const ADMIN_UI: &str = "https://admin.example.com";

async fn preflight(api: &Api, origin: &str) -> reqwest::Response {
    api.http
        .request(Method::OPTIONS, format!("{}/campaigns", api.base))
        .header("origin", origin)
        .header("access-control-request-method", "PUT")
        .header("access-control-request-headers", "content-type,x-csrf-token")
        .send()
        .await
        .unwrap()
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn cors_allows_the_listed_origins_only() {
    let origins =
        traffoflex_api::layers::parse_cors_origins(&[format!("{ADMIN_UI}/"), "http://localhost:5173".into()]).unwrap();
    let api = Api::sqlite_with(ApiSettings { cors_origins: origins, ..ApiSettings::default() }).await;

    let resp = preflight(&api, ADMIN_UI).await;
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(header(&resp, "access-control-allow-origin"), Some(ADMIN_UI));
    assert_eq!(header(&resp, "access-control-allow-credentials"), Some("true"));
    let methods = header(&resp, "access-control-allow-methods").unwrap().to_ascii_uppercase();
    for m in ["GET", "POST", "PUT", "DELETE"] {
        assert!(methods.contains(m), "{methods}");
    }
    let headers = header(&resp, "access-control-allow-headers").unwrap().to_ascii_lowercase();
    assert!(headers.contains("x-csrf-token") && headers.contains("content-type"), "{headers}");

    let resp = preflight(&api, "https://evil.example").await;
    assert_eq!(header(&resp, "access-control-allow-origin"), None, "another origin is not allowed");

    // An actual request: the allowed origin may read the answer (and its request ID), another may not.
    let get = |origin: &'static str| api.http.get(format!("{}/openapi.json", api.base)).header("origin", origin).send();
    let resp = get("http://localhost:5173").await.unwrap();
    assert_eq!(header(&resp, "access-control-allow-origin"), Some("http://localhost:5173"));
    assert!(header(&resp, "access-control-expose-headers").unwrap().to_ascii_lowercase().contains("x-request-id"));
    let resp = get("https://evil.example").await.unwrap();
    assert_eq!(header(&resp, "access-control-allow-origin"), None);
}

#[tokio::test]
async fn without_origins_there_are_no_cors_headers() {
    let api = Api::sqlite().await;
    let resp = preflight(&api, ADMIN_UI).await;
    assert_eq!(header(&resp, "access-control-allow-origin"), None);
    let resp = api.http.get(format!("{}/openapi.json", api.base)).header("origin", ADMIN_UI).send().await.unwrap();
    assert_eq!(header(&resp, "access-control-allow-origin"), None);
}

// ---------------------------------------------------------------- request IDs

#[tokio::test]
async fn every_answer_carries_a_request_id() {
    let api = Api::sqlite().await;
    let send = |path: &str, id: Option<&str>| {
        let mut req = api.http.get(format!("{}{path}", api.base));
        if let Some(id) = id {
            req = req.header("x-request-id", id);
        }
        async move { req.send().await.unwrap() }
    };
    let mut seen = Vec::new();
    for path in ["/openapi.json", "/auth/me", "/no-such-thing"] {
        let resp = send(path, None).await;
        let id = header(&resp, "x-request-id").unwrap_or_else(|| panic!("{path}: no request ID")).to_owned();
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{path}: {id}");
        seen.push(id);
    }
    seen.dedup();
    assert_eq!(seen.len(), 3, "a new ID per request: {seen:?}");
    // The caller's own ID is kept when sane, replaced when not.
    let resp = send("/auth/me", Some("edge-42:abc")).await;
    assert_eq!((resp.status(), header(&resp, "x-request-id")), (StatusCode::UNAUTHORIZED, Some("edge-42:abc")));
    let long = "x".repeat(200);
    for bad in ["two words", long.as_str()] {
        let resp = send("/openapi.json", Some(bad)).await;
        let id = header(&resp, "x-request-id").unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{bad:?} replaced by {id}");
    }
}

// ---------------------------------------------------------------- totals

on_both_stores!(lists_count_every_match);

fn destination(name: &str, enabled: bool) -> Value {
    json!({"name": name, "url": format!("https://offer.example/{name}?cid={{clickId}}"), "enabled": enabled,
           "healthCheck": {"enabled": false}})
}

async fn lists_count_every_match(api: Api) {
    let admin = api.admin().await;
    for (name, enabled) in [("a", true), ("b", false), ("c", true)] {
        admin.create("/destinations", destination(name, enabled)).await;
    }
    api.store
        .insert(Collection::Destinations, json!({"name": "theirs", "url": "https://o.example/", "teamId": "elsewhere"}))
        .await
        .unwrap();
    let (status, page) = admin.get("/destinations?limit=2").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!((page["items"].as_array().unwrap().len(), page["total"].as_u64()), (2, Some(3)), "{page}");
    let cursor = page["nextCursor"].as_str().unwrap().to_owned();
    let (_, last) = admin.get(&format!("/destinations?limit=2&cursor={cursor}")).await;
    assert_eq!((last["items"].as_array().unwrap().len(), last["total"].as_u64()), (1, Some(3)), "{last}");
    assert!(last.get("nextCursor").is_none());
    let (_, enabled) = admin.get("/destinations?enabled=true&limit=1").await;
    assert_eq!(enabled["total"], 2, "filters count: {enabled}");
    for path in ["campaigns", "streams", "traffic-sources", "affiliate-networks", "postback-templates"] {
        let (status, empty) = admin.get(&format!("/{path}")).await;
        assert_eq!((status, empty["total"].as_u64()), (StatusCode::OK, Some(0)), "{path}: {empty}");
    }
    let (_, audit) = admin.get("/audit-log?limit=1").await;
    assert_eq!(audit["total"], 3, "{audit}");

    // The documented page has a required total.
    let doc = traffoflex_api::openapi::document();
    let schema =
        &doc["paths"]["/api/v1/destinations"]["get"]["responses"]["200"]["content"]["application/json"]["schema"];
    let name = schema["$ref"].as_str().unwrap().rsplit('/').next().unwrap();
    let page = &doc["components"]["schemas"][name];
    assert_eq!(page["properties"]["total"]["type"], "integer", "{page}");
    assert!(page["required"].as_array().unwrap().contains(&json!("total")), "{page}");
}

// ---------------------------------------------------------------- network presets and links

on_both_stores!(presets_are_listed_and_applied, the_link_builder_writes_both_urls);

async fn presets_are_listed_and_applied(api: Api) {
    let admin = api.admin().await;
    let (status, list) = admin.get("/network-presets").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let presets = list["items"].as_array().unwrap();
    assert!(presets.len() >= 3, "{list}");
    let generic = presets.iter().find(|p| p["id"] == "generic").expect("a generic preset");
    assert_eq!(generic["offer"]["clickIdParam"], "subid");
    assert_eq!(generic["template"]["params"]["clickId"], "clickid");
    assert_eq!(generic["networkMacros"]["clickId"], "{subid}");
    assert_eq!(generic["template"]["statusMap"]["0"], "rejected");
    assert_eq!(generic["authMode"], "token");

    let before = api.store.config_revision().await.unwrap();
    let (status, applied) =
        admin.post("/network-presets/offer-platform/apply", json!({"key": "neta", "name": "Network A"})).await;
    assert_eq!(status, StatusCode::CREATED, "{applied}");
    let template = &applied["postbackTemplate"];
    let network = &applied["affiliateNetwork"];
    assert_eq!(template["params"]["clickId"], "aff_sub");
    assert_eq!(template["statusMap"]["declined"], "rejected");
    assert_eq!(template["name"], "Network A (Offer platform)");
    assert_eq!(network["postbackTemplateId"], template["id"]);
    assert_eq!((network["key"].as_str(), network["preset"].as_str()), (Some("neta"), Some("offer-platform")));
    assert_eq!(
        (network["auth"]["mode"].as_str(), network["auth"]["tokenParam"].as_str()),
        (Some("token"), Some("key"))
    );
    assert!(network["auth"]["token"].as_str().is_some_and(|t| t.len() >= 32), "a random token: {network}");
    assert_eq!(network["teamId"], "default");
    let nid = network["id"].as_str().unwrap();
    let (status, read) = admin.get(&format!("/affiliate-networks/{nid}")).await;
    assert_eq!((status, &read), (StatusCode::OK, network));
    assert_ne!(api.store.config_revision().await.unwrap(), before, "the data plane is told");
    let (_, audit) = admin.get("/audit-log").await;
    let mut created: Vec<_> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["collection"].as_str().unwrap()))
        .collect();
    created.sort_unstable();
    assert_eq!(created, [("create", "affiliateNetworks"), ("create", "postbackTemplates")], "both audited");

    // The same key again: 409, and no template is left behind.
    let (status, body) = admin.post("/network-presets/generic/apply", json!({"key": "neta", "name": "Again"})).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "duplicate"), "{body}");
    // A bad key: 422 naming it, nothing created.
    let (status, body) = admin.post("/network-presets/generic/apply", json!({"key": "Bad Key", "name": "B"})).await;
    assert_eq!(
        (status, body["error"]["fields"][0]["path"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("key")),
        "{body}"
    );
    let (_, templates) = admin.get("/postback-templates").await;
    assert_eq!(templates["total"], 1, "{templates}");
    let (status, body) = admin.post("/network-presets/nonesuch/apply", json!({"key": "x", "name": "X"})).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "notFound"));
    // A given token is used; viewers may not apply presets.
    let (status, applied) = admin
        .post("/network-presets/generic/apply", json!({"key": "netb", "name": "B", "token": "given-token-123"}))
        .await;
    assert_eq!(
        (status, applied["affiliateNetwork"]["auth"]["token"].as_str()),
        (StatusCode::CREATED, Some("given-token-123"))
    );
    let viewer = api.user("v@example.org", "viewer", None).await;
    let (status, _) = viewer.post("/network-presets/generic/apply", json!({"key": "netc", "name": "C"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = viewer.get("/network-presets").await;
    assert_eq!(status, StatusCode::OK);
}

/// `path?name=value&…`, encoded.
fn with_query(path: &str, pairs: &[(&str, &str)]) -> String {
    let url = reqwest::Url::parse_with_params("http://x/", pairs).unwrap();
    format!("{path}?{}", url.query().unwrap_or_default())
}

/// The query of `url` with each network macro replaced by a value, as the network would send it.
fn as_sent(url: &str, values: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut filled = url.to_owned();
    for (k, v) in values {
        filled = filled.replace(k, v);
    }
    let parsed = reqwest::Url::parse(&filled).unwrap();
    parsed.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

async fn the_link_builder_writes_both_urls(api: Api) {
    let admin = api.admin().await;
    let (_, applied) = admin
        .post("/network-presets/offer-platform/apply", json!({"key": "netp", "name": "P", "token": "tok-123456"}))
        .await;
    let nid = applied["affiliateNetwork"]["id"].as_str().unwrap().to_owned();
    let template: traffoflex_crds::PostbackTemplateSpec =
        serde_json::from_value(applied["postbackTemplate"].clone()).unwrap();
    let campaign = admin.create("/campaigns", json!({"key": "summer", "name": "Summer", "status": "active"})).await;

    let path = with_query(
        &format!("/affiliate-networks/{nid}/links"),
        &[
            ("baseUrl", "https://pb.example.com/"),
            ("offerUrl", "https://offers.example/o?id=7&aff_sub=old#top"),
            ("campaignId", &campaign),
        ],
    );
    let (status, links) = admin.get(&path).await;
    assert_eq!(status, StatusCode::OK, "{links}");
    assert_eq!(links["destinationUrl"], "https://offers.example/o?id=7&aff_sub={clickId}#top");
    assert_eq!(
        links["postbackUrl"],
        "https://pb.example.com/postback/netp?aff_sub={aff_sub}&transaction_id={transaction_id}&payout={payout}\
         &currency={currency}&status={status}&key=tok-123456"
    );
    assert_eq!((links["campaignPath"].as_str(), links["preset"].as_str()), (Some("/c/summer"), Some("offer-platform")));

    // What the network sends from that URL reads as the conversion it reports, with a valid token.
    let sent = as_sent(
        links["postbackUrl"].as_str().unwrap(),
        &[
            ("{aff_sub}", "CLICK1"),
            ("{transaction_id}", "T-9"),
            ("{payout}", "2.50"),
            ("{currency}", "EUR"),
            ("{status}", "declined"),
        ],
    );
    let read = traffoflex_dataplane::postback::normalize::normalize(&sent, Some(&template)).unwrap();
    assert_eq!((read.click_id.as_str(), read.transaction_id.as_str()), ("CLICK1", "T-9"));
    assert_eq!((read.payout.to_string().as_str(), read.currency.as_str()), ("2.5", "EUR"));
    assert_eq!(read.status, traffoflex_crds::ConversionStatus::Rejected);
    assert!(traffoflex_dataplane::postback::auth::check_token(&sent, Some("key"), Some("tok-123456")).is_ok());

    // The smartlink preset: SubIDs on the offer link, fixed currency and status in the postback.
    let (_, applied) =
        admin.post("/network-presets/smartlink-cpa/apply", json!({"key": "nets", "name": "S", "token": "sec-1"})).await;
    let sid = applied["affiliateNetwork"]["id"].as_str().unwrap().to_owned();
    let (status, links) = admin
        .get(&with_query(&format!("/affiliate-networks/{sid}/links"), &[("offerUrl", "https://smart.example/l/abc")]))
        .await;
    assert_eq!(status, StatusCode::OK, "{links}");
    assert_eq!(
        links["destinationUrl"],
        "https://smart.example/l/abc?cid={clickId}&s1={sub1}&s2={sub2}&s3={sub3}&s4={sub4}"
    );
    assert_eq!(
        links["postbackUrl"],
        "/postback/nets?click_id={cid}&transaction_id={cid}&payout={sum}&currency=USD&status=approved&secret=sec-1",
        "without baseUrl, a path"
    );
    assert!(links["campaignPath"].is_null());

    // A network set up by hand, without preset or token: placeholders and a warning.
    let tid = admin
        .create("/postback-templates", json!({"name": "Mine", "params": {"clickId": "cid", "transactionId": "oid"}}))
        .await;
    let hid = admin
        .create(
            "/affiliate-networks",
            json!({"key": "neth", "name": "H", "postbackTemplateId": tid, "auth": {"mode": "none"}}),
        )
        .await;
    let (status, links) = admin
        .get(&with_query(&format!("/affiliate-networks/{hid}/links"), &[("baseUrl", "https://pb.example.com")]))
        .await;
    assert_eq!(status, StatusCode::OK, "{links}");
    assert_eq!(links["postbackUrl"], "https://pb.example.com/postback/neth?cid={cid}&oid={oid}");
    assert!(links["preset"].is_null() && links["destinationUrl"].is_null());
    let notes = links["notes"].to_string();
    assert!(notes.contains("not authenticated") && notes.contains("replace each"), "{notes}");

    // Viewers see links without the token; bad input is named.
    let viewer = api.user("v@example.org", "viewer", None).await;
    let (status, links) = viewer.get(&format!("/affiliate-networks/{nid}/links")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(links["postbackUrl"].as_str().unwrap().ends_with("&key=********"), "{links}");
    for (name, value) in [("baseUrl", "ftp://pb.example.com"), ("offerUrl", "not a url"), ("campaignId", "nope")] {
        let (status, body) =
            admin.get(&with_query(&format!("/affiliate-networks/{nid}/links"), &[(name, value)])).await;
        assert_eq!(
            (status, body["error"]["fields"][0]["path"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(name)),
            "{body}"
        );
    }
    let (status, _) = admin.get("/affiliate-networks/no-such-network/links").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Another team does not see this network.
    let (_, team) = admin.post("/teams", json!({"name": "Other"})).await;
    let other = api.user("o@example.org", "manager", team["id"].as_str()).await;
    let (status, _) = other.get(&format!("/affiliate-networks/{nid}/links")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
