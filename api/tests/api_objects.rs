//! The lifecycle of every object kind over HTTP: create, read, a stale write refused with `versionConflict`,
//! a current write visible in reads and lists, an invalid write refused with the field's path and changing
//! nothing, a stale delete refused, delete, and 404 after. Also: deletes refused while other objects use the
//! object, the session cookie's attributes, expired API tokens, paging of postback logs, and a destination's
//! health history. Each test runs on the embedded store and on FerretDB.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Api, Session, code};
use traffoflex_core::events::{Event, HealthEvent, PostbackLogEvent};
use traffoflex_core::store::Collection;

on_both_stores!(
    every_kind_goes_through_its_whole_lifecycle,
    objects_in_use_are_deleted_only_once_freed,
    the_session_cookie_is_http_only_same_site_and_site_wide,
    an_expired_api_token_is_refused,
    postback_logs_page_without_gaps_or_overlaps,
    destination_health_shows_that_destinations_checks,
);

/// One object kind: where it lives, a valid body, and a change that makes the body invalid at `invalid_path`.
struct Kind {
    path: &'static str,
    body: Value,
    /// Top-level fields that, merged into `body`, make it invalid.
    invalid: Value,
    /// The field path the 422 must name.
    invalid_path: &'static str,
}

fn with(body: &Value, fields: &Value) -> Value {
    let mut out = body.clone();
    for (k, v) in fields.as_object().unwrap() {
        out[k] = v.clone();
    }
    out
}

