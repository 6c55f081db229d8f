//! Every macro, encoding, unknown names, and templates that must not parse.

use chrono::Utc;
use rust_decimal::Decimal;

use super::*;
use crate::routing::context::ClickContext;

fn click() -> ClickContext<'static> {
    let mut c = ClickContext::from_query([
        ("source", "src1"),
        ("source_click_id", "tok/1"),
        ("sub1", "s 1"),
        ("sub2", "two"),
        ("sub3", "3"),
        ("sub4", "4"),
        ("sub5", "5"),
        ("sub6", "6"),
        ("sub7", "7"),
        ("sub8", "8"),
        ("sub9", "9"),
        ("sub10", "ten&x=1"),
        ("utm_source", "fb"),
        ("utm_medium", "cpc"),
        ("utm_campaign", "summer sale"),
        ("utm_content", "banner#2"),
        ("utm_term", "red?shoes"),
        ("country", "DE"),
        ("cost", "0.050"),
        ("currency", "EUR"),
        ("kw", "café"),
    ]);
    c.ip = "2001:db8::1".parse().ok();
    c
}

fn render(template: &str, ctx: &ClickContext<'_>) -> String {
    let t = UrlTemplate::parse(template).unwrap_or_else(|e| panic!("{template}: {e}"));
    let facts = Facts::new(ctx, Utc::now());
    let values = MacroValues {
        click_id: "CLICK-id_1",
        campaign_id: "camp-1",
        campaign_key: "summer",
        stream_id: "str-1",
        destination_id: "dst-1",
        facts: &facts,
    };
    t.render(&values).unwrap_or_else(|e| panic!("{template}: {e}")).to_string()
}

#[test]
fn every_macro_renders_its_value() {
    let c = click();
    let cases = [
        ("clickId", "CLICK-id_1"),
        ("campaignId", "camp-1"),
        ("campaignKey", "summer"),
        ("streamId", "str-1"),
        ("destinationId", "dst-1"),
        ("source", "src1"),
        ("sourceClickId", "tok%2F1"),
        ("sub1", "s%201"),
        ("sub2", "two"),
        ("sub3", "3"),
        ("sub4", "4"),
        ("sub5", "5"),
        ("sub6", "6"),
        ("sub7", "7"),
        ("sub8", "8"),
        ("sub9", "9"),
        ("sub10", "ten%26x%3D1"),
        ("utmSource", "fb"),
        ("utmMedium", "cpc"),
        ("utmCampaign", "summer%20sale"),
        ("utmContent", "banner%232"),
        ("utmTerm", "red%3Fshoes"),
        ("country", "DE"),
        ("ip", "2001%3Adb8%3A%3A1"),
        ("cost", "0.05"),
        ("currency", "EUR"),
        ("param:kw", "caf%C3%A9"),
        ("query.kw", "caf%C3%A9"),
        ("click_id", "CLICK-id_1"),
        ("source_click_id", "tok%2F1"),
        ("utm_source", "fb"),
    ];
    for (name, want) in cases {
        let got = render(&format!("https://offer.example/p?v={{{name}}}"), &c);
        assert_eq!(got, format!("https://offer.example/p?v={want}"), "{{{name}}}");
    }
}

#[test]
fn missing_and_unknown_macros_render_empty() {
    let empty = ClickContext::default();
    for name in ["sub1", "ip", "cost", "param:kw", "country", "nope", "param:", "sub11", "sub01", "Sub1", ""] {
        let got = render(&format!("https://offer.example/p?v={{{name}}}&z=1"), &empty);
        assert_eq!(got, "https://offer.example/p?v=&z=1", "{{{name}}}");
    }
    assert_eq!(render("https://offer.example/p?v={nope}", &click()), "https://offer.example/p?v=");
}

#[test]
fn macros_fill_path_query_and_fragment() {
    let c = click();
    assert_eq!(
        render("https://offer.example/{country}/{sub2}?a={sub3}&cid={clickId}#{utmSource}", &c),
        "https://offer.example/DE/two?a=3&cid=CLICK-id_1#fb"
    );
    assert_eq!(render("https://offer.example?x={sub2}", &c), "https://offer.example/?x=two");
    assert_eq!(render("https://offer.example", &c), "https://offer.example/");
    assert_eq!(render("http://offer.example:8080/{sub2}", &c), "http://offer.example:8080/two");
}

