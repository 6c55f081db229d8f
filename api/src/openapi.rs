//! The OpenAPI 3.1 document at `/api/v1/openapi.json`, generated from the code: every operation is listed
//! once below, and its request and response schemas come from the Rust types the handlers use (JSON Schema
//! 2020-12 from `schemars`, which is OpenAPI 3.1's schema dialect). A test walks the document against the
//! router, so an operation cannot be documented without existing or exist without being documented.

use std::sync::OnceLock;

use axum::Json;
use axum::http::header;
use axum::response::IntoResponse;
use schemars::Schema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};
use traffoflex_core::analytics::{Grouped, IngestionErrorPage, Metrics, PostbackLogPage};
use traffoflex_crds::{AffiliateNetworkSpec, PostbackTemplateSpec};

use crate::auth::User;
use crate::error::ErrorBody;
use crate::login_code::{CodeRequest, CodeRequested, CodeVerify};
use crate::objects::{
    AffiliateNetworks, AuditEntry, Campaigns, Destinations, Object, ObjectInput, ObjectKind, Page, PostbackTemplates,
    Streams, TrafficSources,
};
use crate::ops::{CheckResult, HealthView, OutboundDelivery, ReloadResult};
use crate::presets::{AppliedPreset, ApplyPresetRequest, NetworkLinks, NetworkPreset, presets};
use crate::reports::{DailyReport, HealthReport};
use crate::users::{
    ApiToken, ApproveRequest, Items, LoginRequest, LoginResponse, MeResponse, NewApiToken, RegisterRequest, Team,
    TeamRequest, TokenRequest,
};

/// One documented operation.
struct Op {
    method: &'static str,
    path: String,
    tag: &'static str,
    summary: String,
    /// Needs a session or an API token.
    auth: bool,
    params: Vec<Value>,
    body: Option<Schema>,
    /// Success status, description and schema (`None`: no body).
    ok: (u16, &'static str, Option<Schema>),
}

/// A stable operation ID from the method and path: `get /campaigns/{id}` -> `getCampaignsById`.
fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_owned();
    for segment in path.split(['/', '-']).filter(|s| !s.is_empty()) {
        if segment.starts_with('{') {
            id.push_str("ById");
            continue;
        }
        let mut chars = segment.chars();
        if let Some(first) = chars.next() {
            id.extend(first.to_uppercase());
            id.push_str(chars.as_str());
        }
    }
    id
}

/// The links of a `201 Created` answer: the created object's ID feeds the operations on `{path}/{id}`.
fn created_links(ops: &[Op], path: &str) -> Option<Value> {
    let item = format!("{path}/{{id}}");
    let mut links = Map::new();
    for op in ops.iter().filter(|o| o.path == item) {
        links.insert(
            op.method.to_owned(),
            json!({"operationId": operation_id(op.method, &op.path), "parameters": {"id": "$response.body#/id"}}),
        );
    }
    (!links.is_empty()).then_some(Value::Object(links))
}

fn query(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
}

fn path_id(what: &str) -> Value {
    json!({"name": "id", "in": "path", "required": true, "description": format!("The {what}'s ID."),
           "schema": {"type": "string"}})
}

fn report_params() -> Vec<Value> {
    vec![
        query("from", "First local day (YYYY-MM-DD); default: 6 days before `to`.", json!({"type": "string"})),
        query("to", "Last local day (YYYY-MM-DD); default: today in `tz`.", json!({"type": "string"})),
        query("tz", "IANA time zone whose local days are counted; default UTC.", json!({"type": "string"})),
        query("campaignId", "Only this campaign.", json!({"type": "string"})),
    ]
}

fn paging_params() -> Vec<Value> {
    vec![
        query("limit", "Rows per page (1-1000, default 100).", json!({"type": "integer", "minimum": 1})),
        query("offset", "Rows to skip.", json!({"type": "integer", "minimum": 0})),
    ]
}

