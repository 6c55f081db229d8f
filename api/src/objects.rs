//! CRUD for the six configuration kinds, one generic implementation over [`ObjectKind`].
//!
//! Every write: the body parses into the kind's spec (422 with the field path otherwise), passes the shared
//! validation of `traffoflex-crds` in the API context, and refers only to objects that exist in the caller's
//! team (422 naming the field). `PUT` and `DELETE` take the version the caller read (`version` in the body or
//! an `If-Match` header; 409 when it is stale), refuse objects mirrored from Kubernetes (409), and `DELETE`
//! refuses an object others still refer to (409 naming them). Each write is recorded in the audit trail and
//! bumps the configuration revision, so the data plane reloads.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Query as QueryParams, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use traffoflex_core::store::{Collection, Filter, Query};
use traffoflex_crds::{
    AffiliateNetworkSpec, CampaignSpec, DestinationSpec, FieldError, PostbackTemplateSpec, StreamSpec,
    TrafficSourceSpec, Validate, ValidationContext, from_json_value,
};

use crate::ApiState;
use crate::auth::{DEFAULT_TEAM, Principal, Role};
use crate::error::{ApiError, ApiResult};

/// Largest request body accepted, in bytes.
pub const MAX_BODY: usize = 1 << 20;
/// Default and largest page of a list.
pub const DEFAULT_LIMIT: u64 = 100;
pub const MAX_LIMIT: u64 = 1000;
/// The value of `managedBy` on objects mirrored from Kubernetes.
pub const MANAGED_BY_KUBERNETES: &str = "kubernetes";

/// Fields the store and the API own; a request body may carry them (they are ignored, but for `version`).
const ENVELOPE: [&str; 6] = ["id", "version", "createdAt", "updatedAt", "teamId", "managedBy"];

/// A JSON request body: malformed JSON -> 400, a body that does not fit `T` -> 422 with the field's path.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = body_bytes(req, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// A request body that must be JSON (checked by its content type and size; parsed by the handler).
pub struct RawJson(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        body_bytes(req, state).await.map(RawJson)
    }
}

/// The body of `req`, at most [`MAX_BODY`] bytes, which must be JSON when it says what it is.
async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> ApiResult<Bytes> {
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
        if !ct.starts_with("application/json") && !ct.contains("+json") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupportedMediaType",
                "send the body as application/json",
            ));
        }
    }
    let bytes = Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "tooLarge", format!("a body has at most {MAX_BODY} bytes"))
        } else {
            ApiError::bad_request(format!("the body could not be read: {e}"))
        }
    })?;
    if bytes.len() > MAX_BODY {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "tooLarge",
            format!("a body has at most {MAX_BODY} bytes"),
        ));
    }
    Ok(bytes)
}

/// Parses JSON text into `T`: 400 when it is not JSON, 422 (with the path) when it does not fit.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        let mut err = ApiError::bad_request(format!("the body is not valid JSON: {e}"));
        err.code = "badJson";
        err
    })?;
    if !value.is_object() {
        return Err(ApiError::invalid_field("", "the body must be a JSON object"));
    }
    from_json_value(value).map_err(|e| ApiError::invalid(vec![e]))
}

/// One reference from an object to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Where in the body, e.g. `destinations[1].destinationId`.
    pub path: String,
    pub collection: Collection,
    pub id: String,
}

/// A list filter a kind accepts as a query parameter.
#[derive(Debug, Clone, Copy)]
pub struct ListFilter {
    /// The query parameter and the document field it compares (equality).
    pub name: &'static str,
    pub boolean: bool,
}

const fn text(name: &'static str) -> ListFilter {
    ListFilter { name, boolean: false }
}

const fn flag(name: &'static str) -> ListFilter {
    ListFilter { name, boolean: true }
}

/// One configuration kind served under `/{PATH}`.
pub trait ObjectKind: Send + Sync + 'static {
    type Spec: Validate + DeserializeOwned + Serialize + JsonSchema + Send + Sync;
    /// `Campaign`.
    const KIND: &'static str;
    /// `campaigns`.
    const PATH: &'static str;
    const COLLECTION: Collection;
    const FILTERS: &'static [ListFilter];
    /// Collections whose documents may refer to objects of this kind.
    const REFERRED_BY: &'static [Collection];
    /// The objects `spec` refers to.
    fn references(spec: &Self::Spec) -> Vec<Reference>;

    /// Hides what a viewer may not read in a rendered object (nothing, unless the kind holds secrets).
    fn redact(_object: &mut Value) {}
}

