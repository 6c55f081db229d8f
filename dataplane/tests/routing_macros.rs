//! Property: whatever a click carries — `@ / : ? # %`, unicode, `//evil.example`, `javascript:` — a rendered
//! destination URL parses and keeps the template's scheme, host and port.

use std::net::IpAddr;

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use rust_decimal::Decimal;
use traffoflex_dataplane::routing::{ClickContext, Facts, MacroValues, UrlTemplate};
use url::Url;

const TEMPLATES: &[&str] = &[
    "https://offer.example/land?cid={clickId}&s1={sub1}&geo={country}#{sub2}",
    "https://offer.example/a?x={param:p}&y=%41{sub1}",
    "https://offer.example/path?cid={clickId}&s={sub1}",
    "https://offer.example:8443/{sub1}/{param:p}?q={sub2}#{sub3}",
    "http://offer.example/{sub1}{sub2}{sub3}",
    "https://offer.example?{param:p}={sub1}&{sub2}",
    "https://offer.example#{sub1}",
    "https://user:pw@offer.example/a/{sub1}/../{sub2}/./{sub3}",
    "https://[2001:db8::1]:8080/{sub1}?ip={ip}",
    "https://café.example/{sub1}?c={country}&sc={sourceClickId}",
    "http://192.0.2.7/{utmSource}/{utmMedium}?t={utmTerm}&cost={cost}{currency}",
    "https://offer.example/{param:p}{param:q}{nope}{source}",
    "https://offer.example/a{b/{sub1}}c%{sub2}",
];

fn nasty() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("//evil.example".to_string()),
        Just("javascript:alert(1)".to_string()),
        Just("@evil.example:666/".to_string()),
        Just("https://evil.example/".to_string()),
        Just("../../..//".to_string()),
        Just("%2F%2Fevil.example%".to_string()),
        Just("\\\\evil.example\\".to_string()),
        Just("?#@:/%".to_string()),
        Just("\r\n\t ".to_string()),
        "[@/:?#%\\\\.a-z ]{0,24}",
        "\\PC{0,24}",
        any::<String>(),
    ]
}

fn origin(url: &Url) -> (String, Option<String>, Option<u16>) {
    (url.scheme().to_string(), url.host_str().map(str::to_string), url.port_or_known_default())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn macros_never_move_a_url(
        template in proptest::sample::select(TEMPLATES),
        subs in proptest::collection::vec(nasty(), 3),
        p in nasty(),
        q in nasty(),
        country in nasty(),
        source in nasty(),
        utm in nasty(),
        ip in any::<IpAddr>(),
        cost in any::<u32>(),
    ) {
        let mut ctx = ClickContext::from_query([
            ("sub1", subs[0].as_str()),
            ("sub2", subs[1].as_str()),
            ("sub3", subs[2].as_str()),
            ("p", p.as_str()),
            ("q", q.as_str()),
            ("utm_source", utm.as_str()),
            ("utm_medium", utm.as_str()),
            ("utm_term", utm.as_str()),
        ]);
        ctx.country = country.as_str().into();
        ctx.source_click_id = source.as_str().into();
        ctx.source = source.as_str().into();
        ctx.currency = utm.as_str().into();
        ctx.ip = Some(ip);
        ctx.cost = Some(Decimal::new(i64::from(cost), 3));
        let now = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).single().unwrap_or_else(|| panic!("date"));
        let facts = Facts::new(&ctx, now);
        let values = MacroValues {
            click_id: &subs[0],
            campaign_id: &p,
            campaign_key: &q,
            stream_id: &country,
            destination_id: &source,
            facts: &facts,
        };
        let parsed = UrlTemplate::parse(template).unwrap_or_else(|e| panic!("{template}: {e}"));
        let rendered = parsed.render(&values);
        prop_assert!(rendered.is_ok(), "{template}: {rendered:?}");
        let rendered = rendered.unwrap_or_else(|e| panic!("{e}"));
        // The template with its macros left empty is where every click must go.
        let blank = Url::parse(&template.replace(['{', '}'], "")).unwrap_or_else(|e| panic!("{e}"));
        prop_assert_eq!(origin(&rendered), origin(&blank));
        let again = Url::parse(rendered.as_str());
        prop_assert!(again.is_ok(), "{rendered}");
        prop_assert_eq!(again.map(|u| origin(&u)).ok(), Some(origin(&blank)));
        // The text a redirect sends, built without a second parse where the template allows, is exactly what
        // the parser would have written.
        let text = parsed.render_str(&values);
        prop_assert_eq!(text.as_deref().ok(), Some(rendered.as_str()), "{}", template);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Percent-encoding is exact: what a click carried is what the destination reads back.
    #[test]
    fn values_reach_the_destination_unchanged(sub1 in nasty(), p in nasty(), extra in nasty()) {
        let ctx = ClickContext::from_query([("sub1", sub1.as_str()), ("p", p.as_str())]);
        let facts = Facts::new(&ctx, Utc::now());
        let values = MacroValues {
            click_id: &extra,
            campaign_id: "",
            campaign_key: "",
            stream_id: "",
            destination_id: "",
            facts: &facts,
        };
        let template = UrlTemplate::parse("https://offer.example/lp?a={sub1}&b={param:p}&c={clickId}#{sub1}")
            .unwrap_or_else(|e| panic!("{e}"));
        let url = template.render(&values).unwrap_or_else(|e| panic!("{e}"));
        let pairs: Vec<(String, String)> = url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        let want: Vec<(String, String)> =
            [("a", &sub1), ("b", &p), ("c", &extra)].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        prop_assert_eq!(pairs, want);
        prop_assert_eq!(url.path(), "/lp");
    }
}