fn kind_ops<K: ObjectKind>(g: &mut SchemaGenerator, ops: &mut Vec<Op>) {
    let tag = K::KIND;
    let base = format!("/{}", K::PATH);
    let item = format!("{base}/{{id}}");
    let mut list_params = vec![
        query("limit", "Objects per page (1-1000, default 100).", json!({"type": "integer", "minimum": 1})),
        query("cursor", "The `nextCursor` of the previous page.", json!({"type": "string"})),
    ];
    for f in K::FILTERS {
        let schema = if f.boolean { json!({"type": "boolean"}) } else { json!({"type": "string"}) };
        list_params.push(query(f.name, &format!("Only objects whose `{}` equals this.", f.name), schema));
    }
    let object = g.subschema_for::<Object<K::Spec>>();
    let input = g.subschema_for::<ObjectInput<K::Spec>>();
    ops.push(Op {
        method: "get",
        path: base.clone(),
        tag,
        summary: format!("List {} objects of your team", K::KIND),
        auth: true,
        params: list_params,
        body: None,
        ok: (200, "A page of objects.", Some(g.subschema_for::<Page<Object<K::Spec>>>())),
    });
    ops.push(Op {
        method: "post",
        path: base,
        tag,
        summary: format!("Create a {} (manager or admin)", K::KIND),
        auth: true,
        params: vec![],
        body: Some(input.clone()),
        ok: (201, "Created.", Some(object.clone())),
    });
    ops.push(Op {
        method: "get",
        path: item.clone(),
        tag,
        summary: format!("Read a {}", K::KIND),
        auth: true,
        params: vec![path_id(K::KIND)],
        body: None,
        ok: (200, "The object.", Some(object.clone())),
    });
    ops.push(Op {
        method: "put",
        path: item.clone(),
        tag,
        summary: format!("Replace a {}; send the `version` you read (409 when stale)", K::KIND),
        auth: true,
        params: vec![path_id(K::KIND)],
        body: Some(input),
        ok: (200, "Replaced.", Some(object)),
    });
    ops.push(Op {
        method: "delete",
        path: item,
        tag,
        summary: format!("Delete a {} (409 while other objects use it)", K::KIND),
        auth: true,
        params: vec![path_id(K::KIND)],
        body: None,
        ok: (204, "Deleted.", None),
    });
}