/// What a redacted secret reads as.
pub const REDACTED: &str = "********";

pub struct Campaigns;
pub struct Streams;
pub struct Destinations;
pub struct TrafficSources;
pub struct AffiliateNetworks;
pub struct PostbackTemplates;

impl ObjectKind for Campaigns {
    type Spec = CampaignSpec;
    const KIND: &'static str = "Campaign";
    const PATH: &'static str = "campaigns";
    const COLLECTION: Collection = Collection::Campaigns;
    const FILTERS: &'static [ListFilter] = &[text("key"), text("status"), text("trafficSourceId"), text("managedBy")];
    const REFERRED_BY: &'static [Collection] = &[Collection::Streams];
    fn references(spec: &CampaignSpec) -> Vec<Reference> {
        one("trafficSourceId", Collection::TrafficSources, spec.traffic_source_id.as_deref())
    }
}

impl ObjectKind for Streams {
    type Spec = StreamSpec;
    const KIND: &'static str = "Stream";
    const PATH: &'static str = "streams";
    const COLLECTION: Collection = Collection::Streams;
    const FILTERS: &'static [ListFilter] = &[text("campaignId"), flag("enabled"), text("managedBy")];
    const REFERRED_BY: &'static [Collection] = &[];
    fn references(spec: &StreamSpec) -> Vec<Reference> {
        let mut refs = one("campaignId", Collection::Campaigns, spec.campaign_id.as_deref());
        for (i, d) in spec.destinations.iter().enumerate() {
            if let Some(id) = d.destination_id.as_deref() {
                refs.extend(one(&format!("destinations[{i}].destinationId"), Collection::Destinations, Some(id)));
            }
        }
        refs
    }
}

impl ObjectKind for Destinations {
    type Spec = DestinationSpec;
    const KIND: &'static str = "Destination";
    const PATH: &'static str = "destinations";
    const COLLECTION: Collection = Collection::Destinations;
    const FILTERS: &'static [ListFilter] = &[flag("enabled"), text("managedBy")];
    const REFERRED_BY: &'static [Collection] = &[Collection::Streams];
    fn references(_: &DestinationSpec) -> Vec<Reference> {
        Vec::new()
    }
}

impl ObjectKind for TrafficSources {
    type Spec = TrafficSourceSpec;
    const KIND: &'static str = "TrafficSource";
    const PATH: &'static str = "traffic-sources";
    const COLLECTION: Collection = Collection::TrafficSources;
    const FILTERS: &'static [ListFilter] = &[text("key"), text("managedBy")];
    const REFERRED_BY: &'static [Collection] = &[Collection::Campaigns];
    fn references(_: &TrafficSourceSpec) -> Vec<Reference> {
        Vec::new()
    }
}

impl ObjectKind for AffiliateNetworks {
    type Spec = AffiliateNetworkSpec;
    const KIND: &'static str = "AffiliateNetwork";
    const PATH: &'static str = "affiliate-networks";
    const COLLECTION: Collection = Collection::AffiliateNetworks;
    const FILTERS: &'static [ListFilter] = &[text("key"), text("postbackTemplateId"), text("managedBy")];
    const REFERRED_BY: &'static [Collection] = &[];
    fn references(spec: &AffiliateNetworkSpec) -> Vec<Reference> {
        one("postbackTemplateId", Collection::PostbackTemplates, spec.postback_template_id.as_deref())
    }

    /// The network's token and HMAC secret authenticate its postbacks: viewers see that one is set, not it.
    fn redact(object: &mut Value) {
        if let Some(auth) = object.get_mut("auth").and_then(Value::as_object_mut) {
            for field in ["token", "secret"] {
                if let Some(v) = auth.get_mut(field).filter(|v| v.is_string()) {
                    *v = Value::from(REDACTED);
                }
            }
        }
    }
}

