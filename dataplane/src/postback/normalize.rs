//! Postback normalisation: the request's parameters, read through the network's template (with the MVP's
//! aliases as fallbacks), become one [`Normalized`] conversion — or a [`Rejection`] saying which parameter is
//! wrong. Pure: no I/O, unit-tested here.
//!
//! Rules: the transaction ID and the click ID are required (1–256 printable characters); the payout is a
//! decimal (never a float) in `0..=1e12`, `0` when absent; the currency is three letters, upper-cased,
//! `USD` when absent; the status goes through the template's `statusMap` (case-insensitive), else its
//! `defaultStatus`.

use std::str::FromStr;

use rust_decimal::Decimal;
use traffoflex_crds::{ConversionStatus, PostbackTemplateSpec};

/// Longest accepted click or transaction ID, event type or status value.
pub const MAX_ID_LEN: usize = 256;
/// The currency when the postback names none.
pub const DEFAULT_CURRENCY: &str = "USD";
/// Click-ID parameter aliases of the MVP, tried after the template's own name.
pub const CLICK_ID_ALIASES: &[&str] = &["click_id", "clickid", "cid", "subid", "sub_id"];
/// Transaction-ID aliases.
pub const TRANSACTION_ID_ALIASES: &[&str] = &["transaction_id", "transactionId", "txid", "tx", "tid", "order_id"];
/// Payout aliases.
pub const PAYOUT_ALIASES: &[&str] = &["payout", "sum", "amount", "revenue"];
/// Currency aliases.
pub const CURRENCY_ALIASES: &[&str] = &["currency"];
/// Status aliases.
pub const STATUS_ALIASES: &[&str] = &["status"];
/// Event-type aliases.
pub const EVENT_TYPE_ALIASES: &[&str] = &["event_type", "eventType"];

/// A postback's parameters in arrival order (query, then body).
pub type Params = [(String, String)];

/// What a postback reports, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    pub click_id: String,
    pub transaction_id: String,
    pub payout: Decimal,
    pub currency: String,
    pub status: ConversionStatus,
    pub event_type: String,
}

/// Why a postback was refused: a stable `code` and a message naming the parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Rejection {
    pub code: &'static str,
    pub message: String,
}

impl Rejection {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// The first non-empty value of `name`, else of the aliases; with the parameter name it came from.
pub fn lookup<'p>(params: &'p Params, name: Option<&str>, aliases: &[&str]) -> Option<(&'p str, &'p str)> {
    let find = |n: &str| params.iter().find(|(k, v)| k == n && !v.is_empty()).map(|(k, v)| (k.as_str(), v.as_str()));
    name.and_then(find).or_else(|| aliases.iter().find_map(|a| find(a)))
}

/// Reads `params` through `template` (`None`: the aliases only).
pub fn normalize(params: &Params, template: Option<&PostbackTemplateSpec>) -> Result<Normalized, Rejection> {
    let names = template.map(|t| &t.params);
    let transaction_id = lookup(params, names.and_then(|p| p.transaction_id.as_deref()), TRANSACTION_ID_ALIASES)
        .map(|(_, v)| v)
        .ok_or_else(|| Rejection::new("missingTransactionId", "the postback has no transaction ID"))?;
    check_id("transaction ID", transaction_id)?;
    let click_id = lookup(params, names.map(|p| p.click_id.as_str()), CLICK_ID_ALIASES)
        .map(|(_, v)| v)
        .ok_or_else(|| Rejection::new("missingClickId", "the postback has no click ID"))?;
    check_id("click ID", click_id)?;
    let payout = match lookup(params, names.and_then(|p| p.payout.as_deref()), PAYOUT_ALIASES) {
        Some((name, v)) => payout(name, v)?,
        None => Decimal::ZERO,
    };
    let currency = match lookup(params, names.and_then(|p| p.currency.as_deref()), CURRENCY_ALIASES) {
        Some((name, v)) => currency(name, v)?,
        None => DEFAULT_CURRENCY.to_owned(),
    };
    let status_value = lookup(params, names.and_then(|p| p.status.as_deref()), STATUS_ALIASES).map(|(_, v)| v);
    if let Some(v) = status_value {
        check_text("status", v)?;
    }
    let status = match template {
        Some(t) => t.map_status(status_value),
        None => builtin_status(status_value),
    };
    let event_type = lookup(params, names.and_then(|p| p.event_type.as_deref()), EVENT_TYPE_ALIASES)
        .map(|(_, v)| v)
        .unwrap_or_default();
    check_text("event type", event_type)?;
    Ok(Normalized {
        click_id: click_id.to_owned(),
        transaction_id: transaction_id.to_owned(),
        payout,
        currency,
        status,
        event_type: event_type.to_owned(),
    })
}

