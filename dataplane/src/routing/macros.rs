//! Destination and trafficback URL templates: parsed once at snapshot build into literal and macro
//! segments ([`UrlTemplate::parse`]), rendered per click in one pass into one `String`
//! ([`UrlTemplate::render`]).
//!
//! Macros (CONTRACT.md, plus PARITY's `{sourceClickId}`): `{clickId} {campaignId} {campaignKey} {streamId}
//! {destinationId} {source} {sourceClickId} {sub1}…{sub10} {utmSource} {utmMedium} {utmCampaign}
//! {utmContent} {utmTerm} {country} {ip} {cost} {currency} {param:NAME}` (`{query.NAME}` too). Names are
//! exact; the MVP's snake_case spellings (`{click_id}`, `{utm_source}`, …) are accepted as aliases. An
//! unknown macro renders empty; a `{` without a closing `}` is literal text.
//!
//! **Safety.** A value is percent-encoded (only RFC 3986 unreserved characters stay), so it can't end a
//! path segment, start a query or fragment, or smuggle `:` `@` `/`. More than that, a macro can never change
//! where a user is sent: the template is split at the end of its authority and only the path, query and
//! fragment are ever substituted (a template with a macro in its scheme or authority doesn't parse), and
//! every rendered URL is parsed again and refused unless its scheme, host and port equal the template's.

use std::fmt;

use url::Url;

use super::context::Facts;
use super::text::{StackStr, percent_encode_into};

/// A macro of a click URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Macro {
    /// Our click ID.
    ClickId,
    /// The campaign's ID.
    CampaignId,
    /// The campaign's key.
    CampaignKey,
    /// The stream's ID (empty for trafficback).
    StreamId,
    /// The destination's ID (empty for trafficback).
    DestinationId,
    /// The traffic source key.
    Source,
    /// The traffic source's own click token.
    SourceClickId,
    /// `sub1` … `sub10`.
    Sub(u8),
    /// `utm_source`.
    UtmSource,
    /// `utm_medium`.
    UtmMedium,
    /// `utm_campaign`.
    UtmCampaign,
    /// `utm_content`.
    UtmContent,
    /// `utm_term`.
    UtmTerm,
    /// Country code.
    Country,
    /// Client IP address.
    Ip,
    /// The click's cost.
    Cost,
    /// The cost's currency.
    Currency,
    /// An inbound query parameter.
    Param(Box<str>),
    /// Anything else: renders empty.
    Unknown,
}

impl Macro {
    /// The macro a `{name}` stands for.
    pub fn from_name(name: &str) -> Self {
        if let Some(param) = name.strip_prefix("param:").or_else(|| name.strip_prefix("query.")) {
            return if param.is_empty() { Self::Unknown } else { Self::Param(param.into()) };
        }
        if let Some(n) = name.strip_prefix("sub").and_then(|n| n.parse::<u8>().ok())
            && (1..=10).contains(&n)
            && name.len() == if n == 10 { 5 } else { 4 }
        {
            return Self::Sub(n);
        }
        match name {
            "clickId" | "click_id" => Self::ClickId,
            "campaignId" | "campaign_id" => Self::CampaignId,
            "campaignKey" | "campaign_key" => Self::CampaignKey,
            "streamId" | "stream_id" => Self::StreamId,
            "destinationId" | "destination_id" => Self::DestinationId,
            "source" => Self::Source,
            "sourceClickId" | "source_click_id" => Self::SourceClickId,
            "utmSource" | "utm_source" => Self::UtmSource,
            "utmMedium" | "utm_medium" => Self::UtmMedium,
            "utmCampaign" | "utm_campaign" => Self::UtmCampaign,
            "utmContent" | "utm_content" => Self::UtmContent,
            "utmTerm" | "utm_term" => Self::UtmTerm,
            "country" => Self::Country,
            "ip" => Self::Ip,
            "cost" => Self::Cost,
            "currency" => Self::Currency,
            _ => Self::Unknown,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    Macro(Macro),
}

/// What a URL template is filled with.
#[derive(Clone, Copy, Debug)]
pub struct MacroValues<'v> {
    /// Our click ID.
    pub click_id: &'v str,
    /// The campaign's ID.
    pub campaign_id: &'v str,
    /// The campaign's key.
    pub campaign_key: &'v str,
    /// The stream's ID (empty for trafficback).
    pub stream_id: &'v str,
    /// The destination's ID (empty for trafficback).
    pub destination_id: &'v str,
    /// The click.
    pub facts: &'v Facts<'v>,
}

/// Why a URL template was refused at build.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// Not `http://…` or `https://…`.
    #[error("`{0}` is not an absolute http(s) URL")]
    NotHttp(String),
    /// A `{` or `}` before the path: a macro could change the host.
    #[error("macros can't be in the scheme, host or port of `{0}`")]
    MacroInAuthority(String),
    /// The scheme and authority don't parse.
    #[error("`{0}` is not a valid URL: {1}")]
    Invalid(String, String),
}

