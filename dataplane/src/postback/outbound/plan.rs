//! Which outbound postback a conversion gets (pure): the campaign's `outboundPostbackUrl`, else its traffic
//! source's, for the statuses the traffic source lists (only `approved` by default); the job's `target`
//! key; and the URL rendered with the conversion's macros.

use std::collections::HashMap;

use traffoflex_core::analytics::from_micros;
use traffoflex_core::store::Stored;
use traffoflex_crds::traffic_source::default_outbound_statuses;
use traffoflex_crds::{CampaignSpec, ConversionStatus, TrafficSourceSpec};
use url::Url;

use super::super::record::ConversionDoc;
use crate::routing::text::percent_encode_into;

/// Where a campaign's conversions are reported.
#[derive(Debug, Clone, PartialEq)]
struct Route {
    campaign_key: String,
    source_key: String,
    /// `campaign:<id>` or `trafficSource:<id>`: whose URL this is.
    owner: String,
    template: String,
    statuses: Vec<ConversionStatus>,
}

/// Every campaign's outbound postback route, by campaign ID (campaigns with no URL are absent).
#[derive(Debug, Default)]
pub struct OutboundRoutes {
    by_campaign: HashMap<String, Route>,
}

/// A job to enqueue for a conversion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// Unique per conversion with the conversion ID: the URL's owner and the conversion's revision, so a
    /// repeat of the same postback maps to the same job and a status change (a new revision) to a new one.
    pub target: String,
    pub url: String,
}

/// Why no job is planned, or why a URL could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("the outbound postback URL `{0}` is not an absolute http(s) URL with a literal host")]
    BadTemplate(String),
    #[error("the rendered outbound postback URL changed its scheme, host or port")]
    OriginChanged,
    #[error("the rendered outbound postback URL does not parse: {0}")]
    Invalid(String),
}

impl OutboundRoutes {
    /// Builds the routes from the store's campaigns and traffic sources, each `(id, spec)`.
    pub fn build(campaigns: &[(String, CampaignSpec)], sources: &[(String, TrafficSourceSpec)]) -> Self {
        let sources: HashMap<&str, &TrafficSourceSpec> = sources.iter().map(|(id, s)| (id.as_str(), s)).collect();
        let mut by_campaign = HashMap::new();
        for (id, c) in campaigns {
            let source_id = c.traffic_source_id.as_deref().filter(|s| !s.is_empty());
            let source = source_id.and_then(|s| sources.get(s).copied());
            let own = c.outbound_postback_url.as_deref().map(str::trim).filter(|u| !u.is_empty());
            let inherited = source.and_then(|s| s.outbound_postback_url.as_deref()).map(str::trim);
            let (owner, template) = match (own, inherited.filter(|u| !u.is_empty())) {
                (Some(url), _) => (format!("campaign:{id}"), url),
                (None, Some(url)) => (format!("trafficSource:{}", source_id.unwrap_or_default()), url),
                (None, None) => continue,
            };
            let route = Route {
                campaign_key: c.key.clone(),
                source_key: source.map(|s| s.key.clone()).unwrap_or_default(),
                owner,
                template: template.to_owned(),
                statuses: source.map_or_else(default_outbound_statuses, |s| s.outbound_postback_statuses.clone()),
            };
            by_campaign.insert(id.clone(), route);
        }
        Self { by_campaign }
    }

    /// The job a stored conversion gets, if any: `Ok(None)` when its campaign has no outbound URL or its
    /// status is not reported.
    pub fn plan(&self, c: &Stored<ConversionDoc>) -> Result<Option<Planned>, PlanError> {
        let d = &c.doc;
        let Some(route) = self.by_campaign.get(&d.campaign_id) else { return Ok(None) };
        if d.campaign_id.is_empty() || !route.statuses.contains(&d.status) {
            return Ok(None);
        }
        let url = render(&route.template, |name| value(name, c, route))?;
        Ok(Some(Planned { target: format!("{}#r{}", route.owner, d.revision), url: url.to_string() }))
    }
}

