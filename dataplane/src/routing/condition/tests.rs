//! Every operator over every kind of field: a match, a non-match and a missing value.

use chrono::{TimeZone, Utc};
use rust_decimal::Decimal;
use serde_json::json;
use traffoflex_crds::Condition;

use super::CompiledCondition;
use crate::routing::context::{ClickContext, Facts};

fn compile(json: serde_json::Value) -> Result<CompiledCondition, String> {
    let tree: Condition = serde_json::from_value(json).map_err(|e| e.to_string())?;
    CompiledCondition::compile(&tree)
}

fn click() -> ClickContext<'static> {
    let mut c = ClickContext::from_query([
        ("country", "DE"),
        ("device", "mobile"),
        ("os", "Android"),
        ("browser", "Chrome"),
        ("lang", "de"),
        ("region", "BY"),
        ("city", "München"),
        ("carrier", "Telekom"),
        ("asn", "AS3320"),
        ("source_click_id", "Tok-1"),
        ("utm_source", "Facebook"),
        ("utm_term", "red shoes"),
        ("sub1", "abc"),
        ("sub10", "42"),
        ("cost", "0.50"),
        ("currency", "eur"),
        ("kw", "Shoes"),
        ("bid", "1.5"),
        ("addr", "10.1.2.3"),
    ]);
    c.ip = "192.168.1.20".parse().ok();
    c.user_agent = "Mozilla/5.0 (Linux; Android 14)".into();
    c.referrer = "https://news.example/article".into();
    c.is_bot = false;
    c.is_unique = true;
    c.trafficback_depth = 1;
    c
}

/// Whether the rule `{field, op, value}` (or `values` when `value` is an array) matches `ctx`.
fn check(ctx: &ClickContext<'_>, field: &str, op: &str, value: serde_json::Value) -> bool {
    let rule = match value {
        serde_json::Value::Null => json!({"field": field, "op": op}),
        serde_json::Value::Array(_) => json!({"field": field, "op": op, "values": value}),
        v => json!({"field": field, "op": op, "value": v}),
    };
    let compiled = compile(rule.clone()).unwrap_or_else(|e| panic!("{rule}: {e}"));
    // 2025-01-01 14:00 UTC, a Wednesday.
    let now = Utc.with_ymd_and_hms(2025, 1, 1, 14, 0, 0).single().unwrap_or_else(|| panic!("date"));
    compiled.matches(&Facts::new(ctx, now))
}

/// `[matches the click, matches an empty click]` for each rule.
fn both(field: &str, op: &str, value: serde_json::Value) -> [bool; 2] {
    [check(&click(), field, op, value.clone()), check(&ClickContext::default(), field, op, value)]
}

#[test]
fn eq_and_ne() {
    assert_eq!(both("country", "eq", json!("DE")), [true, false]);
    assert_eq!(both("country", "eq", json!("de")), [true, false], "country is case-insensitive");
    assert_eq!(both("country", "eq", json!("AT")), [false, false]);
    assert_eq!(both("country", "ne", json!("AT")), [true, true], "a missing value is not AT");
    assert_eq!(both("country", "ne", json!("de")), [false, true]);
    assert_eq!(both("sub1", "eq", json!("abc")), [true, false]);
    assert_eq!(both("sub1", "eq", json!("ABC")), [false, false], "subs are case-sensitive");
    assert_eq!(both("city", "eq", json!("MÜNCHEN")), [true, false], "Unicode folding");
    assert_eq!(both("currency", "neq", json!("EUR")), [false, true]);
}

#[test]
fn in_and_not_in() {
    assert_eq!(both("country", "in", json!(["at", "DE"])), [true, false]);
    assert_eq!(both("country", "in", json!(["AT", "CH"])), [false, false]);
    assert_eq!(both("country", "notIn", json!(["AT", "CH"])), [true, true]);
    assert_eq!(both("country", "not_in", json!(["DE"])), [false, true]);
    // Long lists are hashed: same answers.
    let many: Vec<String> = (0..50).map(|i| format!("X{i}")).chain(["de".to_string()]).collect();
    assert_eq!(both("country", "in", json!(many)), [true, false]);
    let many: Vec<String> = (0..50).map(|i| format!("v{i}")).chain(["abc".to_string()]).collect();
    assert_eq!(both("sub1", "in", json!(many)), [true, false]);
    assert_eq!(both("deviceType", "in", json!(["tablet", "mobile"])), [true, false]);
}

