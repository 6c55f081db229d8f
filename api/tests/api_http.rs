//! The admin API over HTTP: auth and approval, sessions, CSRF, API tokens, roles, teams, CRUD with validation,
//! optimistic concurrency and referential integrity, objects managed by Kubernetes, reports, logs, health,
//! reload and the OpenAPI document. Each test runs on the embedded store and on FerretDB.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Api, Session, code};
use traffoflex_core::events::{ClickEvent, ConversionEvent, ConversionStatus, Event, PostbackLogEvent};
use traffoflex_core::store::Collection;

on_both_stores!(
    registration_needs_approval,
    sessions_need_csrf_for_writes_and_expire,
    api_tokens_act_for_their_user,
    roles_limit_what_users_do,
    teams_do_not_see_each_other,
    objects_validate_and_detect_stale_writes,
    references_are_checked_and_protected,
    kubernetes_objects_are_read_only,
    bad_requests_get_json_errors,
    reports_are_scoped_to_the_team,
    health_audit_and_reload,
    outbound_postbacks_are_listed_per_team,
);

fn destination(name: &str) -> Value {
    json!({"name": name, "url": format!("https://offer.example/{name}?cid={{clickId}}"), "enabled": true,
           "healthCheck": {"enabled": false}})
}

async fn registration_needs_approval(api: Api) {
    let register = |email: &str, password: &str| json!({"email": email, "password": password, "name": "Ann"});
    let (status, body) =
        api.anonymous(Method::POST, "/auth/register", Some(register("Ann@Example.org", "long-enough-1"))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!((body["status"].as_str(), body["email"].as_str()), (Some("pending"), Some("ann@example.org")));
    assert!(body.get("passwordHash").is_none(), "the hash never leaves the API");
    let id = body["id"].as_str().unwrap().to_owned();

    let (status, body) =
        api.anonymous(Method::POST, "/auth/register", Some(register("ann@example.org", "long-enough-2"))).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "duplicate"));
    let (status, body) =
        api.anonymous(Method::POST, "/auth/register", Some(register("not-an-email", "long-enough-1"))).await;
    assert_eq!(
        (status, body["error"]["fields"][0]["path"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("email"))
    );
    let (status, body) =
        api.anonymous(Method::POST, "/auth/register", Some(register("bob@example.org", "short"))).await;
    assert_eq!(
        (status, body["error"]["fields"][0]["path"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("password"))
    );

    // Pending: the right password still gets 403, a wrong one 401.
    let login = json!({"email": "ann@example.org", "password": "long-enough-1"});
    let (status, body) = api.anonymous(Method::POST, "/auth/login", Some(login.clone())).await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "notApproved"));
    let (status, _) = api
        .anonymous(Method::POST, "/auth/login", Some(json!({"email": "ann@example.org", "password": "wrong-password"})))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let admin = api.admin().await;
    let (status, users) = admin.get("/users").await;
    assert_eq!(status, StatusCode::OK);
    assert!(users["items"].as_array().unwrap().iter().any(|u| u["id"] == id.as_str() && u["status"] == "pending"));
    let (status, body) = admin.post(&format!("/users/{id}/approve"), json!({"role": "manager"})).await;
    assert_eq!(
        (status, body["status"].as_str(), body["role"].as_str()),
        (StatusCode::OK, Some("approved"), Some("manager"))
    );
    let ann = api.login("ann@example.org", "long-enough-1").await;
    let (status, me) = ann.get("/auth/me").await;
    assert_eq!(
        (status, me["user"]["role"].as_str(), me["authenticatedBy"].as_str()),
        (StatusCode::OK, Some("manager"), Some("session"))
    );

    // Rejected later: the live session stops working at once, and logging in again is refused.
    let (status, _) = admin.post(&format!("/users/{id}/reject"), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = ann.get("/auth/me").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the session was ended");
    let (status, body) = api.anonymous(Method::POST, "/auth/login", Some(login)).await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "rejected"));
    // Nobody approves themselves.
    let admin_id = admin.user["id"].as_str().unwrap().to_owned();
    let (status, _) = admin.post(&format!("/users/{admin_id}/reject"), json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT);
}

