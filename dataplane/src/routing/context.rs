//! The facts of one click that routing matches on: [`ClickContext`] (what the request carried, after the
//! server's user-agent, IP and GeoIP work) and [`Facts`] (the context seen through a campaign and a time).
//!
//! The context only holds values. [`ClickContext::from_query`] reads the inbound query string with the
//! original MVP's aliases (see [`QUERY_ALIASES`]); the server then sets what comes from elsewhere (client IP,
//! `User-Agent`, `Referer`, device facts, GeoIP, bot and uniqueness flags), usually overriding the query's
//! geo values with its own. An empty string means "absent" everywhere: a condition `exists` is false for it
//! and a macro renders nothing.

use std::borrow::Cow;
use std::net::IpAddr;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Timelike, Utc};
use rust_decimal::Decimal;
use traffoflex_crds::schedule::Weekday;

/// The query parameter that carries how many times a click already went through trafficback (the MVP's
/// name). The engine adds it to every trafficback URL it renders.
pub const TRAFFICBACK_DEPTH_PARAM: &str = "trafficback_depth";

/// Query parameter names read into the context, canonical name first; when several are present the one
/// listed first wins. Every parameter also stays available as `param:NAME` / `{param:NAME}`.
pub const QUERY_ALIASES: &[(&str, &[&str])] = &[
    ("country", &["country", "geo_country", "country_code", "geo"]),
    ("region", &["region", "geo_region", "state"]),
    ("city", &["city", "geo_city"]),
    ("asn", &["asn", "geo_asn"]),
    ("isp", &["isp", "carrier"]),
    ("deviceType", &["device_type", "deviceType", "device"]),
    ("os", &["os", "platform"]),
    ("browser", &["browser", "ua_browser"]),
    ("language", &["language", "lang"]),
    ("source", &["source", "source_id"]),
    ("sourceClickId", &["source_click_id", "sourceClickId", "external_click_id", "clickid", "click_id"]),
    ("utmSource", &["utm_source"]),
    ("utmMedium", &["utm_medium"]),
    ("utmCampaign", &["utm_campaign"]),
    ("utmContent", &["utm_content"]),
    ("utmTerm", &["utm_term"]),
    ("cost", &["cost", "cpc", "price", "bid", "spend"]),
    ("currency", &["currency"]),
    ("trafficbackDepth", &[TRAFFICBACK_DEPTH_PARAM]),
];

/// What the engine knows about one click.
///
/// Text fields are `Cow` so a server can borrow them from the request; empty means absent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClickContext<'a> {
    /// ISO 3166-1 alpha-2 country code.
    pub country: Cow<'a, str>,
    /// Region or state.
    pub region: Cow<'a, str>,
    /// City.
    pub city: Cow<'a, str>,
    /// `desktop`, `mobile` or `tablet`.
    pub device_type: Cow<'a, str>,
    /// Operating system.
    pub os: Cow<'a, str>,
    /// Browser.
    pub browser: Cow<'a, str>,
    /// Preferred language (`de`).
    pub language: Cow<'a, str>,
    /// Client IP address (the server resolves trusted proxies).
    pub ip: Option<IpAddr>,
    /// Internet service provider or carrier.
    pub isp: Cow<'a, str>,
    /// Autonomous system number (`AS13335` and `13335` both read as 13335).
    pub asn: Option<u32>,
    /// The traffic source's key; when empty, the campaign's traffic source is used (see [`Facts`]).
    pub source: Cow<'a, str>,
    /// The traffic source's own click token, kept apart from our click ID.
    pub source_click_id: Cow<'a, str>,
    /// The `Referer` header.
    pub referrer: Cow<'a, str>,
    /// The `User-Agent` header.
    pub user_agent: Cow<'a, str>,
    /// `utm_source`.
    pub utm_source: Cow<'a, str>,
    /// `utm_medium`.
    pub utm_medium: Cow<'a, str>,
    /// `utm_campaign`.
    pub utm_campaign: Cow<'a, str>,
    /// `utm_content`.
    pub utm_content: Cow<'a, str>,
    /// `utm_term`.
    pub utm_term: Cow<'a, str>,
    /// `sub1` … `sub10` (index 0 is `sub1`).
    pub subs: [Cow<'a, str>; 10],
    /// Every inbound query parameter, in order, as decoded names and values (`param:NAME`).
    pub params: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// The click's cost as passed by the source (a non-negative decimal).
    pub cost: Option<Decimal>,
    /// The currency of `cost`.
    pub currency: Cow<'a, str>,
    /// Hour of the day, 0–23; `None` takes it from the routing time in UTC.
    pub hour: Option<u8>,
    /// Day of the week; `None` takes it from the routing time in UTC.
    pub day_of_week: Option<Weekday>,
    /// Whether the click looks like a bot.
    pub is_bot: bool,
    /// Whether this is the visitor's first click on the campaign.
    pub is_unique: bool,
    /// How many times the click already went through trafficback.
    pub trafficback_depth: u32,
}

