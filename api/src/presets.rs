//! Network presets and the link builder: `GET /network-presets`, `POST /network-presets/{presetId}/apply`
//! (a postback template and an affiliate network set up in one step) and `GET /affiliate-networks/{id}/links`
//! (the destination URL to route to and the postback URL to paste into the network).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use axum::extract::{Path, Query as QueryParams, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use reqwest::Url;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use traffoflex_crds::{AffiliateNetworkSpec, AuthMode, ConversionStatus, PostbackParams, PostbackTemplateSpec};

use crate::ApiState;
use crate::auth::{Principal, Role, secrets};
use crate::error::{ApiError, ApiResult};
use crate::objects::{
    AffiliateNetworks, Campaigns, JsonBody, PostbackTemplates, REDACTED, create_object, load, location, undo_create,
};
use crate::users::Items;

pub(crate) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/network-presets", get(list))
        .route("/network-presets/{preset_id}/apply", post(apply))
        .route("/affiliate-networks/{id}/links", get(links))
}

/// A ready-made setup for a kind of affiliate network: how its offer links take our click ID, how its
/// postbacks name their parameters, what its statuses mean, and how it authenticates.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPreset {
    /// What to pass to `/network-presets/{presetId}/apply`, and the network's `preset`.
    pub id: String,
    pub name: String,
    pub description: String,
    /// How the offer link carries our click ID.
    pub offer: OfferParams,
    /// The postback template the preset creates.
    pub template: PostbackTemplateSpec,
    /// What the network writes in its postback URL for each parameter: its own macros (substituted per
    /// conversion) or fixed values.
    pub network_macros: PostbackParams,
    /// How the network's postbacks authenticate: `token` (a shared parameter), `hmac` or `none`.
    pub auth_mode: AuthMode,
    /// The parameter carrying the token (`authMode: token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_param: Option<String>,
}

/// The parameters of an offer link.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OfferParams {
    /// The parameter the network passes back in its postback, set to our `{clickId}`.
    pub click_id_param: String,
    /// More parameters set on the offer link, to our macros (e.g. `s1` = `{sub1}`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_params: BTreeMap<String, String>,
}

fn params(names: [&str; 5]) -> PostbackParams {
    let [click_id, transaction_id, payout, currency, status] = names.map(str::to_owned);
    PostbackParams {
        click_id,
        transaction_id: Some(transaction_id),
        payout: Some(payout),
        currency: Some(currency),
        status: Some(status),
        event_type: None,
    }
}

fn status_map(pairs: &[(&str, ConversionStatus)]) -> BTreeMap<String, ConversionStatus> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

/// The built-in presets.
pub fn presets() -> &'static [NetworkPreset] {
    use ConversionStatus::{Approved, Pending, Rejected};
    static PRESETS: OnceLock<Vec<NetworkPreset>> = OnceLock::new();
    PRESETS.get_or_init(|| {
        vec![
            NetworkPreset {
                id: "generic".into(),
                name: "Generic S2S".into(),
                description: "Any network with server-to-server postbacks: the offer link takes our click ID in \
                              `subid`, the postback sends it back in `clickid` with `txid`, `payout`, `currency` \
                              and `status` (1 or approved, 0 or rejected, pending), and a shared token."
                    .into(),
                offer: OfferParams { click_id_param: "subid".into(), extra_params: BTreeMap::new() },
                template: PostbackTemplateSpec {
                    name: "Generic S2S".into(),
                    params: params(["clickid", "txid", "payout", "currency", "status"]),
                    status_map: status_map(&[
                        ("1", Approved),
                        ("approved", Approved),
                        ("0", Rejected),
                        ("rejected", Rejected),
                        ("pending", Pending),
                    ]),
                    default_status: Approved,
                },
                network_macros: params(["{subid}", "{txid}", "{payout}", "{currency}", "{status}"]),
                auth_mode: AuthMode::Token,
                token_param: Some("token".into()),
            },
            NetworkPreset {
                id: "offer-platform".into(),
                name: "Offer platform (aff_sub, transaction_id)".into(),
                description: "Networks run on the common affiliate-platform software: the offer link takes our \
                              click ID in `aff_sub`, the postback returns `{aff_sub}`, `{transaction_id}`, \
                              `{payout}`, `{currency}` and a status word (approved, pending, rejected or \
                              declined), with a shared `key`."
                    .into(),
                offer: OfferParams { click_id_param: "aff_sub".into(), extra_params: BTreeMap::new() },
                template: PostbackTemplateSpec {
                    name: "Offer platform".into(),
                    params: params(["aff_sub", "transaction_id", "payout", "currency", "status"]),
                    status_map: status_map(&[
                        ("approved", Approved),
                        ("pending", Pending),
                        ("rejected", Rejected),
                        ("declined", Rejected),
                    ]),
                    default_status: Approved,
                },
                network_macros: params(["{aff_sub}", "{transaction_id}", "{payout}", "{currency}", "{status}"]),
                auth_mode: AuthMode::Token,
                token_param: Some("key".into()),
            },
            NetworkPreset {
                id: "smartlink-cpa".into(),
                name: "Smartlink CPA (cid, sum; one conversion per click)".into(),
                description: "Smartlink networks whose postback knows only the click (`{cid}`) and the amount \
                              (`{sum}`): the click ID doubles as the transaction ID, so each click converts at \
                              most once; every postback is an approved sale in USD; SubIDs s1-s4 carry our \
                              sub1-sub4; a shared `secret`."
                    .into(),
                offer: OfferParams {
                    click_id_param: "cid".into(),
                    extra_params: (1..=4).map(|i| (format!("s{i}"), format!("{{sub{i}}}"))).collect(),
                },
                template: PostbackTemplateSpec {
                    name: "Smartlink CPA".into(),
                    params: params(["click_id", "transaction_id", "payout", "currency", "status"]),
                    status_map: status_map(&[("approved", Approved)]),
                    default_status: Approved,
                },
                network_macros: params(["{cid}", "{cid}", "{sum}", "USD", "approved"]),
                auth_mode: AuthMode::Token,
                token_param: Some("secret".into()),
            },
        ]
    })
}