impl ObjectKind for PostbackTemplates {
    type Spec = PostbackTemplateSpec;
    const KIND: &'static str = "PostbackTemplate";
    const PATH: &'static str = "postback-templates";
    const COLLECTION: Collection = Collection::PostbackTemplates;
    const FILTERS: &'static [ListFilter] = &[text("managedBy")];
    const REFERRED_BY: &'static [Collection] = &[Collection::AffiliateNetworks];
    fn references(_: &PostbackTemplateSpec) -> Vec<Reference> {
        Vec::new()
    }
}

fn one(path: &str, collection: Collection, id: Option<&str>) -> Vec<Reference> {
    id.filter(|id| !id.is_empty())
        .map(|id| Reference { path: path.to_owned(), collection, id: id.to_owned() })
        .into_iter()
        .collect()
}

/// The references of a stored document of `coll`, whatever its kind (none for a document that does not
/// parse: it cannot be routed either).
fn references_of(coll: Collection, doc: &Value) -> Vec<Reference> {
    fn of<K: ObjectKind>(doc: &Value) -> Vec<Reference> {
        serde_json::from_value::<K::Spec>(doc.clone()).map(|s| K::references(&s)).unwrap_or_default()
    }
    match coll {
        Collection::Campaigns => of::<Campaigns>(doc),
        Collection::Streams => of::<Streams>(doc),
        Collection::AffiliateNetworks => of::<AffiliateNetworks>(doc),
        _ => Vec::new(),
    }
}

/// The routes of every kind.
pub(crate) fn routes() -> Router<Arc<ApiState>> {
    let mut router = Router::new();
    router = kind_routes::<Campaigns>(router);
    router = kind_routes::<Streams>(router);
    router = kind_routes::<Destinations>(router);
    router = kind_routes::<TrafficSources>(router);
    router = kind_routes::<AffiliateNetworks>(router);
    kind_routes::<PostbackTemplates>(router)
}

fn kind_routes<K: ObjectKind>(router: Router<Arc<ApiState>>) -> Router<Arc<ApiState>> {
    router
        .route(&format!("/{}", K::PATH), get(list::<K>).post(create::<K>))
        .route(&format!("/{}/{{id}}", K::PATH), get(read::<K>).put(update::<K>).delete(remove::<K>))
}

/// An object as the API answers it: the store's fields and the spec (documentation type).
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Object<S> {
    pub id: String,
    pub version: u64,
    pub created_at: String,
    pub updated_at: String,
    pub team_id: String,
    /// `kubernetes` for objects mirrored from custom resources (read-only here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<String>,
    #[serde(flatten)]
    pub spec: S,
}

/// A request body: the spec, plus for `PUT` the version the caller read.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ObjectInput<S> {
    /// The version this change is based on; a stale one answers 409.
    #[serde(default)]
    pub version: Option<u64>,
    #[serde(flatten)]
    pub spec: S,
}

/// A page of objects; pass `nextCursor` as `cursor` for the next one (absent on the last page).
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub items: Vec<T>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// How many items match the filters in all, over every page.
    pub total: u64,
}

/// What [`keyset_page`] found.
pub(crate) struct KeysetPage {
    pub docs: Vec<Value>,
    pub next_cursor: Option<String>,
    /// Documents matching the query's filter, on every page.
    pub total: u64,
}

/// Up to `limit` documents of `query` (in its order, which must be by `id`) after `cursor`, the cursor of the
/// next page when there is one, and how many documents match in all.
pub(crate) async fn keyset_page(
    state: &ApiState,
    coll: Collection,
    query: Query,
    limit: u64,
    cursor: Option<&String>,
) -> ApiResult<KeysetPage> {
    let total = state.store.count(coll, &query.filter).await?;
    let mut query = query.limit(limit + 1);
    if let Some(cursor) = cursor.filter(|c| !c.is_empty()) {
        query = query.after(cursor.as_str());
    }
    let mut docs = state.store.find(coll, &query).await?;
    let next_cursor = if docs.len() as u64 > limit {
        docs.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        docs.last().and_then(|d| d.get("id")).and_then(Value::as_str).map(str::to_owned)
    } else {
        None
    };
    Ok(KeysetPage { docs, next_cursor, total })
}

/// A list's `?limit`: 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] when absent.
pub(crate) fn list_limit(params: &HashMap<String, String>) -> ApiResult<u64> {
    match params.get("limit").map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => Ok(DEFAULT_LIMIT),
        Some(s) => s
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| ApiError::invalid_field("limit", format!("a whole number from 1 to {MAX_LIMIT}"))),
    }
}

