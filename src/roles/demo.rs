//! Demo data for `traffoflex up --demo`: two campaigns with conditional streams (weighted, waterfall and round
//! robin) and trafficback, three destinations, a traffic source, an affiliate network with its postback
//! template, and an approved admin. Every object passes the same validation as objects from the API.

use anyhow::Context;
use serde_json::{Value, json};
use traffoflex_core::store::{Collection, ConfigStore, Filter};
use traffoflex_crds::{
    AffiliateNetworkSpec, CampaignSpec, DestinationSpec, PostbackTemplateSpec, StreamSpec, TrafficSourceSpec, Validate,
    ValidationContext,
};

/// The demo campaign's key.
pub const CAMPAIGN_KEY: &str = "demo-summer";
/// The demo affiliate network's key and token.
pub const NETWORK_KEY: &str = "demo-network";
pub const NETWORK_TOKEN: &str = "demo-token";

/// What the demo made, for the example URLs.
pub struct Seeded {
    pub campaign_key: String,
    pub network_key: String,
}

async fn put<T: Validate + serde::de::DeserializeOwned>(
    store: &dyn ConfigStore,
    coll: Collection,
    doc: Value,
) -> anyhow::Result<String> {
    let spec: T =
        serde_json::from_value(doc.clone()).with_context(|| format!("demo {} does not parse", coll.name()))?;
    let errors = spec.validate(ValidationContext::Store);
    anyhow::ensure!(errors.is_empty(), "demo {} is invalid: {errors:?}", coll.name());
    let mut doc = doc;
    doc["teamId"] = Value::from(traffoflex_crds::DEFAULT_TEAM);
    let stored = store.insert(coll, doc).await.with_context(|| format!("storing the demo {}", coll.name()))?;
    Ok(stored["id"].as_str().unwrap_or_default().to_owned())
}

/// Seeds the demo objects when the store has no campaign yet; `None` when it already had some.
pub async fn seed(store: &dyn ConfigStore) -> anyhow::Result<Option<Seeded>> {
    if store.count(Collection::Campaigns, &Filter::all()).await? > 0 {
        return Ok(None);
    }
    let source = put::<TrafficSourceSpec>(
        store,
        Collection::TrafficSources,
        json!({
            "key": "demo-source", "name": "Demo traffic source",
            "outboundPostbackUrl": "https://source.example/postback?click={sub1}&payout={payout}&status={status}"
        }),
    )
    .await?;
    let offer = |name: &str, path: &str| {
        json!({
            "name": name, "url": format!("https://offers.example/{path}?cid={{clickId}}&s1={{sub1}}&geo={{country}}"),
            "enabled": true, "healthCheck": {"enabled": false}
        })
    };
    let a = put::<DestinationSpec>(store, Collection::Destinations, offer("Offer A", "a")).await?;
    let b = put::<DestinationSpec>(store, Collection::Destinations, offer("Offer B", "b")).await?;
    let c = put::<DestinationSpec>(store, Collection::Destinations, offer("Offer C (everyone else)", "c")).await?;
    let campaign = put::<CampaignSpec>(
        store,
        Collection::Campaigns,
        json!({
            "key": CAMPAIGN_KEY, "name": "Demo summer sale", "status": "active", "trafficSourceId": source,
            "trafficbackUrl": "https://fallback.example/trafficback?campaign={campaignKey}",
            "costModel": {"type": "cpc", "value": "0.05", "currency": "USD"}
        }),
    )
    .await?;
    put::<StreamSpec>(
        store,
        Collection::Streams,
        json!({
            "campaignId": campaign, "name": "DACH", "priority": 10, "enabled": true,
            "conditions": {"all": [{"field": "country", "op": "in", "values": ["DE", "AT", "CH"]}]},
            "selection": "weighted",
            "destinations": [{"destinationId": a, "weight": 70}, {"destinationId": b, "weight": 30}]
        }),
    )
    .await?;
    put::<StreamSpec>(
        store,
        Collection::Streams,
        json!({
            "campaignId": campaign, "name": "Desktop everywhere else", "priority": 20, "enabled": true,
            "conditions": {"all": [{"field": "deviceType", "op": "eq", "value": "desktop"}]},
            "selection": "waterfall", "destinations": [{"destinationId": c}]
        }),
    )
    .await?;
    // A second campaign: mobile traffic shared in turn between two offers, evenings only for the first.
    let mobile = put::<CampaignSpec>(
        store,
        Collection::Campaigns,
        json!({
            "key": "demo-mobile", "name": "Demo mobile apps", "status": "active", "trafficSourceId": source,
            "trafficbackUrl": "https://fallback.example/trafficback?campaign={campaignKey}",
            "costModel": {"type": "cpc", "value": "0.02", "currency": "USD"}
        }),
    )
    .await?;
    put::<StreamSpec>(
        store,
        Collection::Streams,
        json!({
            "campaignId": mobile, "name": "Phones and tablets", "priority": 10, "enabled": true,
            "conditions": {"any": [
                {"field": "deviceType", "op": "eq", "value": "mobile"},
                {"field": "deviceType", "op": "eq", "value": "tablet"}
            ]},
            "selection": "roundRobin",
            "destinations": [{"destinationId": a}, {"destinationId": b}]
        }),
    )
    .await?;
    let template = put::<PostbackTemplateSpec>(store, Collection::PostbackTemplates, json!({
        "name": "Generic S2S",
        "params": {"clickId": "clickid", "transactionId": "txid", "payout": "payout", "currency": "currency", "status": "status"},
        "statusMap": {"1": "approved", "approved": "approved", "0": "rejected", "pending": "pending"},
        "defaultStatus": "approved"
    })).await?;
    put::<AffiliateNetworkSpec>(
        store,
        Collection::AffiliateNetworks,
        json!({
            "key": NETWORK_KEY, "name": "Demo network", "postbackTemplateId": template,
            "auth": {"mode": "token", "token": NETWORK_TOKEN}
        }),
    )
    .await?;
    store.bump_config_revision().await?;
    Ok(Some(Seeded { campaign_key: CAMPAIGN_KEY.to_owned(), network_key: NETWORK_KEY.to_owned() }))
}

/// The demo admin's e-mail.
pub const ADMIN_EMAIL: &str = "admin@traffoflex.local";

/// Creates an approved admin with a random password when the store has no user yet; returns its login, to
/// be shown once.
pub async fn seed_admin(store: &dyn ConfigStore) -> anyhow::Result<Option<(String, String)>> {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    let password: String = (0..16).map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())])).collect();
    let made = traffoflex_api::auth::bootstrap_admin(store, ADMIN_EMAIL, &password).await?;
    Ok(made.then(|| (ADMIN_EMAIL.to_owned(), password)))
}