fn preset(id: &str) -> Option<&'static NetworkPreset> {
    presets().iter().find(|p| p.id == id)
}

async fn list(_principal: Principal) -> Json<Items<NetworkPreset>> {
    Json(Items { items: presets().to_vec() })
}

/// `POST /network-presets/{presetId}/apply`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplyPresetRequest {
    /// The new network's key (`/postback/{key}`): lowercase letters, digits and dashes.
    pub key: String,
    /// The new network's name.
    pub name: String,
    /// The shared token its postbacks carry (`authMode: token`); a random one when absent.
    #[serde(default)]
    pub token: Option<String>,
    /// The new template's name; default: the network's name and the preset's.
    #[serde(default)]
    pub template_name: Option<String>,
}

/// What applying a preset created.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppliedPreset<T = Value, N = Value> {
    pub preset: String,
    pub postback_template: T,
    pub affiliate_network: N,
}

fn no_preset(id: &str) -> ApiError {
    let known: Vec<&str> = presets().iter().map(|p| p.id.as_str()).collect();
    ApiError::not_found(format!("no network preset `{id}`; the presets are {}", known.join(", ")))
}

/// Creates the preset's postback template and a network using it, in the caller's team, each through the
/// same validation and audit as `POST /postback-templates` and `POST /affiliate-networks`.
async fn apply(
    State(state): State<Arc<ApiState>>,
    principal: Principal,
    Path(preset_id): Path<String>,
    JsonBody(body): JsonBody<ApplyPresetRequest>,
) -> ApiResult<Response> {
    principal.require(Role::Manager)?;
    let preset = preset(&preset_id).ok_or_else(|| no_preset(&preset_id))?;
    let mut template = preset.template.clone();
    template.name = match body.template_name.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
        Some(name) => name.to_owned(),
        None => {
            let named = format!("{} ({})", body.name.trim(), preset.template.name);
            if named.chars().count() <= 200 { named } else { preset.template.name.clone() }
        }
    };
    let mut auth = json!({"mode": preset.auth_mode});
    if preset.auth_mode == AuthMode::Token {
        auth["token"] = json!(body.token.clone().unwrap_or_else(secrets::random_token));
        auth["tokenParam"] = json!(preset.token_param);
    }
    let mut network = json!({"key": body.key, "name": body.name, "auth": auth, "preset": preset.id});
    // Check the network before creating anything (the template reference is the only thing not known yet),
    // so a bad key or name leaves nothing behind.
    let mut probe = network.clone();
    probe["postbackTemplateId"] = json!("pending");
    let probe: AffiliateNetworkSpec =
        traffoflex_crds::from_json_value(probe).map_err(|e| ApiError::invalid(vec![e]))?;
    let errors = traffoflex_crds::Validate::validate(&probe, traffoflex_crds::ValidationContext::Api);
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    let template_body = serde_json::to_value(&template).map_err(|e| ApiError::internal(e.to_string()))?;
    let (template_id, template_object) = create_object::<PostbackTemplates>(&state, &principal, template_body).await?;
    network["postbackTemplateId"] = json!(template_id);
    let (network_id, network_object) = match create_object::<AffiliateNetworks>(&state, &principal, network).await {
        Ok(created) => created,
        Err(e) => {
            undo_create::<PostbackTemplates>(&state, &principal, &template_id).await;
            return Err(e);
        }
    };
    state.config_changed().await;
    let answer = AppliedPreset {
        preset: preset.id.clone(),
        postback_template: template_object,
        affiliate_network: network_object,
    };
    let mut response = (StatusCode::CREATED, Json(answer)).into_response();
    if let Some(at) = location::<AffiliateNetworks>(&network_id) {
        response.headers_mut().insert(header::LOCATION, at);
    }
    Ok(response)
}