#[derive(Clone, Copy)]
enum Slot {
    Country,
    Region,
    City,
    Asn,
    Isp,
    DeviceType,
    Os,
    Browser,
    Language,
    Source,
    SourceClickId,
    Utm(u8),
    Cost,
    Currency,
    Depth,
}

const SLOTS: usize = 19;

impl Slot {
    fn index(self) -> usize {
        match self {
            Self::Country => 0,
            Self::Region => 1,
            Self::City => 2,
            Self::Asn => 3,
            Self::Isp => 4,
            Self::DeviceType => 5,
            Self::Os => 6,
            Self::Browser => 7,
            Self::Language => 8,
            Self::Source => 9,
            Self::SourceClickId => 10,
            Self::Utm(i) => 11 + usize::from(i),
            Self::Cost => 16,
            Self::Currency => 17,
            Self::Depth => 18,
        }
    }

    /// The slot a query parameter fills and its rank among that slot's names (lower wins).
    fn of(name: &str) -> Option<(Self, u8)> {
        const ORDER: [Slot; SLOTS] = [
            Slot::Country,
            Slot::Region,
            Slot::City,
            Slot::Asn,
            Slot::Isp,
            Slot::DeviceType,
            Slot::Os,
            Slot::Browser,
            Slot::Language,
            Slot::Source,
            Slot::SourceClickId,
            Slot::Utm(0),
            Slot::Utm(1),
            Slot::Utm(2),
            Slot::Utm(3),
            Slot::Utm(4),
            Slot::Cost,
            Slot::Currency,
            Slot::Depth,
        ];
        QUERY_ALIASES.iter().zip(ORDER).find_map(|((_, names), slot)| {
            let rank = names.iter().position(|n| *n == name)?;
            Some((slot, u8::try_from(rank).unwrap_or(u8::MAX)))
        })
    }
}

/// `sub1` … `sub10` as 0 … 9.
fn sub_index(name: &str) -> Option<usize> {
    let n: usize = name.strip_prefix("sub")?.parse().ok()?;
    ((1..=10).contains(&n) && name.len() == 3 + if n == 10 { 2 } else { 1 }).then(|| n - 1)
}

/// An ASN as written in the wild: `13335`, `AS13335`, `as13335`.
pub fn parse_asn(text: &str) -> Option<u32> {
    let t = text.trim();
    let digits = t.strip_prefix("AS").or_else(|| t.strip_prefix("as")).unwrap_or(t);
    digits.parse().ok()
}

/// A non-negative decimal cost (`0.05`); anything else is `None`.
pub fn parse_cost(text: &str) -> Option<Decimal> {
    Decimal::from_str(text.trim()).ok().filter(|d| !d.is_sign_negative())
}

impl<'a> ClickContext<'a> {
    /// A context from the inbound query parameters (decoded), applying [`QUERY_ALIASES`]; empty values
    /// are ignored. Every parameter is also kept in [`ClickContext::params`].
    pub fn from_query<I, K, V>(params: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<Cow<'a, str>>,
        V: Into<Cow<'a, str>>,
    {
        let mut ctx = Self::default();
        let mut ranks = [u8::MAX; SLOTS];
        for (name, value) in params {
            let (name, value) = (name.into(), value.into());
            if !value.is_empty() {
                if let Some(i) = sub_index(&name) {
                    if ctx.subs[i].is_empty() {
                        ctx.subs[i] = value.clone();
                    }
                } else if let Some((slot, rank)) = Slot::of(&name)
                    && rank < ranks[slot.index()]
                    && ctx.set(slot, value.clone())
                {
                    ranks[slot.index()] = rank;
                }
            }
            ctx.params.push((name, value));
        }
        ctx
    }

    /// Fills `slot` from `value`; false when the value doesn't parse (a bad ASN, cost or depth).
    fn set(&mut self, slot: Slot, v: Cow<'a, str>) -> bool {
        match slot {
            Slot::Country => self.country = v,
            Slot::Region => self.region = v,
            Slot::City => self.city = v,
            Slot::Isp => self.isp = v,
            Slot::DeviceType => self.device_type = v,
            Slot::Os => self.os = v,
            Slot::Browser => self.browser = v,
            Slot::Language => self.language = v,
            Slot::Source => self.source = v,
            Slot::SourceClickId => self.source_click_id = v,
            Slot::Currency => self.currency = v,
            Slot::Utm(0) => self.utm_source = v,
            Slot::Utm(1) => self.utm_medium = v,
            Slot::Utm(2) => self.utm_campaign = v,
            Slot::Utm(3) => self.utm_content = v,
            Slot::Utm(_) => self.utm_term = v,
            Slot::Asn => match parse_asn(&v) {
                Some(asn) => self.asn = Some(asn),
                None => return false,
            },
            Slot::Cost => match parse_cost(&v) {
                Some(cost) => self.cost = Some(cost),
                None => return false,
            },
            Slot::Depth => match v.trim().parse() {
                Ok(depth) => self.trafficback_depth = depth,
                Err(_) => return false,
            },
        }
        true
    }

    /// The first value of query parameter `name` (exact, case-sensitive name), if any.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_ref())
    }