#[test]
fn contains_family() {
    assert_eq!(both("userAgent", "contains", json!("Android")), [true, false]);
    assert_eq!(both("userAgent", "contains", json!("android")), [false, false], "userAgent is exact");
    assert_eq!(both("userAgent", "notContains", json!("iPhone")), [true, true]);
    assert_eq!(both("userAgent", "not_contains", json!("Linux")), [false, true]);
    assert_eq!(both("os", "contains", json!("DROID")), [true, false], "os is case-insensitive");
    assert_eq!(both("referrer", "startsWith", json!("https://news.")), [true, false]);
    assert_eq!(both("referrer", "prefix", json!("http://")), [false, false]);
    assert_eq!(both("referrer", "starts_with", json!("https://")), [true, false]);
    assert_eq!(both("referrer", "endsWith", json!("/article")), [true, false]);
    assert_eq!(both("referrer", "ends_with", json!("/other")), [false, false]);
    assert_eq!(both("ip", "startsWith", json!("192.168.")), [true, false], "addresses read as text");
}

#[test]
fn regex() {
    assert_eq!(both("utmTerm", "regex", json!("^red\\s")), [true, false]);
    assert_eq!(both("utmTerm", "regex", json!("^RED")), [false, false]);
    assert_eq!(both("browser", "regex", json!("^chrom")), [true, false], "folded fields match any case");
    assert_eq!(both("sub10", "regex", json!("^\\d+$")), [true, false]);
    assert!(compile(json!({"field": "sub1", "op": "regex", "value": "("})).is_err());
    assert!(compile(json!({"field": "sub1", "op": "regex", "value": 5})).is_err());
}

#[test]
fn cidr() {
    assert_eq!(both("ip", "cidr", json!("192.168.0.0/16")), [true, false]);
    assert_eq!(both("ip", "cidr", json!("10.0.0.0/8")), [false, false]);
    assert_eq!(both("ip", "cidr", json!(["10.0.0.0/8", "192.168.1.20"])), [true, false]);
    assert_eq!(both("param:addr", "cidr", json!("10.0.0.0/8")), [true, false]);
    let mut mapped = click();
    mapped.ip = "::ffff:192.168.1.20".parse().ok();
    assert!(check(&mapped, "ip", "cidr", json!("192.168.1.0/24")), "IPv4-mapped IPv6 reads as IPv4");
    assert!(check(&mapped, "ip", "eq", json!("192.168.1.20")));
    let mut v6 = click();
    v6.ip = "2001:db8::7".parse().ok();
    assert!(check(&v6, "ip", "cidr", json!("2001:db8::/32")));
    assert!(!check(&v6, "ip", "cidr", json!("192.168.0.0/16")));
    assert!(compile(json!({"field": "ip", "op": "cidr", "value": "nope"})).is_err());
    assert!(compile(json!({"field": "country", "op": "cidr", "value": "10.0.0.0/8"})).is_err());
}

#[test]
fn numeric_comparisons() {
    assert_eq!(both("cost", "gt", json!(0.4)), [true, false]);
    assert_eq!(both("cost", "gt", json!("0.5")), [false, false]);
    assert_eq!(both("cost", "gte", json!(0.5)), [true, false]);
    assert_eq!(both("cost", "lt", json!(0.5)), [false, false]);
    assert_eq!(both("cost", "lte", json!("0.50")), [true, false]);
    assert_eq!(both("cost", "eq", json!(0.5)), [true, false], "decimal equality: 0.50 == 0.5");
    assert_eq!(both("asn", "eq", json!(3320)), [true, false]);
    assert_eq!(both("asn", "in", json!([15169, 3320])), [true, false]);
    assert_eq!(both("asn", "lt", json!(4000)), [true, false]);
    assert_eq!(both("hour", "gte", json!(14)), [true, true], "hour always exists");
    assert_eq!(both("hour", "lt", json!(14)), [false, false]);
    assert_eq!(both("trafficbackDepth", "gte", json!(1)), [true, false]);
    assert_eq!(both("trafficbackDepth", "eq", json!(0)), [false, true]);
    assert_eq!(both("param:bid", "gt", json!(1)), [true, false], "parameters compare as numbers");
    assert_eq!(both("sub10", "lte", json!(42)), [true, false]);
    assert_eq!(both("param:kw", "gt", json!(1)), [false, false], "a non-number never compares");
    assert_eq!(both("country", "lt", json!(1)), [false, false]);
    assert!(compile(json!({"field": "cost", "op": "gt", "value": "cheap"})).is_err());
}