async fn sessions_need_csrf_for_writes_and_expire(api: Api) {
    let admin = api.admin().await;
    let (status, body) = admin.without_csrf().post("/destinations", destination("a")).await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "csrf"));
    let wrong = match &admin.auth {
        support::Auth::Cookie { cookie, .. } => {
            Session { auth: support::Auth::Cookie { cookie: cookie.clone(), csrf: "forged".into() }, ..admin.clone() }
        }
        support::Auth::Bearer(_) => unreachable!(),
    };
    let (status, _) = wrong.post("/destinations", destination("a")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, list) = admin.get("/destinations").await;
    assert_eq!((status, list["items"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)), "nothing was written");
    admin.create("/destinations", destination("a")).await;

    // An expired session answers 401 and is gone.
    let sessions = api.store.find(Collection::Sessions, &Default::default()).await.unwrap();
    assert_eq!(sessions.len(), 1);
    let mut session = sessions[0].clone();
    session["expiresAt"] = json!("2020-01-01T00:00:00.000Z");
    let sid = session["id"].as_str().unwrap().to_owned();
    api.store.replace(Collection::Sessions, &sid, None, session).await.unwrap();
    let (status, body) = admin.get("/auth/me").await;
    assert_eq!((status, code(&body)), (StatusCode::UNAUTHORIZED, "sessionExpired"));

    // Logging out ends the session; without credentials everything but login is 401.
    let admin = api.admin().await;
    let (status, _) = admin.post("/auth/logout", json!({})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = admin.get("/auth/me").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = api.anonymous(Method::GET, "/campaigns", None).await;
    assert_eq!((status, code(&body)), (StatusCode::UNAUTHORIZED, "unauthorized"));
}