fn operations(g: &mut SchemaGenerator) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut op = |method, path: &str, tag, summary: &str, auth, params, body, ok| {
        ops.push(Op { method, path: path.to_owned(), tag, summary: summary.to_owned(), auth, params, body, ok });
    };
    op(
        "post",
        "/auth/register",
        "Auth",
        "Register; the account is pending until an admin approves it",
        false,
        vec![],
        Some(g.subschema_for::<RegisterRequest>()),
        (201, "Registered (pending).", Some(g.subschema_for::<User>())),
    );
    op(
        "post",
        "/auth/login",
        "Auth",
        "Log in: sets the session cookie and answers the CSRF token for writes",
        false,
        vec![],
        Some(g.subschema_for::<LoginRequest>()),
        (200, "Logged in.", Some(g.subschema_for::<LoginResponse>())),
    );
    op(
        "post",
        "/auth/otp/request",
        "Auth",
        "Ask for a one-time login code by e-mail (when enabled; 404 otherwise). The answer is the same whether \
         or not an account has the address; 429 while a code sent to it is still valid",
        false,
        vec![],
        Some(g.subschema_for::<CodeRequest>()),
        (202, "Requested.", Some(g.subschema_for::<CodeRequested>())),
    );
    op(
        "post",
        "/auth/otp/verify",
        "Auth",
        "Log in with a one-time code: sets the session cookie and answers the CSRF token, as /auth/login does",
        false,
        vec![],
        Some(g.subschema_for::<CodeVerify>()),
        (200, "Logged in.", Some(g.subschema_for::<LoginResponse>())),
    );
    op("post", "/auth/logout", "Auth", "End this session", true, vec![], None, (204, "Logged out.", None));
    op(
        "get",
        "/auth/me",
        "Auth",
        "Who is calling",
        true,
        vec![],
        None,
        (200, "The caller.", Some(g.subschema_for::<MeResponse>())),
    );
    op(
        "post",
        "/auth/tokens",
        "Auth",
        "Create an API token (shown once) for scripts",
        true,
        vec![],
        Some(g.subschema_for::<TokenRequest>()),
        (201, "The new token.", Some(g.subschema_for::<NewApiToken>())),
    );
    op(
        "get",
        "/auth/tokens",
        "Auth",
        "Your API tokens",
        true,
        vec![],
        None,
        (200, "Your tokens.", Some(g.subschema_for::<Items<ApiToken>>())),
    );
    op(
        "delete",
        "/auth/tokens/{id}",
        "Auth",
        "Revoke one of your API tokens",
        true,
        vec![path_id("token")],
        None,
        (204, "Revoked.", None),
    );
    op(
        "get",
        "/users",
        "Users",
        "Every user (admin)",
        true,
        vec![],
        None,
        (200, "The users.", Some(g.subschema_for::<Items<User>>())),
    );
    op(
        "get",
        "/users/{id}",
        "Users",
        "One user (admin, or yourself)",
        true,
        vec![path_id("user")],
        None,
        (200, "The user.", Some(g.subschema_for::<User>())),
    );
    op(
        "post",
        "/users/{id}/approve",
        "Users",
        "Approve a user, optionally with a role and team (admin)",
        true,
        vec![path_id("user")],
        Some(g.subschema_for::<ApproveRequest>()),
        (200, "Approved.", Some(g.subschema_for::<User>())),
    );
    op(
        "post",
        "/users/{id}/reject",
        "Users",
        "Reject a user and end their sessions and tokens (admin)",
        true,
        vec![path_id("user")],
        None,
        (200, "Rejected.", Some(g.subschema_for::<User>())),
    );
    op(
        "get",
        "/teams",
        "Users",
        "Teams (admins see all, others their own)",
        true,
        vec![],
        None,
        (200, "The teams.", Some(g.subschema_for::<Items<Team>>())),
    );
    op(
        "post",
        "/teams",
        "Users",
        "Create a team (admin)",
        true,
        vec![],
        Some(g.subschema_for::<TeamRequest>()),
        (201, "Created.", Some(g.subschema_for::<Team>())),
    );
    kind_ops::<Campaigns>(g, &mut ops);
    kind_ops::<Streams>(g, &mut ops);
    kind_ops::<Destinations>(g, &mut ops);
    kind_ops::<TrafficSources>(g, &mut ops);
    kind_ops::<AffiliateNetworks>(g, &mut ops);
    kind_ops::<PostbackTemplates>(g, &mut ops);
    let preset_ids: Vec<&str> = presets().iter().map(|p| p.id.as_str()).collect();
    ops.push(Op {
        method: "get",
        path: "/network-presets".into(),
        tag: "AffiliateNetwork",
        summary: "Built-in network presets: offer click-ID parameter, postback parameters and macros, status map, \
                  auth mode"
            .into(),
        auth: true,
        params: vec![],
        body: None,
        ok: (200, "The presets.", Some(g.subschema_for::<Items<NetworkPreset>>())),
    });
    ops.push(Op {
        method: "post",
        path: "/network-presets/{presetId}/apply".into(),
        tag: "AffiliateNetwork",
        summary: "Create a PostbackTemplate and an AffiliateNetwork from a preset (manager or admin)".into(),
        auth: true,
        params: vec![json!({"name": "presetId", "in": "path", "required": true, "description": "The preset's ID.",
                            "schema": {"type": "string", "enum": preset_ids}})],
        body: Some(g.subschema_for::<ApplyPresetRequest>()),
        ok: (
            201,
            "Created.",
            Some(g.subschema_for::<AppliedPreset<Object<PostbackTemplateSpec>, Object<AffiliateNetworkSpec>>>()),
        ),
    });
    ops.push(Op {
        method: "get",
        path: "/affiliate-networks/{id}/links".into(),
        tag: "AffiliateNetwork",
        summary: "Link builder: the destination URL carrying our click ID and the postback URL to paste into the \
                  network"
            .into(),
        auth: true,
        params: vec![
            path_id("affiliate network"),
            query(
                "baseUrl",
                "Public URL of the postback endpoint, e.g. `https://pb.example.com`; without it the postback URL \
                 is a path.",
                json!({"type": "string"}),
            ),
            query("offerUrl", "The network's offer or smartlink URL.", json!({"type": "string"})),
            query("campaignId", "A campaign whose tracking path to answer too.", json!({"type": "string"})),
        ],
        body: None,
        ok: (200, "The links.", Some(g.subschema_for::<NetworkLinks>())),
    });
    let mut report = |name: &str, summary: &str, schema: Schema, extra: Vec<Value>| {
        let mut params = report_params();
        params.extend(extra);
        ops.push(Op {
            method: "get",
            path: format!("/reports/{name}"),
            tag: "Reports",
            summary: summary.to_owned(),
            auth: true,
            params,
            body: None,
            ok: (200, "The report.", Some(schema)),
        });
    };
    let grouped = g.subschema_for::<Grouped>();
    report("overview", "Totals over the range", g.subschema_for::<Metrics>(), vec![]);
    report("daily", "One row per local day", g.subschema_for::<DailyReport>(), vec![]);
    for (name, what) in [
        ("campaigns", "campaign"),
        ("streams", "stream"),
        ("destinations", "destination"),
        ("traffic-sources", "traffic source"),
        ("countries", "country"),
        ("sub1", "sub1"),
    ] {
        report(name, &format!("Metrics per {what}"), grouped.clone(), vec![]);
    }
    report("trafficback", "Trafficback clicks per campaign", grouped, vec![]);
    report("health", "Destination health checks", g.subschema_for::<HealthReport>(), vec![]);
    report(
        "ingestion-errors",
        "Messages the ingester could not store",
        g.subschema_for::<IngestionErrorPage>(),
        paging_params(),
    );
    let mut log_params = report_params();
    log_params.extend(paging_params());
    for (name, what) in [
        ("networkId", "affiliate network ID"),
        ("outcome", "outcome (accepted, duplicate, updated, rejected, error)"),
        ("clickId", "click ID"),
        ("transactionId", "transaction ID"),
    ] {
        log_params.push(query(name, &format!("Only this {what}."), json!({"type": "string"})));
    }
    let mut op = |method, path: &str, tag, summary: &str, params, ok| {
        ops.push(Op {
            method,
            path: path.to_owned(),
            tag,
            summary: summary.to_owned(),
            auth: true,
            params,
            body: None,
            ok,
        });
    };
    op(
        "get",
        "/postback-logs",
        "Logs",
        "Every postback request received, newest first",
        log_params,
        (200, "A page of postback logs.", Some(g.subschema_for::<PostbackLogPage>())),
    );
    let mut ingestion = report_params();
    ingestion.extend(paging_params());
    op(
        "get",
        "/ingestion-errors",
        "Logs",
        "Messages the ingester could not store (admin)",
        ingestion,
        (200, "A page of ingestion errors.", Some(g.subschema_for::<IngestionErrorPage>())),
    );
    let mut health = vec![path_id("destination")];
    health.extend(report_params());
    op(
        "get",
        "/destinations/{id}/health",
        "Destination",
        "A destination's health state and check history",
        health,
        (200, "Its health.", Some(g.subschema_for::<HealthView>())),
    );
    op(
        "post",
        "/destinations/{id}/healthcheck",
        "Destination",
        "Check a destination now (manager or admin)",
        vec![path_id("destination")],
        (200, "What the check saw.", Some(g.subschema_for::<CheckResult>())),
    );
    op(
        "get",
        "/audit-log",
        "Logs",
        "Who changed what, newest first (manager or admin)",
        vec![
            query("objectId", "Only changes to this object.", json!({"type": "string"})),
            query("limit", "Entries per page (1-1000, default 100).", json!({"type": "integer", "minimum": 1})),
            query("cursor", "The `nextCursor` of the previous page.", json!({"type": "string"})),
        ],
        (200, "A page of audit entries.", Some(g.subschema_for::<Page<AuditEntry>>())),
    );
    op(
        "get",
        "/outbound-postbacks",
        "Logs",
        "Outbound postbacks to traffic sources with their delivery logs, newest first",
        vec![
            query("status", "pending, delivered or failed.", json!({"type": "string"})),
            query("conversionId", "Only this conversion's.", json!({"type": "string"})),
            query("limit", "Entries per page (1-1000, default 100).", json!({"type": "integer", "minimum": 1})),
            query("cursor", "The `nextCursor` of the previous page.", json!({"type": "string"})),
        ],
        (200, "A page of outbound postbacks.", Some(g.subschema_for::<Page<OutboundDelivery>>())),
    );
    op(
        "post",
        "/cache/reload",
        "Operations",
        "Make every traffic and postback process reload its configuration now (manager or admin)",
        vec![],
        (200, "The new configuration revision.", Some(g.subschema_for::<ReloadResult>())),
    );
    ops
}