#[test]
fn exists_and_not_exists() {
    assert_eq!(both("sub1", "exists", json!(null)), [true, false]);
    assert_eq!(both("sub2", "exists", json!(null)), [false, false]);
    assert_eq!(both("sub2", "notExists", json!(null)), [true, true]);
    assert_eq!(both("sub1", "not_exists", json!(null)), [false, true]);
    assert_eq!(both("ip", "exists", json!(null)), [true, false]);
    assert_eq!(both("cost", "exists", json!(null)), [true, false]);
    assert_eq!(both("param:kw", "exists", json!(null)), [true, false]);
    assert_eq!(both("isBot", "exists", json!(null)), [true, true]);
    let mut empty_param = ClickContext::from_query([("kw", "")]);
    empty_param.ip = None;
    assert!(check(&empty_param, "param:kw", "notExists", json!(null)), "empty is absent");
}

#[test]
fn booleans_weekdays_and_params() {
    assert_eq!(both("isBot", "eq", json!(false)), [true, true]);
    assert_eq!(both("isBot", "eq", json!(true)), [false, false]);
    assert_eq!(both("isUnique", "eq", json!("true")), [true, false]);
    assert_eq!(both("dayOfWeek", "eq", json!("wed")), [true, true]);
    assert_eq!(both("dayOfWeek", "in", json!(["SAT", "sun"])), [false, false]);
    assert_eq!(both("param:kw", "eq", json!("Shoes")), [true, false]);
    assert_eq!(both("query.kw", "eq", json!("shoes")), [false, false], "parameters are exact");
    assert_eq!(both("param:bid", "eq", json!(1.50)), [true, false], "a number operand compares numerically");
    assert_eq!(both("param:bid", "eq", json!("1.50")), [false, false], "a text operand compares text");
    assert_eq!(both("sourceClickId", "eq", json!("Tok-1")), [true, false]);
    assert_eq!(both("source", "eq", json!("src1")), [false, false]);
    assert_eq!(both("utmSource", "eq", json!("Facebook")), [true, false]);
    assert_eq!(both("isp", "eq", json!("TELEKOM")), [true, false]);
    assert_eq!(both("language", "eq", json!("DE")), [true, false]);
    assert_eq!(both("region", "eq", json!("by")), [true, false]);
}