async fn api_tokens_act_for_their_user(api: Api) {
    let admin = api.admin().await;
    let (status, made) = admin.post("/auth/tokens", json!({"name": "ci", "expiresInDays": 30})).await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let token = made["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("tfx_"));
    let bot = admin.with_token(&token);
    // No CSRF token needed with a bearer token.
    let id = bot.create("/destinations", destination("by-token")).await;
    let (status, me) = bot.get("/auth/me").await;
    assert_eq!((status, me["authenticatedBy"].as_str()), (StatusCode::OK, Some("token")));
    let (_, list) = admin.get("/auth/tokens").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert!(!list.to_string().contains(&token), "the secret is shown once");
    let stored = api.store.find(Collection::ApiTokens, &Default::default()).await.unwrap();
    assert!(!stored[0].to_string().contains(&token), "only a hash is stored");

    let (status, _) = bot.get(&format!("/destinations/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    let token_id = made["id"].as_str().unwrap();
    let (status, _) = admin.delete(&format!("/auth/tokens/{token_id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = bot.get("/auth/me").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "revoked");
    let (status, _) = admin.with_token("tfx_made-up").get("/auth/me").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = admin.post("/auth/tokens", json!({"name": "x", "expiresInDays": 0})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

async fn roles_limit_what_users_do(api: Api) {
    let viewer = api.user("viewer@example.org", "viewer", None).await;
    let manager = api.user("manager@example.org", "manager", None).await;
    let id = manager.create("/destinations", destination("m")).await;
    let (status, _) = viewer.get(&format!("/destinations/{id}")).await;
    assert_eq!(status, StatusCode::OK, "viewers read");
    let (status, body) = viewer.post("/destinations", destination("v")).await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    let (status, _) = viewer.put(&format!("/destinations/{id}"), destination("v")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = viewer.delete(&format!("/destinations/{id}")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = viewer.post("/cache/reload", json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = manager.get("/users").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "only admins manage users");
    let viewer_id = viewer.user["id"].as_str().unwrap();
    let (status, _) = manager.post(&format!("/users/{viewer_id}/approve"), json!({"role": "admin"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = viewer.get(&format!("/users/{viewer_id}")).await;
    assert_eq!(status, StatusCode::OK, "users read themselves");

    // Viewers see that a network has a token, not the token.
    let template = manager.create("/postback-templates", json!({"name": "t", "params": {"clickId": "c"}})).await;
    let network = manager
        .create(
            "/affiliate-networks",
            json!({"key": "n1", "name": "N", "postbackTemplateId": template,
            "auth": {"mode": "token", "token": "network-secret"}}),
        )
        .await;
    let (_, seen) = viewer.get(&format!("/affiliate-networks/{network}")).await;
    assert_eq!(seen["auth"]["token"], "********");
    let (_, listed) = viewer.get("/affiliate-networks").await;
    assert!(!listed.to_string().contains("network-secret"), "{listed}");
    let (_, managed) = manager.get(&format!("/affiliate-networks/{network}")).await;
    assert_eq!(managed["auth"]["token"], "network-secret", "managers configure networks");
}

async fn teams_do_not_see_each_other(api: Api) {
    let admin = api.admin().await;
    let (status, team) = admin.post("/teams", json!({"name": "Team B"})).await;
    assert_eq!(status, StatusCode::CREATED, "{team}");
    let team_b = team["id"].as_str().unwrap().to_owned();
    let other = api.user("b@example.org", "manager", Some(&team_b)).await;
    let theirs = other.create("/destinations", destination("b-offer")).await;
    let ours = admin.create("/destinations", destination("a-offer")).await;

    for path in [format!("/destinations/{theirs}"), format!("/destinations/{theirs}/health")] {
        let (status, _) = admin.get(&path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    let (status, _) = admin.put(&format!("/destinations/{theirs}"), destination("x")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = admin.delete(&format!("/destinations/{theirs}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = admin.get("/destinations").await;
    let ids: Vec<_> = list["items"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [ours.as_str()]);
    let (_, list) = other.get("/destinations").await;
    assert_eq!(list["items"][0]["teamId"].as_str(), Some(team_b.as_str()));
    // Nor can one team's stream use another team's destination.
    let campaign = other.create("/campaigns", json!({"key": "b-camp", "name": "B", "status": "active"})).await;
    let (status, body) = other
        .post("/streams", json!({"campaignId": campaign, "name": "s", "destinations": [{"destinationId": ours}]}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["fields"][0]["path"], "destinations[0].destinationId");
    let (_, teams) = other.get("/teams").await;
    assert_eq!(teams["items"].as_array().unwrap().len(), 1, "non-admins see their own team");
}

async fn objects_validate_and_detect_stale_writes(api: Api) {
    let admin = api.admin().await;
    let source = admin.create("/traffic-sources", json!({"key": "src1", "name": "Source 1"})).await;
    let campaign = json!({"key": "summer-sale", "name": "Summer sale", "status": "active",
        "trafficSourceId": source, "trafficbackUrl": "https://fallback.example/tb",
        "costModel": {"type": "cpc", "value": "0.05", "currency": "USD"}});
    let (status, created) = admin.post("/campaigns", campaign.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!((created["version"].as_u64(), created["key"].as_str()), (Some(1), Some("summer-sale")));
    assert_eq!(created["costModel"]["value"], "0.05", "money stays a decimal string");
    for field in ["createdAt", "updatedAt", "teamId"] {
        assert!(created[field].is_string(), "{field}");
    }

    // Same key again: 409; a bad spec: 422 with every field path.
    let (status, body) = admin.post("/campaigns", campaign.clone()).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "duplicate"));
    let (status, body) =
        admin.post("/campaigns", json!({"key": "Bad Key!", "name": "", "trafficbackUrl": "ftp://x"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let paths: Vec<_> =
        body["error"]["fields"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    for p in ["key", "name", "trafficbackUrl"] {
        assert!(paths.contains(&p), "{p} in {paths:?}");
    }
    let (status, body) = admin.post("/campaigns", json!({"key": "k", "name": "n", "status": "sometimes"})).await;
    assert_eq!(
        (status, body["error"]["fields"][0]["path"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("status"))
    );

    // Optimistic concurrency: version 1 was read; one writer wins, the stale one gets 409.
    let mut first = campaign.clone();
    first["name"] = json!("Summer sale 2");
    first["version"] = json!(1);
    let (status, updated) = admin.put(&format!("/campaigns/{id}"), first.clone()).await;
    assert_eq!(
        (status, updated["version"].as_u64(), updated["name"].as_str()),
        (StatusCode::OK, Some(2), Some("Summer sale 2"))
    );
    first["name"] = json!("Lost update");
    let (status, body) = admin.put(&format!("/campaigns/{id}"), first).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "versionConflict"));
    let (status, body) = admin
        .send_with(Method::PUT, &format!("/campaigns/{id}"), Some(campaign.clone()), &[("if-match", "\"1\"")])
        .await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "versionConflict"), "If-Match works too");
    let (_, now) = admin.get(&format!("/campaigns/{id}")).await;
    assert_eq!(now["name"], "Summer sale 2", "the stale writes changed nothing");

    // Lists page with a cursor and filter.
    for i in 0..3 {
        admin.create("/campaigns", json!({"key": format!("c{i}"), "name": "n", "status": "paused"})).await;
    }
    let (_, page) = admin.get("/campaigns?limit=2").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cursor = page["nextCursor"].as_str().unwrap();
    let (_, rest) = admin.get(&format!("/campaigns?limit=2&cursor={cursor}")).await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 2);
    assert!(rest.get("nextCursor").is_none(), "the last page has no cursor");
    let (_, paused) = admin.get("/campaigns?status=paused").await;
    assert_eq!(paused["items"].as_array().unwrap().len(), 3);
    let (status, _) = admin.get("/streams?enabled=maybe").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // The audit trail names who did what.
    let (_, audit) = admin.get(&format!("/audit-log?objectId={id}")).await;
    let actions: Vec<_> = audit["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["update", "create"], "newest first");
    assert_eq!(audit["items"][0]["actorEmail"], support::ADMIN_EMAIL);
    assert_eq!(audit["items"][0]["objectVersion"], 2);
}

async fn references_are_checked_and_protected(api: Api) {
    let admin = api.admin().await;
    let (status, body) = admin.post("/campaigns", json!({"key": "c", "name": "c", "trafficSourceId": "nope"})).await;
    assert_eq!(
        (status, body["error"]["fields"][0]["path"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("trafficSourceId"))
    );
    let campaign = admin.create("/campaigns", json!({"key": "c", "name": "c"})).await;
    let a = admin.create("/destinations", destination("a")).await;
    let b = admin.create("/destinations", destination("b")).await;
    let stream = admin
        .create(
            "/streams",
            json!({"campaignId": campaign, "name": "DE mobile", "priority": 10, "selection": "weighted",
            "destinations": [{"destinationId": a, "weight": 70}, {"destinationId": b, "weight": 30}]}),
        )
        .await;
    let (status, body) = admin.delete(&format!("/destinations/{b}")).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "inUse"));
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("DE mobile") && message.contains(&stream), "{message}");
    let (status, _) = admin.delete(&format!("/campaigns/{campaign}")).await;
    assert_eq!(status, StatusCode::CONFLICT, "a campaign with streams");

    let template = admin
        .create(
            "/postback-templates",
            json!({"name": "Generic",
        "params": {"clickId": "clickid", "transactionId": "txid", "payout": "payout"}}),
        )
        .await;
    admin
        .create(
            "/affiliate-networks",
            json!({"key": "neta", "name": "Network A", "postbackTemplateId": template,
        "auth": {"mode": "token", "token": "secret-token"}}),
        )
        .await;
    let (status, _) = admin.delete(&format!("/postback-templates/{template}")).await;
    assert_eq!(status, StatusCode::CONFLICT);

    let (status, _) = admin.delete(&format!("/streams/{stream}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = admin.delete(&format!("/destinations/{b}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = admin.get(&format!("/destinations/{b}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = admin.send_with(Method::DELETE, &format!("/destinations/{a}"), None, &[("if-match", "7")]).await;
    assert_eq!(status, StatusCode::CONFLICT, "a stale delete");
}

async fn kubernetes_objects_are_read_only(api: Api) {
    let admin = api.admin().await;
    let doc = json!({"name": "from-git", "url": "https://offer.example/k", "enabled": true,
        "managedBy": "kubernetes", "teamId": "default"});
    let stored = api.store.insert(Collection::Destinations, doc).await.unwrap();
    let id = stored["id"].as_str().unwrap();
    let (status, got) = admin.get(&format!("/destinations/{id}")).await;
    assert_eq!((status, got["managedBy"].as_str()), (StatusCode::OK, Some("kubernetes")));
    let (status, body) = admin.put(&format!("/destinations/{id}"), destination("changed")).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "managedByKubernetes"));
    let (status, _) = admin.delete(&format!("/destinations/{id}")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    // A body cannot claim to be managed by Kubernetes.
    let mut claim = destination("claim");
    claim["managedBy"] = json!("kubernetes");
    let (_, created) = admin.post("/destinations", claim).await;
    assert!(created.get("managedBy").is_none(), "{created}");
}

async fn bad_requests_get_json_errors(api: Api) {
    let admin = api.admin().await;
    let raw = |body: &'static str, ct: &'static str| {
        let admin = admin.clone();
        async move {
            let support::Auth::Cookie { cookie, csrf } = &admin.auth else { unreachable!() };
            let resp = admin
                .http
                .post(format!("{}/campaigns", admin.base))
                .header("cookie", cookie)
                .header("x-csrf-token", csrf)
                .header("content-type", ct)
                .body(body)
                .send()
                .await
                .unwrap();
            support::read(resp).await
        }
    };
    let (status, body) = raw("{not json", "application/json").await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "badJson"));
    let (status, body) = raw("key=a", "application/x-www-form-urlencoded").await;
    assert_eq!((status, code(&body)), (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupportedMediaType"));
    let (status, body) = raw("[]", "application/json").await;
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid"));
    let (status, body) = admin.get("/no-such-thing").await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "notFound"));
    let (status, _) = admin.get("/campaigns?limit=0").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = admin.get("/campaigns/does-not-exist").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = admin.get("/reports/overview?tz=Mars/Base").await;
    assert_eq!((status, body["error"]["fields"][0]["path"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("tz")));
    let (status, body) = admin.get("/reports/overview?from=2025-02-01&to=2025-01-01").await;
    assert_eq!((status, body["error"]["fields"][0]["path"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("from")));
    let (status, _) = admin.get("/reports/nonsense").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = admin.get("/campaigns").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "nothing bad was stored");
}

fn click(id: &str, team: &str, campaign: &str, cost: &str, ts: i64) -> Event {
    Event::Click(ClickEvent {
        click_id: id.into(),
        ts,
        campaign_id: campaign.into(),
        team_id: team.into(),
        country: "DE".into(),
        cost: cost.parse().unwrap(),
        currency: "USD".into(),
        is_unique: true,
        ..Default::default()
    })
}

async fn reports_are_scoped_to_the_team(api: Api) {
    let admin = api.admin().await;
    let ts = chrono::Utc::now().timestamp_millis();
    let ours = api
        .store
        .insert(Collection::Campaigns, json!({"key": "ours", "name": "Ours", "teamId": "default"}))
        .await
        .unwrap();
    let ours = ours["id"].as_str().unwrap().to_owned();
    api.analytics
        .insert_events(vec![
            click("k1", "default", &ours, "0.10", ts),
            click("k2", "default", &ours, "0.10", ts),
            click("k3", "other-team", "theirs", "5.00", ts),
            Event::Conversion(ConversionEvent {
                conversion_id: "v1".into(),
                ts,
                revision: 1,
                network_id: "n".into(),
                transaction_id: "t1".into(),
                click_id: "k1".into(),
                click_ts: ts,
                status: ConversionStatus::Approved,
                payout: "1.50".parse().unwrap(),
                currency: "USD".into(),
                revenue: "1.50".parse().unwrap(),
                campaign_id: ours.clone(),
                team_id: "default".into(),
                attributed: true,
                ..Default::default()
            }),
            Event::PostbackLog(PostbackLogEvent {
                id: "p1".into(),
                ts,
                network_id: "n".into(),
                network_key: "neta".into(),
                team_id: "default".into(),
                outcome: "accepted".into(),
                http_status: 200,
                transaction_id: "t1".into(),
                ..Default::default()
            }),
        ])
        .await
        .unwrap();
    let (status, overview) = admin.get("/reports/overview").await;
    assert_eq!(status, StatusCode::OK, "{overview}");
    assert_eq!(
        overview,
        json!({"clicks": 2, "uniqueClicks": 2, "conversions": 1, "pendingConversions": 0, "rejectedConversions": 0,
               "revenue": "1.50", "cost": "0.20", "profit": "1.30", "roi": "6.5"})
    );
    let (_, daily) = admin.get("/reports/daily?tz=Europe/Berlin").await;
    assert_eq!(daily["rows"].as_array().unwrap().len(), 7, "a week, empty days included");
    assert_eq!(daily["totals"]["clicks"], 2);
    let (_, by_campaign) = admin.get("/reports/campaigns").await;
    assert_eq!(by_campaign["rows"][0]["key"]["campaignId"].as_str(), Some(ours.as_str()));
    assert_eq!(by_campaign["totals"]["clicks"], 2);
    let (_, countries) = admin.get("/reports/countries").await;
    assert_eq!(countries["rows"][0]["key"]["country"], "DE");
    for name in ["streams", "destinations", "traffic-sources", "sub1", "trafficback", "health", "ingestion-errors"] {
        let (status, body) = admin.get(&format!("/reports/{name}")).await;
        assert_eq!(status, StatusCode::OK, "{name}: {body}");
    }
    let (_, logs) = admin.get("/postback-logs?outcome=accepted").await;
    assert_eq!((logs["total"].as_u64(), logs["rows"][0]["transactionId"].as_str()), (Some(1), Some("t1")));
    let (_, none) = admin.get("/postback-logs?outcome=rejected").await;
    assert_eq!(none["total"], 0);

    // Another team sees none of it; ingestion errors are for admins.
    let (status, team) = admin.post("/teams", json!({"name": "Other"})).await;
    assert_eq!(status, StatusCode::CREATED);
    let other = api.user("o@example.org", "manager", team["id"].as_str()).await;
    let (_, theirs) = other.get("/reports/overview").await;
    assert_eq!(theirs["clicks"], 0);
    let (_, logs) = other.get("/postback-logs").await;
    assert_eq!(logs["total"], 0);
    let (status, _) = other.get("/ingestion-errors").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = admin.get("/ingestion-errors?limit=5").await;
    assert_eq!(status, StatusCode::OK);
}

/// A one-shot HTTP server answering 204 to every request.
async fn offer_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf).await;
                let _ = conn.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n").await;
            });
        }
    });
    format!("http://{addr}/offer")
}

async fn health_audit_and_reload(api: Api) {
    let admin = api.admin().await;
    let url = offer_server().await;
    let id = admin
        .create("/destinations", json!({"name": "local", "url": format!("{url}?c={{clickId}}"), "enabled": true}))
        .await;
    // Loopback is refused unless allowed in settings.
    let (status, check) = admin.post(&format!("/destinations/{id}/healthcheck"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{check}");
    assert_eq!(check["ok"], false);
    assert!(check["error"].as_str().unwrap().contains("loopback"), "{check}");
    let (status, health) = admin.get(&format!("/destinations/{id}/health")).await;
    assert_eq!((status, health["healthy"].as_bool()), (StatusCode::OK, Some(true)), "never checked on schedule");

    let before = api.store.config_revision().await.unwrap();
    let (status, reloaded) = admin.post("/cache/reload", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(reloaded["revision"].as_str(), Some(before.as_str()));
    assert_eq!(reloaded["revision"].as_str(), Some(api.store.config_revision().await.unwrap().as_str()));
    // Every write bumps the revision too.
    let (_, got) = admin.get(&format!("/destinations/{id}")).await;
    let mut body = got.clone();
    body["name"] = json!("renamed");
    let (status, _) = admin.put(&format!("/destinations/{id}"), body).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(api.store.config_revision().await.unwrap(), reloaded["revision"].as_str().unwrap());
}

#[tokio::test]
async fn a_manual_health_check_reaches_allowed_private_targets() {
    let settings = traffoflex_api::ApiSettings {
        health_policy: traffoflex_dataplane::health::probe::AddressPolicy { allow_private: true },
        ..Default::default()
    };
    let api = Api::sqlite_with(settings).await;
    let admin = api.admin().await;
    let url = offer_server().await;
    let id = admin.create("/destinations", json!({"name": "local", "url": url, "enabled": true})).await;
    let (status, check) = admin.post(&format!("/destinations/{id}/healthcheck"), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((check["ok"].as_bool(), check["httpStatus"].as_u64()), (Some(true), Some(204)), "{check}");
}

#[tokio::test]
async fn repeated_failed_logins_lock_the_account() {
    let api = Api::sqlite().await;
    let wrong = json!({"email": support::ADMIN_EMAIL, "password": "wrong-password"});
    for _ in 0..5 {
        let (status, _) = api.anonymous(Method::POST, "/auth/login", Some(wrong.clone())).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let right = json!({"email": support::ADMIN_EMAIL, "password": support::ADMIN_PASSWORD});
    let (status, body) = api.anonymous(Method::POST, "/auth/login", Some(right)).await;
    assert_eq!((status, code(&body)), (StatusCode::TOO_MANY_REQUESTS, "locked"), "even the right password waits");
}

#[tokio::test]
async fn too_many_attempts_from_one_address_are_refused() {
    let settings = traffoflex_api::ApiSettings { attempts_per_minute: 3, ..Default::default() };
    let api = Api::sqlite_with(settings).await;
    let wrong = json!({"email": "nobody@example.org", "password": "wrong-password"});
    for _ in 0..3 {
        let (status, _) = api.anonymous(Method::POST, "/auth/login", Some(wrong.clone())).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, body) = api.anonymous(Method::POST, "/auth/login", Some(wrong)).await;
    assert_eq!((status, code(&body)), (StatusCode::TOO_MANY_REQUESTS, "rateLimited"));
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_client_has_its_own_login_budget() {
    let settings = traffoflex_api::ApiSettings {
        attempts_per_minute: 2,
        trusted_proxies: traffoflex_dataplane::traffic::visitor::TrustedProxies::parse("127.0.0.1").unwrap(),
        ..Default::default()
    };
    let api = Api::sqlite_with(settings).await;
    let attempt = |client: &'static str| {
        let req = api
            .http
            .post(format!("{}/auth/login", api.base))
            .header("x-forwarded-for", client)
            .json(&json!({"email": "nobody@example.org", "password": "wrong-password"}));
        async move { req.send().await.unwrap().status() }
    };
    for client in ["203.0.113.1", "203.0.113.1", "203.0.113.2", "203.0.113.2"] {
        assert_eq!(attempt(client).await, StatusCode::UNAUTHORIZED, "{client}");
    }
    assert_eq!(attempt("203.0.113.1").await, StatusCode::TOO_MANY_REQUESTS, "the first client is over its budget");
    assert_eq!(attempt("203.0.113.3").await, StatusCode::UNAUTHORIZED, "another client is not");
}

#[tokio::test]
async fn every_documented_operation_is_served() {
    let api = Api::sqlite().await;
    let admin = api.admin().await;
    let doc = traffoflex_api::openapi::document();
    let mut count = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, _) in item.as_object().unwrap() {
            let concrete = path.strip_prefix("/api/v1").unwrap().replace("{id}", "no-such-id");
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let body = matches!(m, Method::POST | Method::PUT).then(|| json!({}));
            let (status, body) = admin.send(m.clone(), &concrete, body).await;
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            let unrouted = status == StatusCode::NOT_FOUND
                && body["error"]["message"].as_str().is_some_and(|m| m.starts_with("no such API endpoint"));
            assert!(!unrouted, "{method} {path} is documented but not routed");
            assert!(status.as_u16() < 500, "{method} {path}: {status} {body}");
            count += 1;
        }
    }
    assert!(count >= 50, "{count} operations");
    let (status, served) = api.anonymous(Method::GET, "/openapi.json", None).await;
    assert_eq!((status, &served), (StatusCode::OK, doc), "public, and the same document");
}

async fn outbound_postbacks_are_listed_per_team(api: Api) {
    let admin = api.admin().await;
    let job = |conversion: &str, team: &str, status: &str| {
        json!({"conversionId": conversion, "target": "trafficSource:s1#r1", "url": "https://source.example/pb?x=1",
               "status": status, "conversionStatus": "approved", "revision": 1, "teamId": team, "attempts": 1,
               "nextAttemptAt": 0, "log": [{"number": 1, "at": 1, "httpStatus": 200, "latencyMillis": 3}]})
    };
    for doc in [job("c1", "default", "delivered"), job("c2", "default", "failed"), job("c3", "elsewhere", "failed")] {
        api.store.insert(Collection::OutboundPostbacks, doc).await.unwrap();
    }
    let (status, page) = admin.get("/outbound-postbacks").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let ids: Vec<_> = page["items"].as_array().unwrap().iter().map(|j| j["conversionId"].as_str().unwrap()).collect();
    assert_eq!(ids, ["c2", "c1"], "newest first, this team only");
    assert_eq!(page["items"][1]["log"][0]["httpStatus"], 200, "the delivery log is shown");
    let (_, failed) = admin.get("/outbound-postbacks?status=failed").await;
    assert_eq!(failed["items"].as_array().unwrap().len(), 1);
    let (_, one) = admin.get("/outbound-postbacks?conversionId=c1&limit=1").await;
    assert_eq!(one["items"][0]["status"], "delivered");
    let (status, _) = admin.get("/outbound-postbacks?status=lost").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}
