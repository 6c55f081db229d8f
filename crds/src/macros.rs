//! URL templates: the macro names each kind of URL may use, and the check that a macro can only fill in a
//! path, query or fragment — never the scheme, host or port.

/// Macros of destination and trafficback URLs (besides `{param:NAME}`, any inbound query parameter).
pub const CLICK_MACROS: &[&str] = &[
    "clickId",
    "campaignId",
    "campaignKey",
    "streamId",
    "destinationId",
    "source",
    "sourceClickId",
    "sub1",
    "sub2",
    "sub3",
    "sub4",
    "sub5",
    "sub6",
    "sub7",
    "sub8",
    "sub9",
    "sub10",
    "utmSource",
    "utmMedium",
    "utmCampaign",
    "utmContent",
    "utmTerm",
    "country",
    "ip",
    "cost",
    "currency",
];

/// The original MVP's snake_case spellings of click macros, accepted in destination and trafficback URLs
/// (with `{query.NAME}` for `{param:NAME}`).
pub const MVP_CLICK_ALIASES: &[&str] = &[
    "click_id",
    "campaign_id",
    "campaign_key",
    "stream_id",
    "destination_id",
    "source_click_id",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
];

/// Macros that outbound postback URLs add to [`CLICK_MACROS`].
pub const POSTBACK_MACROS: &[&str] = &["payout", "status", "transactionId", "conversionId", "eventType", "networkId"];

/// Names the original MVP accepted in outbound postback URLs (matched case-insensitively there too).
pub const MVP_POSTBACK_ALIASES: &[&str] = &[
    "source_click_id",
    "click_id",
    "cid",
    "conversion_id",
    "transaction_id",
    "sum",
    "revenue",
    "event_type",
    "network_id",
    "s1",
    "s2",
    "s3",
    "s4",
];

/// Which macros a URL may contain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MacroSet {
    /// Destination and trafficback URLs: [`CLICK_MACROS`] and `{param:NAME}`.
    Click,
    /// Outbound postback URLs: click macros, [`POSTBACK_MACROS`] and the MVP's names, case-insensitively.
    Postback,
    /// A plain URL (health checks): no macros.
    None,
}

impl MacroSet {
    /// Whether `{name}` is a macro of this set.
    pub fn allows(self, name: &str) -> bool {
        let param = name.strip_prefix("param:").or_else(|| name.strip_prefix("query.")).is_some_and(is_param_name);
        match self {
            Self::None => false,
            Self::Click => param || CLICK_MACROS.contains(&name) || MVP_CLICK_ALIASES.contains(&name),
            Self::Postback => {
                param
                    || [CLICK_MACROS, POSTBACK_MACROS, MVP_POSTBACK_ALIASES]
                        .iter()
                        .flat_map(|set| set.iter())
                        .any(|known| known.eq_ignore_ascii_case(name))
            }
        }
    }

    fn listing(self) -> String {
        match self {
            Self::None => "none".to_string(),
            Self::Click => format!("{}, {{param:NAME}}", braced(CLICK_MACROS)),
            Self::Postback => {
                format!("{}, {}, {{param:NAME}}", braced(CLICK_MACROS), braced(POSTBACK_MACROS))
            }
        }
    }
}

fn braced(names: &[&str]) -> String {
    names.iter().map(|n| format!("{{{n}}}")).collect::<Vec<_>>().join(" ")
}

/// A query parameter name usable in `{param:NAME}`.
fn is_param_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'[' | b']'))
}

/// The macro names in `template`, in order (`{clickId}` gives `clickId`), or the message for the first
/// unbalanced brace.
pub fn macro_names(template: &str) -> Result<Vec<&str>, String> {
    let mut names = Vec::new();
    let mut rest = template;
    let mut offset = 0;
    while let Some(open) = rest.find(['{', '}']) {
        if rest.as_bytes()[open] == b'}' {
            return Err(format!("`}}` at character {} closes no macro", offset + open + 1));
        }
        let after = &rest[open + 1..];
        let Some(close) = after.find(['{', '}']).filter(|&c| after.as_bytes()[c] == b'}') else {
            return Err(format!(
                "`{{` at character {} starts a macro that is never closed with `}}`",
                offset + open + 1
            ));
        };
        names.push(&after[..close]);
        let consumed = open + 1 + close + 1;
        offset += consumed;
        rest = &rest[consumed..];
    }
    Ok(names)
}