/// Why a rendered URL was refused (a template that parsed never produces one; checked anyway).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The rendered text is not a URL.
    #[error("the rendered URL does not parse: {0}")]
    Invalid(String),
    /// The rendered URL points somewhere else than the template.
    #[error("the rendered URL changed its scheme, host or port")]
    OriginChanged,
}

/// A parsed URL template.
#[derive(Clone, Debug)]
pub struct UrlTemplate {
    raw: Box<str>,
    /// `scheme://authority`, literal.
    prefix: Box<str>,
    segments: Box<[Segment]>,
    scheme: Box<str>,
    host: Box<str>,
    port: Option<u16>,
    capacity: usize,
    /// Every macro is in the query or fragment and the literal text is already as the URL parser writes it,
    /// so a rendered URL is final as built: values are percent-encoded, and the authority is literal and ends
    /// before the first macro (see [`UrlTemplate::render_str`]).
    verbatim: bool,
}

impl fmt::Display for UrlTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl UrlTemplate {
    /// Parses a template: `http(s)://authority` must be literal; macros go in the path, query or fragment.
    pub fn parse(template: &str) -> Result<Self, TemplateError> {
        let t = template.trim();
        let Some((scheme, rest)) = t.split_once("://") else { return Err(TemplateError::NotHttp(t.into())) };
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err(TemplateError::NotHttp(t.into()));
        }
        // The authority ends at the first `/`, `?` or `#` (as crds validation reads it). A `\` doesn't end it
        // here, so a brace after one is refused rather than trusted to the URL parser's reading of `\`.
        let end = scheme.len() + 3 + rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (prefix, tail) = t.split_at(end);
        if prefix.contains(['{', '}']) {
            return Err(TemplateError::MacroInAuthority(t.into()));
        }
        let origin = Url::parse(prefix).map_err(|e| TemplateError::Invalid(t.into(), e.to_string()))?;
        let host = origin
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| TemplateError::Invalid(t.into(), "no host".into()))?;
        let segments = segments(tail);
        let macros = segments.iter().filter(|s| matches!(s, Segment::Macro(_))).count();
        let mut template = Self {
            raw: t.into(),
            prefix: prefix.into(),
            scheme: origin.scheme().into(),
            host: host.into(),
            port: origin.port_or_known_default(),
            capacity: t.len() + 48 * macros + 16,
            segments: segments.into(),
            verbatim: false,
        };
        template.verbatim = template.macros_after_path() && {
            let literal = template.fill(|_, _| {});
            Url::parse(&literal).is_ok_and(|u| u.as_str() == literal)
        };
        Ok(template)
    }

    /// Whether no macro comes before the first `?` or `#` (the path can't gain segments such as `..`).
    fn macros_after_path(&self) -> bool {
        for segment in self.segments.iter() {
            match segment {
                Segment::Literal(text) if text.contains(['?', '#']) => return true,
                Segment::Literal(_) => {}
                Segment::Macro(_) => return false,
            }
        }
        true
    }

    /// The prefix and the literal segments, with `value` writing each macro.
    fn fill(&self, mut value: impl FnMut(&mut String, &Macro)) -> String {
        let mut out = String::with_capacity(self.capacity);
        out.push_str(&self.prefix);
        for segment in self.segments.iter() {
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Macro(m) => value(&mut out, m),
            }
        }
        out
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Fills the macros and checks the result still points at the template's scheme, host and port.
    pub fn render(&self, values: &MacroValues<'_>) -> Result<Url, RenderError> {
        let out = self.fill(|out, m| push_value(out, m, values));
        let url = Url::parse(&out).map_err(|e| RenderError::Invalid(e.to_string()))?;
        if url.scheme() != &*self.scheme
            || url.host_str() != Some(&*self.host)
            || url.port_or_known_default() != self.port
        {
            return Err(RenderError::OriginChanged);
        }
        Ok(url)
    }
}