fn team_of(doc: &Value) -> &str {
    doc.get("teamId").and_then(Value::as_str).unwrap_or(DEFAULT_TEAM)
}

fn managed_by_kubernetes(doc: &Value) -> bool {
    doc.get("managedBy").and_then(Value::as_str) == Some(MANAGED_BY_KUBERNETES)
}

/// A stored document as the API shows it: its spec re-serialised (so the answer always has the documented
/// shape) plus the envelope.
fn render<K: ObjectKind>(doc: Value) -> Value {
    let Value::Object(map) = doc else { return doc };
    let Ok(spec) = serde_json::from_value::<K::Spec>(Value::Object(map.clone())) else {
        return Value::Object(map);
    };
    let mut out = match serde_json::to_value(&spec) {
        Ok(Value::Object(o)) => o,
        _ => Map::new(),
    };
    for field in ENVELOPE {
        if let Some(v) = map.get(field) {
            out.insert(field.to_owned(), v.clone());
        }
    }
    out.entry("teamId").or_insert_with(|| Value::from(DEFAULT_TEAM));
    Value::Object(out)
}

/// A stored document as `principal` may see it: rendered, and redacted for viewers.
fn shown<K: ObjectKind>(principal: &Principal, doc: Value) -> Value {
    let mut object = render::<K>(doc);
    if principal.user.role < Role::Manager {
        K::redact(&mut object);
    }
    object
}

/// The document of `id` if it exists in the caller's team.
pub(crate) async fn load<K: ObjectKind>(state: &ApiState, principal: &Principal, id: &str) -> ApiResult<Value> {
    match state.store.get(K::COLLECTION, id).await? {
        Some(doc) if team_of(&doc) == principal.team() => Ok(doc),
        _ => Err(ApiError::not_found(format!("no {} {id}", K::KIND))),
    }
}

async fn list<K: ObjectKind>(
    State(state): State<Arc<ApiState>>,
    principal: Principal,
    QueryParams(params): QueryParams<HashMap<String, String>>,
) -> ApiResult<Json<Page<Value>>> {
    let limit = list_limit(&params)?;
    let mut filter = Filter::all().eq("teamId", principal.team());
    for f in K::FILTERS {
        let Some(raw) = params.get(f.name) else { continue };
        let value = if f.boolean {
            match raw.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => return Err(ApiError::invalid_field(f.name, "true or false")),
            }
        } else {
            Value::from(raw.as_str())
        };
        filter = filter.eq(f.name, value);
    }
    let page = keyset_page(&state, K::COLLECTION, Query::filtered(filter), limit, params.get("cursor")).await?;
    let items = page.docs.into_iter().map(|d| shown::<K>(&principal, d)).collect();
    Ok(Json(Page { items, next_cursor: page.next_cursor, total: page.total }))
}

async fn read<K: ObjectKind>(
    State(state): State<Arc<ApiState>>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(shown::<K>(&principal, load::<K>(&state, &principal, &id).await?)))
}

/// Parses and checks a write's body; returns the document to store and the version the caller gave.
async fn prepare<K: ObjectKind>(
    state: &ApiState,
    principal: &Principal,
    body: &[u8],
) -> ApiResult<(Value, Option<u64>)> {
    prepare_value::<K>(state, principal, parse_json(body)?).await
}

/// [`prepare`] for a body already parsed.
async fn prepare_value<K: ObjectKind>(
    state: &ApiState,
    principal: &Principal,
    value: Value,
) -> ApiResult<(Value, Option<u64>)> {
    let Value::Object(mut map) = value else {
        return Err(ApiError::invalid_field("", "the body must be a JSON object"));
    };
    let version = match map.get("version") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| ApiError::invalid_field("version", "a whole number"))?),
    };
    for field in ENVELOPE {
        map.remove(field);
    }
    let spec: K::Spec = from_json_value(Value::Object(map)).map_err(|e| ApiError::invalid(vec![e]))?;
    let mut errors = spec.validate(ValidationContext::Api);
    for r in K::references(&spec) {
        let exists = state.store.get(r.collection, &r.id).await?.is_some_and(|d| team_of(&d) == principal.team());
        if !exists {
            errors.push(FieldError::new(r.path, format!("no {} with ID {}", kind_name(r.collection), r.id)));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    let mut doc = serde_json::to_value(&spec).map_err(|e| ApiError::internal(format!("cannot serialise: {e}")))?;
    doc["teamId"] = Value::from(principal.team());
    Ok((doc, version))
}

fn kind_name(coll: Collection) -> &'static str {
    match coll {
        Collection::Campaigns => "campaign",
        Collection::Streams => "stream",
        Collection::Destinations => "destination",
        Collection::TrafficSources => "traffic source",
        Collection::AffiliateNetworks => "affiliate network",
        Collection::PostbackTemplates => "postback template",
        other => other.name(),
    }
}