    /// `sub1` … `sub10` by number; empty for anything else.
    pub fn sub(&self, n: u8) -> &str {
        usize::from(n).checked_sub(1).and_then(|i| self.subs.get(i)).map_or("", |s| s.as_ref())
    }

    /// The same context owning all its text.
    pub fn into_owned(self) -> ClickContext<'static> {
        let own = |c: Cow<'a, str>| Cow::Owned(c.into_owned());
        ClickContext {
            country: own(self.country),
            region: own(self.region),
            city: own(self.city),
            device_type: own(self.device_type),
            os: own(self.os),
            browser: own(self.browser),
            language: own(self.language),
            ip: self.ip,
            isp: own(self.isp),
            asn: self.asn,
            source: own(self.source),
            source_click_id: own(self.source_click_id),
            referrer: own(self.referrer),
            user_agent: own(self.user_agent),
            utm_source: own(self.utm_source),
            utm_medium: own(self.utm_medium),
            utm_campaign: own(self.utm_campaign),
            utm_content: own(self.utm_content),
            utm_term: own(self.utm_term),
            subs: self.subs.map(own),
            params: self.params.into_iter().map(|(n, v)| (own(n), own(v))).collect(),
            cost: self.cost,
            currency: own(self.currency),
            hour: self.hour,
            day_of_week: self.day_of_week,
            is_bot: self.is_bot,
            is_unique: self.is_unique,
            trafficback_depth: self.trafficback_depth,
        }
    }
}

/// A context seen through its campaign at a moment: what conditions and macros read.
///
/// - `source`: the context's, else the key of the campaign's traffic source.
/// - `cost`/`currency`: the context's, else the campaign's `cpc` cost model (one click costs its value).
/// - `hour`/`dayOfWeek`: the context's, else the routing time **in UTC** (campaigns carry no time zone;
///   a server that wants another zone sets them in the context).
#[derive(Clone, Copy, Debug)]
pub struct Facts<'f> {
    /// The click.
    pub ctx: &'f ClickContext<'f>,
    pub(crate) source: &'f str,
    pub(crate) cost: Option<Decimal>,
    pub(crate) currency: &'f str,
    pub(crate) hour: u8,
    pub(crate) day: Weekday,
}

impl<'f> Facts<'f> {
    /// The context at `now`, with no campaign defaults.
    pub fn new(ctx: &'f ClickContext<'f>, now: DateTime<Utc>) -> Self {
        // `hour()` is 0–23.
        let hour = ctx.hour.unwrap_or(u8::try_from(now.hour()).unwrap_or(0));
        let day = ctx.day_of_week.unwrap_or(Weekday::ALL[now.weekday().num_days_from_monday() as usize % 7]);
        Self { ctx, source: &ctx.source, cost: ctx.cost, currency: &ctx.currency, hour, day }
    }