impl UrlTemplate {
    /// [`UrlTemplate::render`] as text. Where the template allows (macros only in the query or fragment, its
    /// literal text already normalised), the text is built without parsing it again: each value is
    /// percent-encoded, so it can't end the query or start a fragment, and the scheme, host and port are the
    /// template's literal prefix, which ends before the first macro.
    pub fn render_str(&self, values: &MacroValues<'_>) -> Result<String, RenderError> {
        if self.verbatim {
            return Ok(self.fill(|out, m| push_value(out, m, values)));
        }
        self.render(values).map(String::from)
    }
}

fn segments(mut rest: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut literal = String::new();
    while !rest.is_empty() {
        let Some(open) = rest.find('{') else {
            literal.push_str(rest);
            break;
        };
        let after = &rest[open + 1..];
        match after.find(['{', '}']) {
            Some(close) if after.as_bytes().get(close) == Some(&b'}') => {
                literal.push_str(&rest[..open]);
                if !literal.is_empty() {
                    out.push(Segment::Literal(std::mem::take(&mut literal).into()));
                }
                out.push(Segment::Macro(Macro::from_name(&after[..close])));
                rest = &after[close + 1..];
            }
            // An unclosed `{`: literal up to the next `{`.
            Some(next) => {
                literal.push_str(&rest[..=open + next]);
                rest = &after[next..];
            }
            None => {
                literal.push_str(rest);
                break;
            }
        }
    }
    if !literal.is_empty() {
        out.push(Segment::Literal(literal.into()));
    }
    out
}

fn push_value(out: &mut String, m: &Macro, v: &MacroValues<'_>) {
    let ctx = v.facts.ctx;
    let text: &str = match m {
        Macro::ClickId => v.click_id,
        Macro::CampaignId => v.campaign_id,
        Macro::CampaignKey => v.campaign_key,
        Macro::StreamId => v.stream_id,
        Macro::DestinationId => v.destination_id,
        Macro::Source => v.facts.source(),
        Macro::SourceClickId => &ctx.source_click_id,
        Macro::Sub(n) => ctx.sub(*n),
        Macro::UtmSource => &ctx.utm_source,
        Macro::UtmMedium => &ctx.utm_medium,
        Macro::UtmCampaign => &ctx.utm_campaign,
        Macro::UtmContent => &ctx.utm_content,
        Macro::UtmTerm => &ctx.utm_term,
        Macro::Country => &ctx.country,
        Macro::Currency => v.facts.currency(),
        Macro::Param(name) => ctx.param(name).unwrap_or(""),
        Macro::Unknown => "",
        Macro::Ip => {
            if let Some(s) = ctx.ip.and_then(StackStr::display) {
                percent_encode_into(out, s.as_str());
            }
            return;
        }
        Macro::Cost => {
            if let Some(s) = v.facts.cost().and_then(|c| StackStr::display(c.normalize())) {
                percent_encode_into(out, s.as_str());
            }
            return;
        }
    };
    percent_encode_into(out, text);
}

#[cfg(test)]
#[path = "macros_tests.rs"]
mod tests;