/// The value of a macro of an outbound postback URL: names are matched case-insensitively and without `_`
/// (so the MVP's `transaction_id` is `{transactionId}`). Click facts (`sub1`…`sub10` and the MVP's `s1`…`s4`,
/// UTM fields, `sourceClickId`, `ip`, `country`, `cost`) come from the click analytics had when the postback
/// came, and are empty when it had none; `param:…` and unknown names are empty.
fn value(name: &str, c: &Stored<ConversionDoc>, route: &Route) -> String {
    let d = &c.doc;
    let key: String = name.chars().filter(|&ch| ch != '_').flat_map(char::to_lowercase).collect();
    match key.as_str() {
        "clickid" | "cid" => return d.click_id.clone(),
        "campaignid" => return d.campaign_id.clone(),
        "campaignkey" => return route.campaign_key.clone(),
        "streamid" => return d.stream_id.clone(),
        "destinationid" => return d.destination_id.clone(),
        "source" if !route.source_key.is_empty() => return route.source_key.clone(),
        "payout" | "sum" | "revenue" => return d.payout.normalize().to_string(),
        "currency" => return d.currency.clone(),
        "status" => return d.status.as_str().to_owned(),
        "transactionid" => return d.transaction_id.clone(),
        "conversionid" => return c.id.clone(),
        "eventtype" => return d.event_type.clone(),
        "networkid" => return d.network_id.clone(),
        _ => {}
    }
    let Some(click) = &d.click else { return String::new() };
    let sub = |n: usize| click.subs.get(n - 1).cloned().unwrap_or_default();
    match key.as_str() {
        "source" => click.source.clone(),
        "sourceclickid" => click.source_click_id.clone(),
        "ip" => click.ip.clone(),
        "country" => click.country.clone(),
        "cost" => from_micros(click.cost_micros).normalize().to_string(),
        "utmsource" => click.utm_source.clone(),
        "utmmedium" => click.utm_medium.clone(),
        "utmcampaign" => click.utm_campaign.clone(),
        "utmcontent" => click.utm_content.clone(),
        "utmterm" => click.utm_term.clone(),
        other => match other.strip_prefix("sub").or_else(|| other.strip_prefix('s')).map(str::parse::<usize>) {
            Some(Ok(n @ 1..=10)) => sub(n),
            _ => String::new(),
        },
    }
}