/// Every problem with an absolute http(s) URL template, as messages (empty when it is fine).
///
/// The scheme and authority (`https://host:port`) must be literal, so a macro can never send a user, or an
/// outbound request, anywhere but the host written here.
pub fn check_url_template(template: &str, macros: MacroSet) -> Vec<String> {
    let mut problems = Vec::new();
    let template = template.trim();
    if template.is_empty() {
        return vec!["a URL is required, e.g. https://offer.example/path".to_string()];
    }
    let Some((scheme, rest)) = template.split_once("://") else {
        return vec![format!("`{template}` is not an absolute URL: start it with https:// or http://")];
    };
    if scheme.contains(['{', '}']) {
        problems.push("the scheme can't be a macro: write https:// or http://".to_string());
    } else if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        problems.push(format!("only http and https URLs are allowed, not `{scheme}://`"));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() {
        problems.push("the URL has no host: write it as https://host/path".to_string());
    } else if authority.contains(['{', '}']) {
        problems.push(format!(
            "macros can't change the host or port (`{authority}`): write the host literally and put macros in the path or query"
        ));
    }
    match macro_names(template) {
        Err(message) => problems.push(message),
        Ok(names) => {
            for name in names {
                if macros == MacroSet::None {
                    problems.push(format!("`{{{name}}}`: macros aren't available in this URL"));
                    break;
                }
                if !macros.allows(name) {
                    problems.push(format!("unknown macro `{{{name}}}`; known macros: {}", macros.listing()));
                }
            }
        }
    }
    if problems.is_empty() {
        // Put a plain value where each macro is, then let the URL parser judge the rest.
        let filled = fill(template);
        match url::Url::parse(&filled) {
            Ok(url) if url.host_str().is_none_or(str::is_empty) => problems.push("the URL has no host".to_string()),
            Ok(_) => {}
            Err(err) => problems.push(format!("not a valid URL: {err}")),
        }
    }
    problems
}

fn fill(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut in_macro = false;
    for c in template.chars() {
        match c {
            '{' => in_macro = true,
            '}' => {
                in_macro = false;
                out.push('x');
            }
            _ if !in_macro => out.push(c),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_urls_pass() {
        let click = "https://offer.example/a?cid={clickId}&s={sub1}&q={param:kw}";
        assert_eq!(check_url_template(click, MacroSet::Click), Vec::<String>::new());
        let pb = "https://source.example/pb?click={sub1}&payout={payout}&status={status}&t={TRANSACTION_ID}";
        assert_eq!(check_url_template(pb, MacroSet::Postback), Vec::<String>::new());
        let mvp = "https://offer.example/a?cid={click_id}&sc={source_click_id}&u={utm_source}&q={query.kw}";
        assert_eq!(check_url_template(mvp, MacroSet::Click), Vec::<String>::new(), "the MVP's spellings");
        assert_eq!(check_url_template("https://x.example/{CLICK_ID}", MacroSet::Click).len(), 1, "exact case");
    }

    #[test]
    fn macros_never_reach_scheme_or_host() {
        for bad in [
            "{scheme}://offer.example/",
            "https://{host}/a",
            "https://offer.example:{port}/a",
            "https://{sub1}.offer.example/a",
            "https://user{x}@offer.example/",
        ] {
            assert!(!check_url_template(bad, MacroSet::Click).is_empty(), "{bad}");
        }
        assert!(check_url_template("https://offer.example/{sub1}", MacroSet::Click).is_empty());
        assert!(check_url_template("https://offer.example#{sub1}", MacroSet::Click).is_empty());
    }

    #[test]
    fn bad_templates() {
        assert_eq!(check_url_template("ftp://x.example/", MacroSet::Click).len(), 1);
        assert_eq!(check_url_template("offer.example/a", MacroSet::Click).len(), 1);
        assert_eq!(check_url_template("https://x.example/{nope}", MacroSet::Click).len(), 1);
        assert_eq!(check_url_template("https://x.example/{payout}", MacroSet::Click).len(), 1);
        assert_eq!(check_url_template("https://x.example/{sub1", MacroSet::Click).len(), 1);
        assert_eq!(check_url_template("https://x.example/sub1}", MacroSet::Click).len(), 1);
        assert_eq!(check_url_template("https://x.example/{param:}", MacroSet::Click).len(), 1);
        assert_eq!(check_url_template("https://x.example/{sub1}", MacroSet::None).len(), 1);
        assert_eq!(check_url_template("https:///path", MacroSet::None).len(), 1);
    }
}