    /// Fills the source and cost the click didn't carry from its campaign.
    pub fn with_defaults(mut self, source: Option<&'f str>, cpc: Option<(Decimal, &'f str)>) -> Self {
        if self.source.is_empty() {
            self.source = source.unwrap_or("");
        }
        if self.cost.is_none()
            && let Some((cost, currency)) = cpc
        {
            self.cost = Some(cost);
            if self.currency.is_empty() {
                self.currency = currency;
            }
        }
        self
    }

    /// The traffic source key in effect.
    pub fn source(&self) -> &'f str {
        self.source
    }

    /// The cost in effect.
    pub fn cost(&self) -> Option<Decimal> {
        self.cost
    }

    /// The currency in effect.
    pub fn currency(&self) -> &'f str {
        self.currency
    }

    /// The hour of the day in effect (0–23).
    pub fn hour(&self) -> u8 {
        self.hour
    }

    /// The day of the week in effect.
    pub fn day_of_week(&self) -> Weekday {
        self.day
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn ctx(pairs: &[(&'static str, &'static str)]) -> ClickContext<'static> {
        ClickContext::from_query(pairs.iter().copied())
    }

    #[test]
    fn aliases_fill_the_canonical_fields() {
        let c = ctx(&[
            ("geo", "DE"),
            ("state", "BY"),
            ("geo_city", "Munich"),
            ("geo_asn", "AS3320"),
            ("carrier", "Telekom"),
            ("device", "mobile"),
            ("platform", "Android"),
            ("ua_browser", "Chrome"),
            ("source_click_id", "tok-1"),
            ("utm_source", "fb"),
            ("utm_medium", "cpc"),
            ("utm_campaign", "summer"),
            ("utm_content", "banner"),
            ("utm_term", "shoes"),
            ("sub1", "a"),
            ("sub10", "j"),
            ("cost", "0.05"),
            ("currency", "EUR"),
            ("source", "src1"),
            ("trafficback_depth", "2"),
        ]);
        assert_eq!(
            (c.country.as_ref(), c.region.as_ref(), c.city.as_ref(), c.asn, c.isp.as_ref()),
            ("DE", "BY", "Munich", Some(3320), "Telekom")
        );
        assert_eq!((c.device_type.as_ref(), c.os.as_ref(), c.browser.as_ref()), ("mobile", "Android", "Chrome"));
        assert_eq!((c.source_click_id.as_ref(), c.source.as_ref()), ("tok-1", "src1"));
        assert_eq!(
            [&c.utm_source, &c.utm_medium, &c.utm_campaign, &c.utm_content, &c.utm_term].map(|s| s.as_ref()),
            ["fb", "cpc", "summer", "banner", "shoes"]
        );
        assert_eq!((c.sub(1), c.sub(10), c.sub(2), c.sub(0), c.sub(11)), ("a", "j", "", "", ""));
        assert_eq!(c.cost, Some(Decimal::new(5, 2)));
        assert_eq!((c.currency.as_ref(), c.trafficback_depth), ("EUR", 2));
        assert_eq!(c.param("geo"), Some("DE"));
        assert_eq!(c.params.len(), 20);
    }

    #[test]
    fn the_canonical_name_wins_over_an_alias_in_any_order() {
        for pairs in [[("geo", "FR"), ("country", "DE")], [("country", "DE"), ("geo", "FR")]] {
            assert_eq!(ctx(&pairs).country, "DE");
        }
        assert_eq!(ctx(&[("geo", "FR"), ("country_code", "AT")]).country, "AT");
        assert_eq!(ctx(&[("country", ""), ("geo", "FR")]).country, "FR");
        // The first of a repeated parameter counts.
        assert_eq!(ctx(&[("sub1", "x"), ("sub1", "y")]).sub(1), "x");
        assert_eq!(ctx(&[("sub1", "x"), ("sub1", "y")]).param("sub1"), Some("x"));
    }

    #[test]
    fn unparseable_numbers_are_left_out() {
        let c = ctx(&[("cost", "free"), ("asn", "nope"), ("trafficback_depth", "-1")]);
        assert_eq!((c.cost, c.asn, c.trafficback_depth), (None, None, 0));
        assert_eq!(ctx(&[("cost", "-1")]).cost, None);
        // A bad value under the best name leaves room for a good one under an alias.
        assert_eq!(ctx(&[("cost", "x"), ("cpc", "0.2")]).cost, Some(Decimal::new(2, 1)));
        assert_eq!(parse_asn(" as15169 "), Some(15169));
    }

    #[test]
    fn sub_names_are_exact() {
        assert_eq!(sub_index("sub1"), Some(0));
        assert_eq!(sub_index("sub10"), Some(9));
        for bad in ["sub0", "sub11", "sub01", "sub", "subx", "sub1 "] {
            assert_eq!(sub_index(bad), None, "{bad}");
        }
    }

    #[test]
    fn facts_fill_campaign_defaults_and_time_in_utc() {
        let c = ClickContext::default();
        // 2025-01-01 was a Wednesday.
        let Some(now) = Utc.with_ymd_and_hms(2025, 1, 1, 23, 30, 0).single() else { panic!("date") };
        let f = Facts::new(&c, now).with_defaults(Some("src1"), Some((Decimal::new(5, 2), "USD")));
        assert_eq!((f.source(), f.cost(), f.currency()), ("src1", Some(Decimal::new(5, 2)), "USD"));
        assert_eq!((f.hour(), f.day_of_week()), (23, Weekday::Wed));
        let c = ClickContext {
            source: "own".into(),
            cost: Some(Decimal::ONE),
            hour: Some(4),
            day_of_week: Some(Weekday::Sun),
            ..Default::default()
        };
        let f = Facts::new(&c, now).with_defaults(Some("src1"), Some((Decimal::new(5, 2), "USD")));
        assert_eq!((f.source(), f.cost(), f.currency()), ("own", Some(Decimal::ONE), ""));
        assert_eq!((f.hour(), f.day_of_week()), (4, Weekday::Sun));
    }

    #[test]
    fn into_owned_keeps_everything() {
        let c = ctx(&[("country", "DE"), ("sub3", "x"), ("kw", "shoes")]);
        let owned = c.clone().into_owned();
        assert_eq!(owned, c);
    }
}