fn build() -> Value {
    let mut settings = SchemaSettings::draft2020_12();
    settings.definitions_path = "/components/schemas".into();
    let mut g = settings.into_generator();
    let error = g.subschema_for::<ErrorBody>();
    let ops = operations(&mut g);
    let mut paths = Map::new();
    let links: Vec<Option<Value>> =
        ops.iter().map(|op| if op.ok.0 == 201 { created_links(&ops, &op.path) } else { None }).collect();
    for (op, links) in ops.into_iter().zip(links) {
        let mut responses = Map::new();
        let mut ok = json!({"description": op.ok.1});
        if let Some(schema) = op.ok.2 {
            ok["content"] = json!({"application/json": {"schema": schema}});
        }
        if let Some(links) = links {
            ok["links"] = links;
        }
        responses.insert(op.ok.0.to_string(), ok);
        responses.insert(
            "default".into(),
            json!({"description": "An error: `{\"error\":{\"code\",\"message\",\"fields\"}}`.",
                   "content": {"application/json": {"schema": error}}}),
        );
        let mut operation = json!({
            "operationId": operation_id(op.method, &op.path), "tags": [op.tag], "summary": op.summary, "parameters": op.params, "responses": responses,
        });
        if let Some(body) = op.body {
            operation["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": body}}});
        }
        if !op.auth {
            operation["security"] = json!([]);
        }
        let entry = paths.entry(format!("/api/v1{}", op.path)).or_insert_with(|| json!({}));
        entry[op.method] = operation;
    }
    let schemas = g.take_definitions(true);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "TraffoFlex API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Admin and automation API of TraffoFlex. Authenticate with the session cookie from \
                POST /api/v1/auth/login (send its csrfToken as X-CSRF-Token on writes) or with an API token \
                as `Authorization: Bearer tfx_…`. Money is a decimal string. Errors are \
                {\"error\":{\"code\",\"message\",\"fields\"}}."
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}, {"sessionCookie": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "description": "An API token (tfx_…)."},
                "sessionCookie": {"type": "apiKey", "in": "cookie", "name": crate::auth::SESSION_COOKIE}
            }
        }
    })
}

/// The document (built once).
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

/// `GET /api/v1/openapi.json`, public.
pub(crate) async fn serve() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "public, max-age=60")], Json(document()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for part in text.split("\"$ref\":\"").skip(1) {
            let target = &part[..part.find('"').unwrap()];
            let name = target.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("{target}"));
            assert!(schemas.contains_key(name), "{target} is not defined");
        }
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["paths"]["/api/v1/campaigns/{id}"]["put"]["requestBody"].is_object());
        let created = &doc["paths"]["/api/v1/campaigns"]["post"]["responses"]["201"]["links"];
        assert_eq!(created["put"]["operationId"], "putCampaignsById");
        let mut all = Vec::new();
        for item in doc["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                all.push(op["operationId"].as_str().unwrap().to_owned());
            }
        }
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "operation IDs are unique");
    }
}