/// The links of an affiliate network.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkLinks {
    pub network_id: String,
    pub network_key: String,
    /// The preset the macros come from (`null`: the network names none; placeholders are used).
    pub preset: Option<String>,
    /// The parameter of the offer link that carries our click ID.
    pub offer_click_id_param: String,
    /// `offerUrl` with our `{clickId}` (and the preset's other macros) set: the URL to give the destination
    /// that sends visitors to this network. `null` without `offerUrl`.
    pub destination_url: Option<String>,
    /// The URL to paste into the network as its postback (GET) URL: `baseUrl` + `/postback/{key}` with the
    /// template's parameters set to the network's macros, and the token when the network uses one.
    pub postback_url: String,
    /// The campaign's tracking path (`/c/{key}`) on the traffic endpoint, when `campaignId` was given.
    pub campaign_path: Option<String>,
    /// What to check or do by hand.
    pub notes: Vec<String>,
}

/// An absolute `http(s)` URL, or 422 naming `field`.
fn http_url(field: &str, raw: &str) -> ApiResult<Url> {
    let invalid = |why: &str| ApiError::invalid_field(field, format!("{why}, e.g. https://example.com/path"));
    if raw.len() > 4096 {
        return Err(invalid("at most 4096 characters"));
    }
    let url = Url::parse(raw.trim()).map_err(|_| invalid("not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("an absolute http or https URL"));
    }
    Ok(url)
}

/// `url` (as typed) with `set` as its query parameters, replacing any of the same names and keeping the rest.
/// Values are written as they are, so `{macros}` stay readable.
fn with_params(url: &str, set: &[(String, String)]) -> String {
    let (rest, fragment) = url.split_once('#').map_or((url, None), |(r, f)| (r, Some(f)));
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut pairs: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| {
            let name = p.split_once('=').map_or(*p, |(n, _)| n);
            !set.iter().any(|(n, _)| n == name)
        })
        .map(str::to_owned)
        .collect();
    pairs.extend(set.iter().map(|(n, v)| format!("{n}={v}")));
    let mut out = path.to_owned();
    if !pairs.is_empty() {
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

/// Builds the network's links: `?baseUrl` (the public URL of the postback endpoint), `?offerUrl`,
/// `?campaignId`.
async fn links(
    State(state): State<Arc<ApiState>>,
    principal: Principal,
    Path(id): Path<String>,
    QueryParams(query): QueryParams<HashMap<String, String>>,
) -> ApiResult<Json<NetworkLinks>> {
    let doc = load::<AffiliateNetworks>(&state, &principal, &id).await?;
    let network: AffiliateNetworkSpec = serde_json::from_value(doc)
        .map_err(|e| ApiError::conflict("unusable", format!("AffiliateNetwork {id} cannot be read: {e}")))?;
    let no_template = || {
        ApiError::conflict(
            "noTemplate",
            format!("AffiliateNetwork {id} has no postback template in your team; set postbackTemplateId first"),
        )
    };
    let template_id = network.postback_template_id.clone().filter(|t| !t.is_empty()).ok_or_else(no_template)?;
    let template: PostbackTemplateSpec = match load::<PostbackTemplates>(&state, &principal, &template_id).await {
        Ok(doc) => serde_json::from_value(doc).map_err(|e| {
            ApiError::conflict("unusable", format!("PostbackTemplate {template_id} cannot be read: {e}"))
        })?,
        Err(e) if e.status == StatusCode::NOT_FOUND => return Err(no_template()),
        Err(e) => return Err(e),
    };
    let given = |name: &str| query.get(name).map(|s| s.trim()).filter(|s| !s.is_empty());
    let base = given("baseUrl").map(|raw| http_url("baseUrl", raw)).transpose()?;
    if base.as_ref().is_some_and(|b| b.query().is_some() || b.fragment().is_some()) {
        return Err(ApiError::invalid_field(
            "baseUrl",
            "a base URL without query or fragment, e.g. https://pb.example.com",
        ));
    }
    let offer = given("offerUrl").map(|raw| http_url("offerUrl", raw).map(|_| raw.to_owned())).transpose()?;
    let campaign_path = match given("campaignId") {
        None => None,
        Some(cid) => {
            let doc = load::<Campaigns>(&state, &principal, cid)
                .await
                .map_err(|_| ApiError::invalid_field("campaignId", format!("no campaign with ID {cid}")))?;
            Some(format!("/c/{}", doc.get("key").and_then(Value::as_str).unwrap_or_default()))
        }
    };
    let preset = network.preset.as_deref().and_then(preset);
    let mut notes = Vec::new();

    // The destination URL: the offer link carrying our click ID.
    let click_param = match preset {
        Some(p) => p.offer.click_id_param.clone(),
        None => {
            notes.push(format!(
                "this network names no preset: the offer link gets our click ID in `{}` (the template's click-ID \
                 parameter); use the parameter the network passes back in its postback",
                template.params.click_id
            ));
            template.params.click_id.clone()
        }
    };
    let mut offer_params = vec![(click_param.clone(), "{clickId}".to_owned())];
    if let Some(p) = preset {
        offer_params.extend(p.offer.extra_params.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    let destination_url = offer.map(|url| with_params(&url, &offer_params));
    if destination_url.is_none() {
        notes.push("pass offerUrl (the network's offer or smartlink URL) to get the destination URL".to_owned());
    }

    // The postback URL: the template's parameters set to the network's macros.
    let p = &template.params;
    let macros = preset.map(|pr| &pr.network_macros);
    let placeholder = |name: &str| format!("{{{name}}}");
    let mut pb: Vec<(String, String)> = Vec::new();
    pb.push((p.click_id.clone(), macros.map_or_else(|| placeholder(&p.click_id), |m| m.click_id.clone())));
    let optional = [
        (&p.transaction_id, macros.and_then(|m| m.transaction_id.as_ref())),
        (&p.payout, macros.and_then(|m| m.payout.as_ref())),
        (&p.currency, macros.and_then(|m| m.currency.as_ref())),
        (&p.status, macros.and_then(|m| m.status.as_ref())),
        (&p.event_type, macros.and_then(|m| m.event_type.as_ref())),
    ];
    for (name, network_macro) in optional {
        if let Some(name) = name {
            pb.push((name.clone(), network_macro.cloned().unwrap_or_else(|| placeholder(name))));
        }
    }
    if preset.is_none() {
        notes.push("replace each {…} value of the postback URL with the network's own macro for it".to_owned());
    }
    match network.auth.mode {
        AuthMode::Token => {
            let param = network.auth.token_param.clone().unwrap_or_else(|| "token".to_owned());
            let token = if principal.user.role < Role::Manager {
                notes.push("the token is hidden from viewers: ask a manager for the full postback URL".to_owned());
                REDACTED.to_owned()
            } else {
                network.auth.token.clone().unwrap_or_default()
            };
            pb.push((param, token));
        }
        AuthMode::Hmac => notes.push(
            "the network must sign each postback: header X-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of \
             \"<t>.<raw query or body>\"> with the network's secret"
                .to_owned(),
        ),
        AuthMode::None => notes.push(
            "postbacks are not authenticated: anyone who knows this URL can report conversions; set ipAllowlist \
             or a token"
                .to_owned(),
        ),
    }
    let root = base.map(|b| b.as_str().trim_end_matches('/').to_owned()).unwrap_or_default();
    if root.is_empty() {
        notes.push("pass baseUrl (the public URL of the postback endpoint) to get an absolute postback URL".to_owned());
    }
    let postback_url = with_params(&format!("{root}/postback/{}", network.key), &pb);
    Ok(Json(NetworkLinks {
        network_id: id,
        network_key: network.key,
        preset: preset.map(|p| p.id.clone()),
        offer_click_id_param: click_param,
        destination_url,
        postback_url,
        campaign_path,
        notes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use traffoflex_crds::{Validate, ValidationContext};

    #[test]
    fn presets_are_valid_templates_with_distinct_ids() {
        let mut ids: Vec<&str> = presets().iter().map(|p| p.id.as_str()).collect();
        assert!(ids.len() >= 3);
        for p in presets() {
            assert!(p.template.validate(ValidationContext::Api).is_empty(), "{}", p.id);
            assert!(!p.template.status_map.is_empty(), "{}", p.id);
        }
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), presets().len());
    }

    #[test]
    fn params_replace_their_namesakes_and_keep_the_rest() {
        let set = vec![("subid".to_owned(), "{clickId}".to_owned())];
        assert_eq!(
            with_params("https://o.example/a?x=1&subid=old#f", &set),
            "https://o.example/a?x=1&subid={clickId}#f"
        );
        assert_eq!(with_params("https://o.example/a", &set), "https://o.example/a?subid={clickId}");
        assert_eq!(with_params("https://o.example/a?", &set), "https://o.example/a?subid={clickId}");
    }
}