/// The version a write expects: the body's `version`, else an `If-Match` header (`"3"` or `3`).
fn expected_version(body_version: Option<u64>, headers: &HeaderMap) -> ApiResult<Option<u64>> {
    if body_version.is_some() {
        return Ok(body_version);
    }
    match headers.get(header::IF_MATCH) {
        None => Ok(None),
        Some(v) => {
            let text = v.to_str().unwrap_or_default().trim().trim_start_matches("W/").trim_matches('"');
            text.parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request("If-Match must carry the object's version, e.g. \"3\""))
        }
    }
}

async fn create<K: ObjectKind>(
    State(state): State<Arc<ApiState>>,
    principal: Principal,
    RawJson(body): RawJson,
) -> ApiResult<Response> {
    principal.require(Role::Manager)?;
    let (doc, _) = prepare::<K>(&state, &principal, &body).await?;
    let (id, object) = insert_prepared::<K>(&state, &principal, doc).await?;
    state.config_changed().await;
    let mut response = (StatusCode::CREATED, Json(object)).into_response();
    if let Some(location) = location::<K>(&id) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Where an object of `K` is read: `/api/v1/{PATH}/{id}`.
pub(crate) fn location<K: ObjectKind>(id: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("/api/v1/{}/{id}", K::PATH)).ok()
}

async fn insert_prepared<K: ObjectKind>(
    state: &ApiState,
    principal: &Principal,
    doc: Value,
) -> ApiResult<(String, Value)> {
    let stored = state.store.insert(K::COLLECTION, doc).await?;
    let id = stored.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
    audit(state, principal, "create", K::COLLECTION, &id, 1).await;
    Ok((id, render::<K>(stored)))
}

/// Creates an object of `K` in the caller's team from a body, exactly as `POST /{PATH}` does (the same
/// validation, reference checks and audit entry); answers its ID and the object as rendered. The caller
/// bumps the configuration revision once its writes are done.
pub(crate) async fn create_object<K: ObjectKind>(
    state: &ApiState,
    principal: &Principal,
    body: Value,
) -> ApiResult<(String, Value)> {
    principal.require(Role::Manager)?;
    let (doc, _) = prepare_value::<K>(state, principal, body).await?;
    insert_prepared::<K>(state, principal, doc).await
}

/// Deletes an object `create_object` made moments ago, when what it was part of failed (audited).
pub(crate) async fn undo_create<K: ObjectKind>(state: &ApiState, principal: &Principal, id: &str) {
    match state.store.delete(K::COLLECTION, id, None).await {
        Ok(()) => audit(state, principal, "delete", K::COLLECTION, id, 0).await,
        Err(e) => {
            tracing::error!(error = %e, collection = K::COLLECTION.name(), id, "left behind after a failed write")
        }
    }
}

fn read_only<K: ObjectKind>(id: &str) -> ApiError {
    ApiError::conflict(
        "managedByKubernetes",
        format!("{} {id} is managed by Kubernetes: change its custom resource instead", K::KIND),
    )
}

async fn update<K: ObjectKind>(
    State(state): State<Arc<ApiState>>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawJson(body): RawJson,
) -> ApiResult<Json<Value>> {
    principal.require(Role::Manager)?;
    let existing = load::<K>(&state, &principal, &id).await?;
    if managed_by_kubernetes(&existing) {
        return Err(read_only::<K>(&id));
    }
    let (doc, body_version) = prepare::<K>(&state, &principal, &body).await?;
    let expected = expected_version(body_version, &headers)?;
    let stored = state.store.replace(K::COLLECTION, &id, expected, doc).await?;
    let version = stored.get("version").and_then(Value::as_u64).unwrap_or_default();
    audit(&state, &principal, "update", K::COLLECTION, &id, version).await;
    state.config_changed().await;
    Ok(Json(render::<K>(stored)))
}