#[test]
fn trees() {
    let tree = json!({"all": [
        {"field": "country", "op": "in", "values": ["DE", "AT"]},
        {"field": "deviceType", "op": "eq", "value": "mobile"},
    ]});
    let c = compile(tree).unwrap_or_else(|e| panic!("{e}"));
    let now = Utc::now();
    assert!(c.matches(&Facts::new(&click(), now)));
    let desktop = ClickContext { device_type: "desktop".into(), ..click() };
    assert!(!c.matches(&Facts::new(&desktop, now)));

    let any = compile(json!({"any": [
        {"field": "country", "op": "eq", "value": "FR"},
        {"not": {"field": "isBot", "op": "eq", "value": true}},
    ]}))
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(any.matches(&Facts::new(&click(), now)));
    let bot = ClickContext { is_bot: true, ..click() };
    assert!(!any.matches(&Facts::new(&bot, now)));

    let empty_all = compile(json!({"all": []})).unwrap_or_else(|e| panic!("{e}"));
    assert!(empty_all.matches(&Facts::new(&click(), now)));
    let empty_any = compile(json!({"any": []})).unwrap_or_else(|e| panic!("{e}"));
    assert!(!empty_any.matches(&Facts::new(&click(), now)));
    // The MVP's list shape is an `all`.
    let list = compile(json!([{"field": "sub1", "op": "eq", "value": "abc"}, {"field": "sub2", "op": "exists"}]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!list.matches(&Facts::new(&click(), now)));
}

#[test]
fn campaign_defaults_are_seen_by_conditions() {
    let c = ClickContext::default();
    let facts = Facts::new(&c, Utc::now()).with_defaults(Some("src1"), Some((Decimal::new(5, 2), "USD")));
    let source = compile(json!({"field": "source", "op": "eq", "value": "src1"})).unwrap_or_else(|e| panic!("{e}"));
    assert!(source.matches(&facts));
    let cost = compile(json!({"field": "cost", "op": "eq", "value": 0.05})).unwrap_or_else(|e| panic!("{e}"));
    assert!(cost.matches(&facts));
    let currency = compile(json!({"field": "currency", "op": "eq", "value": "usd"})).unwrap_or_else(|e| panic!("{e}"));
    assert!(currency.matches(&facts));
}

#[test]
fn bad_trees_do_not_compile() {
    assert!(compile(json!({"field": "nope", "op": "eq", "value": 1})).is_err());
    assert!(compile(json!({"field": "isBot", "op": "eq", "value": "maybe"})).is_err());
    assert!(compile(json!({"field": "asn", "op": "in", "values": ["x"]})).is_err());
    assert!(compile(json!({"field": "ip", "op": "eq", "value": "host"})).is_err());
    assert!(compile(json!({"field": "sub1", "op": "eq"})).is_err());
    assert!(compile(json!({"field": "sub1", "op": "contains", "values": ["a", "b"]})).is_err());
    let mut deep = json!({"field": "sub1", "op": "exists"});
    for _ in 0..20 {
        deep = json!({"not": deep});
    }
    assert!(compile(deep).is_err());
}

/// The rules of a tree, in order.
fn rules(node: &super::Node, out: &mut Vec<std::sync::Arc<super::Rule>>) {
    match node {
        super::Node::All(children) | super::Node::Any(children) => children.iter().for_each(|c| rules(c, out)),
        super::Node::Not(child) => rules(child, out),
        super::Node::Rule(rule) => out.push(std::sync::Arc::clone(rule)),
    }
}

/// The `not` branch of a tree's root.
fn not_branch(c: &CompiledCondition) -> std::sync::Arc<super::Node> {
    let super::Node::All(children) = &c.0 else { panic!("an `all` root") };
    children
        .iter()
        .find_map(|n| if let super::Node::Not(b) = n { Some(std::sync::Arc::clone(b)) } else { None })
        .unwrap_or_else(|| panic!("a `not` branch"))
}

#[test]
fn conditions_compiled_with_one_cache_share_their_equal_rules_and_subtrees_and_still_evaluate_apart() {
    let tree = |sub3: &str| -> Condition {
        serde_json::from_value(json!({"all": [
            {"field": "country", "op": "in", "values": ["DE", "AT", "CH"]},
            {"not": {"any": [{"field": "sub2", "op": "startsWith", "value": "test"}, {"field": "isBot", "op": "eq", "value": true}]}},
            {"field": "sub3", "op": "ne", "value": sub3}
        ]}))
        .unwrap_or_else(|e| panic!("{e}"))
    };
    let mut cache = super::NodeCache::default();
    let a = CompiledCondition::compile_with(&tree("a"), &mut cache).unwrap_or_else(|e| panic!("{e}"));
    let b = CompiledCondition::compile_with(&tree("b"), &mut cache).unwrap_or_else(|e| panic!("{e}"));
    let (mut ra, mut rb) = (Vec::new(), Vec::new());
    rules(&a.0, &mut ra);
    rules(&b.0, &mut rb);
    assert_eq!((ra.len(), rb.len()), (4, 4));
    assert!(std::sync::Arc::ptr_eq(&ra[0], &rb[0]), "the country rule is kept once");
    assert!(std::sync::Arc::ptr_eq(&not_branch(&a), &not_branch(&b)), "the `not` branch is kept once");
    assert!(!std::sync::Arc::ptr_eq(&ra[3], &rb[3]), "the sub3 rules differ");

    let now = Utc.with_ymd_and_hms(2025, 1, 1, 14, 0, 0).single().unwrap_or_else(|| panic!("date"));
    let mut ctx = ClickContext::from_query([("country", "DE"), ("sub3", "a")]);
    assert!(!a.matches(&Facts::new(&ctx, now)), "sub3 is a");
    assert!(b.matches(&Facts::new(&ctx, now)));
    ctx.country = "FR".into();
    assert!(!b.matches(&Facts::new(&ctx, now)));
    ctx.country = "DE".into();
    ctx.subs[1] = "testing".into();
    assert!(!b.matches(&Facts::new(&ctx, now)), "the shared branch still excludes sub2 test…");
    // country, the any branch's two rules, the any, the not, sub3 a, sub3 b: not the two whole trees.
    assert_eq!(cache.0.len(), 7, "each distinct rule and subtree was compiled once");
}

#[test]
fn a_subtree_compiled_before_is_still_too_deep_where_it_nests_deeper() {
    let mut chain = json!({"field": "sub1", "op": "exists"});
    for _ in 1..super::MAX_CONDITION_DEPTH {
        chain = json!({"not": chain});
    }
    let parse = |v: serde_json::Value| -> Condition { serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}")) };
    let mut cache = super::NodeCache::default();
    assert!(CompiledCondition::compile_with(&parse(chain.clone()), &mut cache).is_ok(), "exactly the deepest allowed");
    let deeper = parse(json!({"all": [chain]}));
    let err = CompiledCondition::compile_with(&deeper, &mut cache).err().unwrap_or_else(|| panic!("too deep"));
    assert!(err.contains("nest deeper"), "{err}");
    assert!(CompiledCondition::compile(&deeper).is_err(), "as without a cache");
}