/// Status names understood without a template: ours, else approved.
fn builtin_status(value: Option<&str>) -> ConversionStatus {
    match value.map(str::to_ascii_lowercase).as_deref() {
        Some("pending") => ConversionStatus::Pending,
        Some("rejected" | "declined") => ConversionStatus::Rejected,
        _ => ConversionStatus::Approved,
    }
}

fn check_id(what: &str, v: &str) -> Result<(), Rejection> {
    let code = if what == "click ID" { "invalidClickId" } else { "invalidTransactionId" };
    if v.len() > MAX_ID_LEN {
        return Err(Rejection::new(code, format!("the {what} is longer than {MAX_ID_LEN} bytes")));
    }
    if v.trim().is_empty() || v.chars().any(char::is_control) {
        return Err(Rejection::new(code, format!("the {what} must be printable text")));
    }
    Ok(())
}

fn check_text(what: &str, v: &str) -> Result<(), Rejection> {
    if v.len() > MAX_ID_LEN || v.chars().any(char::is_control) {
        return Err(Rejection::new(
            "invalidParameter",
            format!("the {what} must be printable text of at most {MAX_ID_LEN} bytes"),
        ));
    }
    Ok(())
}

/// The largest payout accepted.
fn max_payout() -> Decimal {
    Decimal::from(1_000_000_000_000_i64)
}

/// A plain decimal (`12`, `12.50`, `.5`), never a float: no exponent, sign only `+`, at most 1e12.
fn payout(name: &str, v: &str) -> Result<Decimal, Rejection> {
    let bad = |why: &str| Rejection::new("invalidPayout", format!("`{name}` must be {why}, not `{}`", excerpt(v)));
    let plain = v.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+'));
    if !plain || !v.bytes().any(|b| b.is_ascii_digit()) {
        return Err(bad("a decimal number like 12.50"));
    }
    let d = Decimal::from_str(v).map_err(|_| bad("a decimal number like 12.50"))?;
    if d.is_sign_negative() && !d.is_zero() {
        return Err(bad("zero or more"));
    }
    if d > max_payout() {
        return Err(bad("at most 1000000000000"));
    }
    Ok(d.abs().normalize())
}

fn currency(name: &str, v: &str) -> Result<String, Rejection> {
    if v.len() == 3 && v.bytes().all(|b| b.is_ascii_alphabetic()) {
        Ok(v.to_ascii_uppercase())
    } else {
        Err(Rejection::new(
            "invalidCurrency",
            format!("`{name}` must be a 3-letter code like USD, not `{}`", excerpt(v)),
        ))
    }
}