async fn remove<K: ObjectKind>(
    State(state): State<Arc<ApiState>>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    principal.require(Role::Manager)?;
    let existing = load::<K>(&state, &principal, &id).await?;
    if managed_by_kubernetes(&existing) {
        return Err(read_only::<K>(&id));
    }
    let mut users = Vec::new();
    for coll in K::REFERRED_BY {
        let docs = state.store.find(*coll, &Query::filtered(Filter::all().eq("teamId", principal.team()))).await?;
        for doc in docs {
            if references_of(*coll, &doc).iter().any(|r| r.collection == K::COLLECTION && r.id == id) {
                let name = doc.get("name").and_then(Value::as_str).unwrap_or_default();
                let did = doc.get("id").and_then(Value::as_str).unwrap_or_default();
                users.push(format!("{} `{name}` ({did})", kind_name(*coll)));
            }
        }
    }
    if !users.is_empty() {
        return Err(ApiError::conflict(
            "inUse",
            format!("{} {id} is still used by {}; change or delete those first", K::KIND, users.join(", ")),
        ));
    }
    let expected = expected_version(None, &headers)?;
    state.store.delete(K::COLLECTION, &id, expected).await?;
    audit(&state, &principal, "delete", K::COLLECTION, &id, 0).await;
    state.config_changed().await;
    Ok(StatusCode::NO_CONTENT)
}

/// An entry of the audit trail.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub id: String,
    /// When (RFC 3339).
    pub created_at: String,
    pub actor_id: String,
    pub actor_email: String,
    /// `create`, `update`, `delete`, `approve`, `reject`.
    pub action: String,
    /// The collection, e.g. `campaigns`.
    pub collection: String,
    pub object_id: String,
    /// The object's version after the change (0 for a delete).
    pub object_version: u64,
    pub team_id: String,
}

/// Records who did what to which object. A failure is logged, not answered: the change itself is done.
pub(crate) async fn audit(
    state: &ApiState,
    principal: &Principal,
    action: &str,
    coll: Collection,
    object_id: &str,
    version: u64,
) {
    let entry = json!({
        "actorId": principal.user.id, "actorEmail": principal.user.email, "action": action,
        "collection": coll.name(), "objectId": object_id, "objectVersion": version, "teamId": principal.team(),
    });
    if let Err(e) = state.store.insert(Collection::AuditLog, entry).await {
        tracing::error!(error = %e, action, collection = coll.name(), object_id, "audit entry not written");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_references_name_their_paths() {
        let spec: StreamSpec = serde_json::from_value(json!({
            "campaignId": "c1", "name": "s", "selection": "weighted",
            "destinations": [{"destinationId": "d1", "weight": 1}, {"destinationId": "d2", "weight": 2}]
        }))
        .unwrap();
        let refs = Streams::references(&spec);
        let paths: Vec<_> = refs.iter().map(|r| (r.path.as_str(), r.id.as_str())).collect();
        assert_eq!(
            paths,
            [("campaignId", "c1"), ("destinations[0].destinationId", "d1"), ("destinations[1].destinationId", "d2")]
        );
    }

    #[test]
    fn if_match_carries_the_version() {
        let mut h = HeaderMap::new();
        assert_eq!(expected_version(None, &h), Ok(None));
        h.insert(header::IF_MATCH, HeaderValue::from_static("\"3\""));
        assert_eq!(expected_version(None, &h), Ok(Some(3)));
        assert_eq!(expected_version(Some(5), &h), Ok(Some(5)), "the body wins");
        h.insert(header::IF_MATCH, HeaderValue::from_static("*"));
        assert!(expected_version(None, &h).is_err());
    }

    #[test]
    fn bodies_fail_with_paths() {
        assert_eq!(parse_json::<CampaignSpec>(b"{").unwrap_err().status, StatusCode::BAD_REQUEST);
        assert_eq!(parse_json::<CampaignSpec>(b"[1]").unwrap_err().status, StatusCode::UNPROCESSABLE_ENTITY);
        let e = parse_json::<CampaignSpec>(br#"{"key":"a","name":"n","status":"maybe"}"#).unwrap_err();
        assert_eq!(e.fields[0].path, "status");
    }
}
