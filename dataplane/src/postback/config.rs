//! The postback service's configuration: affiliate networks by key with their templates and parsed
//! allowlists, the routing snapshot used to attribute click IDs and the outbound postback routes — loaded
//! from the store, swapped atomically (`ArcSwap`), reloaded when the store's revision changes (polled, and on
//! `POST /internal/reload`). While the store is unreachable the last snapshot keeps serving.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use ipnet::IpNet;
use traffoflex_core::store::{Collection, ConfigStore, StoreError};
use traffoflex_crds::{AffiliateNetworkSpec, CampaignSpec, PostbackTemplateSpec, TrafficSourceSpec};

use super::auth::parse_allowlist;
use super::outbound::OutboundRoutes;
use crate::live::{Live, Snapshot};
use crate::routing::RoutingSnapshot;
use crate::traffic::config::{documents, load as load_routing};

/// One affiliate network, ready for postbacks.
#[derive(Debug)]
pub struct NetworkEntry {
    pub id: String,
    pub spec: AffiliateNetworkSpec,
    /// The network's template; `None` when it names none that exists (the MVP's aliases are used then).
    pub template: Option<PostbackTemplateSpec>,
    pub allowlist: Vec<IpNet>,
}

/// One loaded configuration.
#[derive(Debug, Default)]
pub struct PostbackSnapshot {
    /// The store's revision this snapshot was built from; empty before the first load.
    pub revision: String,
    pub networks: HashMap<String, Arc<NetworkEntry>>,
    /// The same networks by ID.
    pub networks_by_id: HashMap<String, Arc<NetworkEntry>>,
    pub routing: RoutingSnapshot,
    /// Where each campaign's conversions are reported (outbound postbacks).
    pub outbound: OutboundRoutes,
}

impl PostbackSnapshot {
    /// The network with this key.
    pub fn network(&self, key: &str) -> Option<&Arc<NetworkEntry>> {
        self.networks.get(key)
    }

    /// The one token-authenticated network whose token one of `params`' token parameters carries (the MVP
    /// found the network of `/api/postbacks` by its secret). `None` when none or more than one match.
    pub fn network_by_token(&self, params: &[(String, String)]) -> Option<&Arc<NetworkEntry>> {
        use subtle::ConstantTimeEq;
        let mut found = None;
        for network in self.networks.values() {
            let auth = &network.spec.auth;
            let Some(token) = auth.token.as_deref().filter(|t| !t.is_empty()) else { continue };
            if auth.mode != traffoflex_crds::AuthMode::Token {
                continue;
            }
            let names = auth.token_param.as_deref().into_iter().chain(super::auth::TOKEN_PARAMS.iter().copied());
            let carried = names
                .filter_map(|name| params.iter().find(|(k, v)| k == name && !v.is_empty()))
                .any(|(_, v)| bool::from(v.as_bytes().ct_eq(token.as_bytes())));
            if carried {
                if found.is_some() {
                    return None;
                }
                found = Some(network);
            }
        }
        found
    }

    /// The network with this key or ID (the MVP's URLs and `network_id` name networks by ID).
    pub fn network_by_key_or_id(&self, key_or_id: &str) -> Option<&Arc<NetworkEntry>> {
        self.network(key_or_id).or_else(|| self.networks_by_id.get(key_or_id))
    }
}

/// Builds the snapshot from documents (pure; skipped documents are logged).
pub fn build(
    revision: String,
    networks: Vec<(String, AffiliateNetworkSpec)>,
    templates: Vec<(String, PostbackTemplateSpec)>,
    routing: RoutingSnapshot,
) -> PostbackSnapshot {
    let templates: HashMap<String, PostbackTemplateSpec> = templates.into_iter().collect();
    let mut by_key = HashMap::new();
    let mut networks = networks;
    networks.sort_by(|a, b| a.0.cmp(&b.0));
    for (id, spec) in networks {
        let template = spec.postback_template_id.as_ref().and_then(|t| templates.get(t)).cloned();
        if template.is_none() {
            tracing::warn!(network = %spec.key, "the network's postback template is missing; using the default parameter names");
        }
        let (allowlist, bad) = parse_allowlist(&spec.ip_allowlist);
        if !bad.is_empty() {
            tracing::warn!(network = %spec.key, ?bad, "skipping allowlist entries that are not CIDRs or addresses");
        }
        if by_key.contains_key(&spec.key) {
            tracing::warn!(network = %spec.key, id, "two networks share a key; the first by ID wins");
            continue;
        }
        let key = spec.key.clone();
        by_key.insert(key, Arc::new(NetworkEntry { id, spec, template, allowlist }));
    }
    let networks_by_id = by_key.values().map(|n| (n.id.clone(), Arc::clone(n))).collect();
    PostbackSnapshot { revision, networks: by_key, networks_by_id, routing, outbound: OutboundRoutes::default() }
}

/// Loads networks, templates, the routing snapshot and the outbound postback routes. The revision is read
/// first (see the traffic config).
pub async fn load(store: &dyn ConfigStore) -> Result<PostbackSnapshot, StoreError> {
    let routing = load_routing(store).await?;
    let networks = documents::<AffiliateNetworkSpec>(store, Collection::AffiliateNetworks).await?;
    let templates = documents::<PostbackTemplateSpec>(store, Collection::PostbackTemplates).await?;
    let campaigns = documents::<CampaignSpec>(store, Collection::Campaigns).await?;
    let sources = documents::<TrafficSourceSpec>(store, Collection::TrafficSources).await?;
    let mut snapshot = build(routing.revision, networks, templates, routing.snapshot);
    snapshot.outbound = OutboundRoutes::build(&campaigns, &sources);
    Ok(snapshot)
}

impl Snapshot for PostbackSnapshot {
    const WHAT: &'static str = "postback";

    fn revision(&self) -> &str {
        &self.revision
    }

    fn load(store: &dyn ConfigStore) -> impl Future<Output = Result<Self, StoreError>> + Send {
        load(store)
    }
}

/// The postback configuration in force, shared by every request.
pub type LivePostbackConfig = Live<PostbackSnapshot>;