/// Fills `{name}` macros in the path, query and fragment of `template` with percent-encoded values, and
/// refuses a result whose scheme, host or port differ from the template's (a macro in the scheme or
/// authority is refused outright). A `{` without a closing `}` is literal text.
pub fn render(template: &str, mut value: impl FnMut(&str) -> String) -> Result<Url, PlanError> {
    let t = template.trim();
    let bad = || PlanError::BadTemplate(t.to_owned());
    let (scheme, rest) = t.split_once("://").ok_or_else(bad)?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(bad());
    }
    let end = scheme.len() + 3 + rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (prefix, mut tail) = t.split_at(end);
    if prefix.contains(['{', '}']) {
        return Err(bad());
    }
    let origin = Url::parse(prefix).map_err(|_| bad())?;
    if origin.host_str().is_none_or(str::is_empty) {
        return Err(bad());
    }
    let mut out = String::with_capacity(t.len() + 64);
    out.push_str(prefix);
    while let Some(open) = tail.find('{') {
        out.push_str(&tail[..open]);
        let after = &tail[open + 1..];
        match after.find(['{', '}']) {
            Some(close) if after.as_bytes()[close] == b'}' => {
                percent_encode_into(&mut out, &value(&after[..close]));
                tail = &after[close + 1..];
            }
            Some(next) => {
                out.push('{');
                out.push_str(&after[..next]);
                tail = &after[next..];
            }
            None => {
                out.push('{');
                tail = after;
            }
        }
    }
    out.push_str(tail);
    let url = Url::parse(&out).map_err(|e| PlanError::Invalid(e.to_string()))?;
    if url.scheme() != origin.scheme()
        || url.host_str() != origin.host_str()
        || url.port_or_known_default() != origin.port_or_known_default()
    {
        return Err(PlanError::OriginChanged);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use rust_decimal::Decimal;
    use serde_json::json;

    use super::*;

    fn conversion(status: ConversionStatus, revision: u64) -> Stored<ConversionDoc> {
        Stored {
            id: "conv-1".into(),
            version: 1,
            created_at: String::new(),
            updated_at: String::new(),
            doc: ConversionDoc {
                network_id: "net-1".into(),
                network_key: "neta".into(),
                transaction_id: "tx 1&x".into(),
                click_id: "CLICK".into(),
                status,
                payout: Decimal::new(1250, 2),
                currency: "EUR".into(),
                revenue: Decimal::new(1250, 2),
                event_type: "sale".into(),
                campaign_id: "camp-1".into(),
                stream_id: "str-1".into(),
                destination_id: "dst-1".into(),
                traffic_source_id: "src-1".into(),
                team_id: "default".into(),
                attributed: true,
                click_ts: 0,
                click: None,
                ts: 0,
                revision,
            },
        }
    }

    fn spec<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"))
    }

    fn routes(campaign_url: Option<&str>, source_url: Option<&str>, statuses: Option<&[&str]>) -> OutboundRoutes {
        let mut source = json!({"key": "src1", "name": "S", "outboundPostbackUrl": source_url});
        if let Some(s) = statuses {
            source["outboundPostbackStatuses"] = json!(s);
        }
        let campaign = json!({"key": "summer", "name": "C", "trafficSourceId": "src-1",
                              "outboundPostbackUrl": campaign_url});
        OutboundRoutes::build(&[("camp-1".into(), spec(campaign))], &[("src-1".into(), spec(source))])
    }

    #[test]
    fn the_source_url_is_rendered_with_every_macro() {
        let r = routes(
            None,
            Some(
                "https://src.example/pb?c={clickId}&p={payout}&s={status}&t={transactionId}&id={conversionId}\
                 &k={campaignKey}&src={source}&cur={currency}&n={NETWORK_ID}&e={event_type}&sum={sum}&sub={sub1}&u={nope}",
            ),
            None,
        );
        let p = r.plan(&conversion(ConversionStatus::Approved, 1)).unwrap().unwrap();
        assert_eq!(p.target, "trafficSource:src-1#r1");
        assert_eq!(
            p.url,
            "https://src.example/pb?c=CLICK&p=12.5&s=approved&t=tx%201%26x&id=conv-1&k=summer&src=src1&cur=EUR\
             &n=net-1&e=sale&sum=12.5&sub=&u="
        );
    }

    #[test]
    fn click_facts_fill_their_macros_when_analytics_had_the_click() {
        let r = routes(
            None,
            Some(
                "https://src.example/pb?sub1={sub1}&s2={s2}&sub10={SUB10}&sc={source_click_id}&ip={ip}&geo={country}\
                 &cost={cost}&us={utmSource}&ut={utm_term}&s11={sub11}&p={param:x}",
            ),
            None,
        );
        let mut c = conversion(ConversionStatus::Approved, 1);
        c.doc.click = Some(traffoflex_core::analytics::ClickFacts {
            source_click_id: "their-7".into(),
            ip: "203.0.113.9".into(),
            country: "DE".into(),
            utm_source: "news".into(),
            utm_term: "a b".into(),
            subs: ["one", "two", "", "", "", "", "", "", "", "ten"].map(String::from).to_vec(),
            cost_micros: 125_000,
            ..Default::default()
        });
        let p = r.plan(&c).unwrap().unwrap();
        assert_eq!(
            p.url,
            "https://src.example/pb?sub1=one&s2=two&sub10=ten&sc=their-7&ip=203.0.113.9&geo=DE&cost=0.125&us=news\
             &ut=a%20b&s11=&p="
        );
    }

    #[test]
    fn the_campaign_url_wins_and_statuses_are_scoped() {
        let r = routes(Some("https://camp.example/{status}"), Some("https://src.example/"), None);
        let p = r.plan(&conversion(ConversionStatus::Approved, 2)).unwrap().unwrap();
        assert_eq!((p.target.as_str(), p.url.as_str()), ("campaign:camp-1#r2", "https://camp.example/approved"));
        assert_eq!(r.plan(&conversion(ConversionStatus::Pending, 1)), Ok(None), "only approved by default");
        let r = routes(None, Some("https://src.example/"), Some(&["pending", "rejected"]));
        assert!(r.plan(&conversion(ConversionStatus::Pending, 1)).unwrap().is_some());
        assert_eq!(r.plan(&conversion(ConversionStatus::Approved, 2)), Ok(None));
        assert!(routes(None, None, None).plan(&conversion(ConversionStatus::Approved, 1)).unwrap().is_none());
    }

    #[test]
    fn macros_never_move_the_request() {
        let evil = |_: &str| "@evil.example:1/x?#".to_owned();
        let url = render("https://src.example/pb/{a}?q={b}#{c}", evil).unwrap();
        assert_eq!(url.host_str(), Some("src.example"));
        assert_eq!(url.port_or_known_default(), Some(443));
        for bad in ["https://{host}/", "{scheme}://x.example/", "https://x.example:{port}/", "ftp://x.example/"] {
            assert!(matches!(render(bad, evil), Err(PlanError::BadTemplate(_))), "{bad}");
        }
        assert_eq!(render("http://x.example/{a", |_| "v".into()).unwrap().as_str(), "http://x.example/%7Ba");
    }
}