/// At most 64 characters of `v`, for messages.
fn excerpt(v: &str) -> String {
    let mut s: String = v.chars().take(64).filter(|c| !c.is_control()).collect();
    if v.chars().count() > 64 {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template() -> PostbackTemplateSpec {
        serde_json::from_value(json!({
            "name": "t",
            "params": {"clickId": "clickid", "transactionId": "txid", "payout": "payout", "currency": "cur", "status": "st"},
            "statusMap": {"1": "approved", "0": "rejected", "Hold": "pending"},
            "defaultStatus": "pending"
        }))
        .unwrap()
    }

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn template_names_win_and_aliases_fill_in() {
        let t = template();
        let n = normalize(
            &p(&[("clickid", "C"), ("txid", "T"), ("payout", "12.50"), ("cur", "eur"), ("st", "hold")]),
            Some(&t),
        )
        .unwrap();
        assert_eq!((n.click_id.as_str(), n.transaction_id.as_str()), ("C", "T"));
        assert_eq!(n.payout, Decimal::from_str("12.5").unwrap());
        assert_eq!(n.currency, "EUR");
        assert_eq!(n.status, ConversionStatus::Pending);
        let n = normalize(&p(&[("cid", "C"), ("order_id", "T"), ("sum", "3"), ("status", "x")]), Some(&t)).unwrap();
        assert_eq!((n.click_id.as_str(), n.transaction_id.as_str()), ("C", "T"));
        assert_eq!(n.payout, Decimal::from(3));
        assert_eq!(n.currency, "USD");
        // `status` is not this template's name for the status: the default applies.
        assert_eq!(n.status, ConversionStatus::Pending);
        let n = normalize(&p(&[("sub_id", "C"), ("tx", "T"), ("st", "0")]), Some(&t)).unwrap();
        assert_eq!((n.payout, n.status), (Decimal::ZERO, ConversionStatus::Rejected));
        let n = normalize(&p(&[("subid", "C"), ("tid", "T"), ("amount", "1"), ("event_type", "sale")]), None).unwrap();
        assert_eq!((n.status, n.event_type.as_str()), (ConversionStatus::Approved, "sale"));
        let n =
            normalize(&p(&[("click_id", "C"), ("transaction_id", "T"), ("revenue", "2"), ("status", "Pending")]), None)
                .unwrap();
        assert_eq!((n.payout, n.status), (Decimal::from(2), ConversionStatus::Pending));
    }

    #[test]
    fn bad_values_are_rejected_with_their_code() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("clickid", "C")], "missingTransactionId"),
            (&[("clickid", "C"), ("txid", "")], "missingTransactionId"),
            (&[("txid", "T")], "missingClickId"),
            (&[("clickid", " "), ("txid", "T")], "invalidClickId"),
            (&[("clickid", "C"), ("txid", "a\u{1}b")], "invalidTransactionId"),
            (&[("clickid", "C"), ("txid", "T"), ("payout", "abc")], "invalidPayout"),
            (&[("clickid", "C"), ("txid", "T"), ("payout", "-1")], "invalidPayout"),
            (&[("clickid", "C"), ("txid", "T"), ("payout", "NaN")], "invalidPayout"),
            (&[("clickid", "C"), ("txid", "T"), ("payout", "inf")], "invalidPayout"),
            (&[("clickid", "C"), ("txid", "T"), ("payout", "1e3")], "invalidPayout"),
            (&[("clickid", "C"), ("txid", "T"), ("payout", "1000000000000.01")], "invalidPayout"),
            (&[("clickid", "C"), ("txid", "T"), ("payout", "1.2.3")], "invalidPayout"),
            (&[("clickid", "C"), ("txid", "T"), ("cur", "US")], "invalidCurrency"),
            (&[("clickid", "C"), ("txid", "T"), ("cur", "U$D")], "invalidCurrency"),
        ];
        let t = template();
        for (params, code) in cases {
            let err = normalize(&p(params), Some(&t)).unwrap_err();
            assert_eq!(err.code, *code, "{params:?}: {err}");
        }
        let long = "x".repeat(MAX_ID_LEN + 1);
        assert_eq!(
            normalize(&p(&[("clickid", "C"), ("txid", &long)]), Some(&t)).unwrap_err().code,
            "invalidTransactionId"
        );
    }

    #[test]
    fn payout_edges() {
        assert_eq!(payout("p", "1000000000000").unwrap(), max_payout());
        assert_eq!(payout("p", "-0").unwrap(), Decimal::ZERO);
        assert_eq!(payout("p", ".5").unwrap(), Decimal::from_str("0.5").unwrap());
        assert!(payout("p", "+").is_err());
        assert!(payout("p", "").is_err());
    }
}