fn field_paths(body: &Value) -> Vec<String> {
    body["error"]["fields"]
        .as_array()
        .map(|fields| fields.iter().filter_map(|f| f["path"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// The object with `id` in the full list of `path`, if listed.
async fn listed(admin: &Session, path: &str, id: &str) -> Option<Value> {
    let (status, page) = admin.get(&format!("/{path}?limit=1000")).await;
    assert_eq!(status, StatusCode::OK, "GET /{path}: {page}");
    page["items"].as_array().unwrap().iter().find(|o| o["id"] == id).cloned()
}

async fn every_kind_goes_through_its_whole_lifecycle(api: Api) {
    let admin = api.admin().await;
    // What the objects under test refer to; nothing refers to the objects under test.
    let campaign = admin.create("/campaigns", json!({"key": "base", "name": "Base", "status": "active"})).await;
    let destination = admin.create("/destinations", json!({"name": "Base", "url": "https://offer.example/base"})).await;
    let template = admin.create("/postback-templates", json!({"name": "Base", "params": {"clickId": "clickid"}})).await;

    let kinds = [
        Kind {
            path: "campaigns",
            body: json!({"key": "summer-sale", "name": "Summer sale", "status": "active",
                "trafficbackUrl": "https://fallback.example/tb",
                "costModel": {"type": "cpc", "value": "0.05", "currency": "USD"}}),
            invalid: json!({"trafficbackUrl": "ftp://fallback.example/tb"}),
            invalid_path: "trafficbackUrl",
        },
        Kind {
            path: "streams",
            body: json!({"campaignId": campaign, "name": "DE mobile", "priority": 10, "enabled": true,
                "conditions": {"all": [{"field": "country", "op": "in", "values": ["DE", "AT"]}]},
                "selection": "weighted", "destinations": [{"destinationId": destination, "weight": 70}]}),
            invalid: json!({"destinations": [{"destinationId": destination, "weight": -1}]}),
            invalid_path: "destinations[0].weight",
        },
        Kind {
            path: "destinations",
            body: json!({"name": "Offer A", "url": "https://offer.example/a?cid={clickId}&s={sub1}", "enabled": true,
                "caps": {"dailyClicks": 1000}, "healthCheck": {"enabled": false}}),
            invalid: json!({"healthCheck": {"enabled": true, "intervalSeconds": 1}}),
            invalid_path: "healthCheck.intervalSeconds",
        },
        Kind {
            path: "traffic-sources",
            body: json!({"key": "src1", "name": "Source 1",
                "outboundPostbackUrl": "https://source.example/pb?click={sub1}&payout={payout}&status={status}"}),
            invalid: json!({"outboundPostbackStatuses": ["approved", "approved"]}),
            invalid_path: "outboundPostbackStatuses[1]",
        },
        Kind {
            path: "affiliate-networks",
            body: json!({"key": "neta", "name": "Network A", "postbackTemplateId": template,
                "auth": {"mode": "token", "token": "network-a-token"}}),
            invalid: json!({"ipAllowlist": ["10.0.0.0/8", "300.1.1.1"]}),
            invalid_path: "ipAllowlist[1]",
        },
        Kind {
            path: "postback-templates",
            body: json!({"name": "Generic S2S",
                "params": {"clickId": "clickid", "transactionId": "txid", "payout": "payout", "status": "status"},
                "statusMap": {"1": "approved", "0": "rejected"}, "defaultStatus": "approved"}),
            invalid: json!({"params": {"clickId": "clickid", "transactionId": "tx id"}}),
            invalid_path: "params.transactionId",
        },
    ];

    for Kind { path, body, invalid, invalid_path } in kinds {
        let (status, created) = admin.post(&format!("/{path}"), body.clone()).await;
        assert_eq!(status, StatusCode::CREATED, "create {path}: {created}");
        let id = created["id"].as_str().unwrap().to_owned();
        let one = format!("/{path}/{id}");
        assert_eq!(created["version"], 1, "{path}: {created}");
        let (status, read) = admin.get(&one).await;
        assert_eq!((status, &read), (StatusCode::OK, &created), "{path}: GET by ID answers what POST answered");

        // Someone else changes it first; a write based on version 1 is then stale.
        let theirs = with(&body, &json!({"name": "Changed meanwhile", "version": 1}));
        let (status, got) = admin.put(&one, theirs).await;
        assert_eq!((status, got["version"].as_u64()), (StatusCode::OK, Some(2)), "{path}: {got}");
        let stale = with(&body, &json!({"name": "Lost update", "version": 1}));
        let (status, got) = admin.put(&one, stale).await;
        assert_eq!((status, code(&got)), (StatusCode::CONFLICT, "versionConflict"), "{path}: stale PUT");
        let (_, read) = admin.get(&one).await;
        assert_eq!((read["name"].as_str(), read["version"].as_u64()), (Some("Changed meanwhile"), Some(2)), "{path}");

        let current = with(&body, &json!({"name": "Renamed", "version": 2}));
        let (status, updated) = admin.put(&one, current).await;
        assert_eq!(
            (status, updated["version"].as_u64(), updated["name"].as_str()),
            (StatusCode::OK, Some(3), Some("Renamed")),
            "{path}: PUT with the current version: {updated}"
        );
        assert_eq!(updated["createdAt"], created["createdAt"], "{path}: created once");
        let (_, read) = admin.get(&one).await;
        assert_eq!(read, updated, "{path}: GET shows the change");
        let in_list = listed(&admin, path, &id).await.unwrap_or_else(|| panic!("{path}: {id} not listed"));
        assert_eq!(in_list, updated, "{path}: the list shows the change");

        let (status, refused) = admin.put(&one, with(&with(&body, &invalid), &json!({"version": 3}))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: invalid PUT: {refused}");
        assert_eq!(code(&refused), "invalid", "{path}");
        let paths = field_paths(&refused);
        assert!(paths.iter().any(|p| p == invalid_path), "{path}: {invalid_path} in {paths:?}");
        let (_, read) = admin.get(&one).await;
        assert_eq!(read, updated, "{path}: the invalid PUT changed nothing");

        // DELETE takes the version read too: a stale one deletes nothing.
        let (status, body) = admin.send_with(Method::DELETE, &one, None, &[("if-match", "\"2\"")]).await;
        assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "versionConflict"), "{path}: stale DELETE");
        let (status, _) = admin.get(&one).await;
        assert_eq!(status, StatusCode::OK, "{path}: still there after a stale DELETE");
        let (status, deleted) = admin.send_with(Method::DELETE, &one, None, &[("if-match", "\"3\"")]).await;
        assert_eq!((status, &deleted), (StatusCode::NO_CONTENT, &Value::Null), "{path}: DELETE");
        let (status, gone) = admin.get(&one).await;
        assert_eq!((status, code(&gone)), (StatusCode::NOT_FOUND, "notFound"), "{path}: GET after DELETE");
        assert!(listed(&admin, path, &id).await.is_none(), "{path}: no longer listed");
        let (status, _) = admin.delete(&one).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: a second DELETE");
    }
}

/// The `inUse` refusal of deleting `path`, whose message must name `user_name` and `user_id`.
async fn refused_in_use(admin: &Session, path: &str, user_name: &str, user_id: &str) {
    let (status, body) = admin.delete(path).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "inUse"), "DELETE {path}: {body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(user_name) && message.contains(user_id), "DELETE {path}: {message}");
    let (status, _) = admin.get(path).await;
    assert_eq!(status, StatusCode::OK, "{path} is still there");
}

async fn objects_in_use_are_deleted_only_once_freed(api: Api) {
    let admin = api.admin().await;
    let source = admin.create("/traffic-sources", json!({"key": "src1", "name": "Source 1"})).await;
    let campaign =
        admin.create("/campaigns", json!({"key": "spring", "name": "Spring promo", "trafficSourceId": source})).await;
    let destination = admin.create("/destinations", json!({"name": "Offer", "url": "https://offer.example/o"})).await;
    let stream = admin
        .create(
            "/streams",
            json!({"campaignId": campaign, "name": "Everyone", "destinations": [{"destinationId": destination}]}),
        )
        .await;
    refused_in_use(&admin, &format!("/traffic-sources/{source}"), "Spring promo", &campaign).await;
    refused_in_use(&admin, &format!("/campaigns/{campaign}"), "Everyone", &stream).await;

    // A campaign without streams goes; then nothing holds the traffic source.
    let (status, _) = admin.delete(&format!("/streams/{stream}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = admin.delete(&format!("/campaigns/{campaign}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = admin.delete(&format!("/traffic-sources/{source}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, _) = admin.get(&format!("/traffic-sources/{source}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A template goes once its network is gone; an unused one goes at once.
    let template = admin.create("/postback-templates", json!({"name": "Used", "params": {"clickId": "c"}})).await;
    let unused = admin.create("/postback-templates", json!({"name": "Unused", "params": {"clickId": "c"}})).await;
    let network = admin
        .create(
            "/affiliate-networks",
            json!({"key": "neta", "name": "Network A", "postbackTemplateId": template,
                   "auth": {"mode": "token", "token": "t0ken"}}),
        )
        .await;
    refused_in_use(&admin, &format!("/postback-templates/{template}"), "Network A", &network).await;
    let (status, body) = admin.delete(&format!("/postback-templates/{unused}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = admin.delete(&format!("/affiliate-networks/{network}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "no object refers to a network: {body}");
    let (status, body) = admin.delete(&format!("/postback-templates/{template}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    for path in ["/campaigns", "/traffic-sources", "/affiliate-networks", "/postback-templates", "/streams"] {
        let (_, page) = admin.get(path).await;
        assert_eq!(page["total"], 0, "{path}: {page}");
    }
}

/// The attributes of a `Set-Cookie` header after the `name=value` pair, as written.
fn cookie_attributes(set_cookie: &str) -> Vec<String> {
    set_cookie.split(';').skip(1).map(|a| a.trim().to_owned()).collect()
}

async fn login_set_cookie(api: &Api) -> String {
    let resp = api
        .http
        .post(format!("{}/auth/login", api.base))
        .json(&json!({"email": support::ADMIN_EMAIL, "password": support::ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let cookies: Vec<_> = resp.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    cookies[0].clone()
}

async fn the_session_cookie_is_http_only_same_site_and_site_wide(api: Api) {
    let set_cookie = login_set_cookie(&api).await;
    assert!(set_cookie.starts_with("tf_session="), "{set_cookie}");
    let value = set_cookie.split(';').next().unwrap().trim_start_matches("tf_session=");
    assert!(value.len() >= 32, "a long random session token: {set_cookie}");
    let attributes = cookie_attributes(&set_cookie);
    for expected in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(attributes.iter().any(|a| a == expected), "{expected} in {set_cookie}");
    }
    assert!(!attributes.iter().any(|a| a == "Secure"), "not Secure unless configured: {set_cookie}");

    // Logging out replaces it with an empty cookie that expires at once, with the same attributes.
    let admin = api.admin().await;
    let support::Auth::Cookie { cookie, csrf } = &admin.auth else { unreachable!() };
    let resp = api
        .http
        .post(format!("{}/auth/logout", api.base))
        .header("cookie", cookie)
        .header("x-csrf-token", csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let cleared = resp.headers().get("set-cookie").unwrap().to_str().unwrap().to_owned();
    assert!(cleared.starts_with("tf_session=;"), "{cleared}");
    let attributes = cookie_attributes(&cleared);
    for expected in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=0"] {
        assert!(attributes.iter().any(|a| a == expected), "{expected} in {cleared}");
    }
}

#[tokio::test]
async fn secure_cookies_and_the_session_length_are_configurable() {
    let settings = traffoflex_api::ApiSettings {
        secure_cookies: true,
        session_ttl: std::time::Duration::from_secs(2 * 3600),
        ..Default::default()
    };
    let api = Api::sqlite_with(settings).await;
    let set_cookie = login_set_cookie(&api).await;
    let attributes = cookie_attributes(&set_cookie);
    for expected in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=7200"] {
        assert!(attributes.iter().any(|a| a == expected), "{expected} in {set_cookie}");
    }
}

async fn an_expired_api_token_is_refused(api: Api) {
    let admin = api.admin().await;
    let (status, made) = admin.post("/auth/tokens", json!({"name": "nightly", "expiresInDays": 1})).await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let expires = chrono::DateTime::parse_from_rfc3339(made["expiresAt"].as_str().unwrap()).unwrap();
    let in_a_day = chrono::Utc::now() + chrono::Duration::days(1);
    assert!((in_a_day - expires.to_utc()).num_seconds().abs() < 60, "expires in a day: {made}");
    let (status, forever) = admin.post("/auth/tokens", json!({"name": "forever"})).await;
    assert_eq!((status, &forever["expiresAt"]), (StatusCode::CREATED, &Value::Null), "{forever}");
    let nightly = admin.with_token(made["token"].as_str().unwrap());
    let lasting = admin.with_token(forever["token"].as_str().unwrap());
    let (status, _) = nightly.get("/auth/me").await;
    assert_eq!(status, StatusCode::OK, "valid until it expires");

    // A day later, as far as the token is concerned.
    let id = made["id"].as_str().unwrap();
    let mut stored = api.store.get(Collection::ApiTokens, id).await.unwrap().unwrap();
    stored["expiresAt"] = json!((chrono::Utc::now() - chrono::Duration::seconds(1)).to_rfc3339());
    api.store.replace(Collection::ApiTokens, id, None, stored).await.unwrap();
    let (status, body) = nightly.get("/auth/me").await;
    assert_eq!((status, code(&body)), (StatusCode::UNAUTHORIZED, "tokenExpired"), "{body}");
    let (status, body) = nightly.post("/destinations", json!({"name": "late", "url": "https://offer.example/"})).await;
    assert_eq!((status, code(&body)), (StatusCode::UNAUTHORIZED, "tokenExpired"), "writes too: {body}");
    let (_, list) = admin.get("/destinations").await;
    assert_eq!(list["total"], 0, "nothing was written");
    let (status, me) = lasting.get("/auth/me").await;
    assert_eq!((status, me["authenticatedBy"].as_str()), (StatusCode::OK, Some("token")), "a token without expiry");
}

fn postback_log(id: &str, team: &str, ts: i64) -> Event {
    Event::PostbackLog(PostbackLogEvent {
        id: id.into(),
        ts,
        network_id: "n1".into(),
        network_key: "neta".into(),
        team_id: team.into(),
        outcome: "accepted".into(),
        http_status: 200,
        transaction_id: format!("tx-{id}"),
        ..Default::default()
    })
}

async fn postback_logs_page_without_gaps_or_overlaps(api: Api) {
    let admin = api.admin().await;
    let now = chrono::Utc::now().timestamp_millis();
    // Seven of ours a minute apart (p0 newest), and one of another team.
    let mut events: Vec<_> = (0..7).map(|i| postback_log(&format!("p{i}"), "default", now - i * 60_000)).collect();
    events.push(postback_log("other", "another-team", now));
    api.analytics.insert_events(events).await.unwrap();

    let mut seen = Vec::new();
    for (offset, expected) in [(0, 3), (3, 3), (6, 1), (9, 0)] {
        let (status, page) = admin.get(&format!("/postback-logs?limit=3&offset={offset}")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(page["total"], 7, "offset {offset}: the total over every page, this team only: {page}");
        let rows = page["rows"].as_array().unwrap();
        assert_eq!(rows.len(), expected, "offset {offset}: {page}");
        seen.extend(rows.iter().map(|r| r["id"].as_str().unwrap().to_owned()));
    }
    let expected: Vec<_> = (0..7).map(|i| format!("p{i}")).collect();
    assert_eq!(seen, expected, "the pages together: each log once, newest first");
    let (_, filtered) = admin.get("/postback-logs?transactionId=tx-p4&limit=3").await;
    assert_eq!((filtered["total"].as_u64(), filtered["rows"][0]["id"].as_str()), (Some(1), Some("p4")));
    for bad in ["limit=0", "offset=-1"] {
        let (status, body) = admin.get(&format!("/postback-logs?{bad}")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        assert_eq!(field_paths(&body), [bad.split('=').next().unwrap()], "{bad}");
    }
}

fn check(id: &str, destination: &str, ts: i64, healthy: bool, changed: bool, http_status: u16) -> Event {
    Event::DestinationHealth(HealthEvent {
        id: id.into(),
        ts,
        destination_id: destination.into(),
        team_id: "default".into(),
        healthy,
        changed,
        http_status,
        latency_millis: 40,
        url: "https://offer.example/".into(),
        error: if healthy { String::new() } else { format!("HTTP {http_status}") },
    })
}

async fn destination_health_shows_that_destinations_checks(api: Api) {
    let admin = api.admin().await;
    let body = |name: &str| json!({"name": name, "url": format!("https://offer.example/{name}")});
    let watched = admin.create("/destinations", body("watched")).await;
    let other = admin.create("/destinations", body("other")).await;
    let (status, fresh) = admin.get(&format!("/destinations/{watched}/health")).await;
    assert_eq!(status, StatusCode::OK, "{fresh}");
    assert_eq!((fresh["healthy"].as_bool(), &fresh["history"]), (Some(true), &Value::Null), "never checked");

    let now = chrono::Utc::now().timestamp_millis();
    let minutes_ago = |m: i64| now - m * 60_000;
    api.analytics
        .insert_events(vec![
            check("h1", &watched, minutes_ago(30), true, false, 200),
            check("h2", &watched, minutes_ago(20), false, false, 503),
            check("h3", &watched, minutes_ago(10), false, true, 502),
            check("h4", &other, minutes_ago(5), true, false, 200),
        ])
        .await
        .unwrap();
    // The state the checkers keep for it.
    let state = json!({"id": watched, "destinationId": watched, "healthy": false, "consecutiveFailures": 2,
        "consecutiveSuccesses": 0, "lastStatus": 502, "lastError": "HTTP 502"});
    api.store.insert(Collection::DestinationHealth, state).await.unwrap();

    let (status, health) = admin.get(&format!("/destinations/{watched}/health")).await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!(health["destinationId"], watched.as_str());
    assert_eq!(health["healthy"], false, "{health}");
    assert_eq!(health["state"]["consecutiveFailures"], 2, "{health}");
    let history = &health["history"];
    assert_eq!(history["destinationId"], watched.as_str(), "{health}");
    assert_eq!(
        (history["checks"].as_u64(), history["failures"].as_u64(), history["transitions"].as_u64()),
        (Some(3), Some(2), Some(1)),
        "only this destination's checks: {health}"
    );
    assert_eq!(
        (history["lastHealthy"].as_bool(), history["lastHttpStatus"].as_u64(), history["lastError"].as_str()),
        (Some(false), Some(502), Some("HTTP 502")),
        "the latest check: {health}"
    );
    assert_eq!(history["avgLatencyMillis"], 40);

    let (_, theirs) = admin.get(&format!("/destinations/{other}/health")).await;
    assert_eq!((theirs["healthy"].as_bool(), theirs["history"]["checks"].as_u64()), (Some(true), Some(1)), "{theirs}");
    // Outside the report range there is no history.
    let (_, old) = admin.get(&format!("/destinations/{watched}/health?from=2020-01-01&to=2020-01-31")).await;
    assert_eq!(old["history"], Value::Null, "{old}");
    let (status, _) = admin.get("/destinations/no-such-destination/health").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