#[test]
fn campaign_defaults_reach_macros() {
    let c = ClickContext::default();
    let facts = Facts::new(&c, Utc::now()).with_defaults(Some("src9"), Some((Decimal::new(120, 3), "USD")));
    let values = MacroValues {
        click_id: "",
        campaign_id: "",
        campaign_key: "",
        stream_id: "",
        destination_id: "",
        facts: &facts,
    };
    let t = UrlTemplate::parse("https://o.example/?s={source}&c={cost}&k={currency}").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.render(&values).map(|u| u.to_string()), Ok("https://o.example/?s=src9&c=0.12&k=USD".into()));
}

#[test]
fn braces_that_are_not_macros_are_literal() {
    let c = click();
    assert_eq!(render("https://offer.example/a{b?x={sub2}", &c), "https://offer.example/a%7Bb?x=two");
    assert_eq!(render("https://offer.example/a}b", &c), "https://offer.example/a%7Db");
    assert_eq!(render("https://offer.example/{{sub2}}", &c), "https://offer.example/%7Btwo%7D");
}

#[test]
fn values_can_not_escape_their_place() {
    let mut c = ClickContext::from_query([("sub1", "//evil.example/x?y#z"), ("kw", "@evil.example:666")]);
    c.source_click_id = "javascript:alert(1)".into();
    let got = render("https://offer.example/{sub1}?k={param:kw}&s={sourceClickId}", &c);
    assert_eq!(
        got,
        "https://offer.example/%2F%2Fevil.example%2Fx%3Fy%23z?k=%40evil.example%3A666&s=javascript%3Aalert%281%29"
    );
}

#[test]
fn templates_with_macros_before_the_path_are_refused() {
    for bad in [
        "https://{sub1}/a",
        "https://offer.example{sub1}/a",
        "https://offer.example:{sub1}/a",
        "https://{sub1}.offer.example/",
        "https://user{sub1}@offer.example/",
        "{sub1}://offer.example/",
        "https://offer.example\\{sub1}",
    ] {
        assert!(
            matches!(UrlTemplate::parse(bad), Err(TemplateError::MacroInAuthority(_) | TemplateError::NotHttp(_))),
            "{bad}"
        );
    }
    for bad in ["javascript:alert(1)", "ftp://x.example/", "//offer.example/", "offer.example/a", "mailto:a@b.c"] {
        assert!(matches!(UrlTemplate::parse(bad), Err(TemplateError::NotHttp(_))), "{bad}");
    }
    for bad in ["https:///path", "https://exa mple.com/", "https://offer.example:99999/"] {
        assert!(matches!(UrlTemplate::parse(bad), Err(TemplateError::Invalid(..))), "{bad}");
    }
}

#[test]
fn a_changed_origin_is_refused() {
    // Build a template by hand whose literal tail would move the host (parse never makes one).
    let mut t = UrlTemplate::parse("https://offer.example/").unwrap_or_else(|e| panic!("{e}"));
    t.prefix = "https://evil.example".into();
    let c = ClickContext::default();
    let facts = Facts::new(&c, Utc::now());
    let values = MacroValues {
        click_id: "",
        campaign_id: "",
        campaign_key: "",
        stream_id: "",
        destination_id: "",
        facts: &facts,
    };
    assert_eq!(t.render(&values), Err(RenderError::OriginChanged));
    t.prefix = "https://offer.example:8443".into();
    assert_eq!(t.render(&values), Err(RenderError::OriginChanged));
    t.prefix = "http://offer.example".into();
    assert_eq!(t.render(&values), Err(RenderError::OriginChanged));
    t.prefix = "https://offer.example:443".into();
    assert!(t.render(&values).is_ok(), "the default port is the same port");
}

#[test]
fn display_is_the_template() {
    let t = UrlTemplate::parse(" https://offer.example/?c={clickId} ").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.to_string(), "https://offer.example/?c={clickId}");
    assert_eq!(t.as_str(), "https://offer.example/?c={clickId}");
}
