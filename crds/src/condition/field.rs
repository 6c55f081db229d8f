//! The request fields a routing condition can test, parsed from their JSON names (`country`, `param:kw`).

use std::fmt;
use std::str::FromStr;

/// A request field a condition tests. Written in JSON as its name; see [`ConditionField::NAMES`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ConditionField {
    /// ISO 3166-1 alpha-2 country code (`DE`).
    Country,
    /// Region or state.
    Region,
    /// City.
    City,
    /// `desktop`, `mobile` or `tablet`.
    DeviceType,
    /// Operating system.
    Os,
    /// Browser.
    Browser,
    /// Preferred language (`de`).
    Language,
    /// Client IP address.
    Ip,
    /// Internet service provider or carrier.
    Isp,
    /// Autonomous system number.
    Asn,
    /// The traffic source's key.
    Source,
    /// The traffic source's own click token (`source_click_id`), not our click ID.
    SourceClickId,
    /// The `Referer` header.
    Referrer,
    /// The `User-Agent` header.
    UserAgent,
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
    /// `sub1` … `sub10` (the number, 1–10).
    Sub(u8),
    /// Hour of the day, 0–23, in the campaign's reporting time zone.
    Hour,
    /// Day of the week, `mon` … `sun`.
    DayOfWeek,
    /// Whether the click looks like a bot.
    IsBot,
    /// Whether this is the visitor's first click on the campaign.
    IsUnique,
    /// How many times the click already went through trafficback.
    TrafficbackDepth,
    /// The click's cost as passed by the source.
    Cost,
    /// The currency of `cost`.
    Currency,
    /// Any inbound query parameter: `param:NAME`, or `query.NAME` (the MVP's spelling).
    Param(String),
}

/// How a field's values compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    /// Free text.
    Text,
    /// A number.
    Number,
    /// `true` or `false`.
    Bool,
    /// An IP address (`cidr` works on it).
    Ip,
    /// `mon` … `sun`.
    Weekday,
    /// `desktop`, `mobile`, `tablet`.
    DeviceType,
    /// Whatever the query carried: text, or a number when it parses as one.
    Any,
}

const FIXED: &[(&str, ConditionField)] = &[
    ("country", ConditionField::Country),
    ("region", ConditionField::Region),
    ("city", ConditionField::City),
    ("deviceType", ConditionField::DeviceType),
    ("os", ConditionField::Os),
    ("browser", ConditionField::Browser),
    ("language", ConditionField::Language),
    ("ip", ConditionField::Ip),
    ("isp", ConditionField::Isp),
    ("asn", ConditionField::Asn),
    ("source", ConditionField::Source),
    ("sourceClickId", ConditionField::SourceClickId),
    ("referrer", ConditionField::Referrer),
    ("userAgent", ConditionField::UserAgent),
    ("utmSource", ConditionField::UtmSource),
    ("utmMedium", ConditionField::UtmMedium),
    ("utmCampaign", ConditionField::UtmCampaign),
    ("utmContent", ConditionField::UtmContent),
    ("utmTerm", ConditionField::UtmTerm),
    ("hour", ConditionField::Hour),
    ("dayOfWeek", ConditionField::DayOfWeek),
    ("isBot", ConditionField::IsBot),
    ("isUnique", ConditionField::IsUnique),
    ("trafficbackDepth", ConditionField::TrafficbackDepth),
    ("cost", ConditionField::Cost),
    ("currency", ConditionField::Currency),
];

impl ConditionField {
    /// Every field name, for messages and UIs (`sub1`…`sub10` and `param:NAME` written once).
    pub const NAMES: &'static str = "country, region, city, deviceType, os, browser, language, ip, isp, asn, \
        source, sourceClickId, referrer, userAgent, utmSource, utmMedium, utmCampaign, utmContent, utmTerm, \
        sub1 … sub10, hour, dayOfWeek, isBot, isUnique, trafficbackDepth, cost, currency, param:NAME (or query.NAME)";

    /// How the field's values compare.
    pub fn field_type(&self) -> FieldType {
        match self {
            Self::Asn | Self::Hour | Self::TrafficbackDepth | Self::Cost => FieldType::Number,
            Self::IsBot | Self::IsUnique => FieldType::Bool,
            Self::Ip => FieldType::Ip,
            Self::DayOfWeek => FieldType::Weekday,
            Self::DeviceType => FieldType::DeviceType,
            Self::Param(_) => FieldType::Any,
            _ => FieldType::Text,
        }
    }
}

impl FromStr for ConditionField {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        if let Some((_, field)) = FIXED.iter().find(|(n, _)| *n == name) {
            return Ok(field.clone());
        }
        if let Some(n) = name.strip_prefix("sub").and_then(|n| n.parse::<u8>().ok())
            && (1..=10).contains(&n)
            && name == format!("sub{n}")
        {
            return Ok(Self::Sub(n));
        }
        if let Some(param) = name.strip_prefix("param:").or_else(|| name.strip_prefix("query.")) {
            return if is_query_name(param) {
                Ok(Self::Param(param.to_string()))
            } else {
                Err(format!(
                    "`{name}` needs a query parameter name after `param:` (letters, digits, `_`, `-`, `.`, `[`, `]`)"
                ))
            };
        }
        Err(format!("unknown field `{name}`; fields are {}", Self::NAMES))
    }
}

impl fmt::Display for ConditionField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sub(n) => write!(f, "sub{n}"),
            Self::Param(name) => write!(f, "param:{name}"),
            fixed => {
                let name = FIXED.iter().find(|(_, x)| x == fixed).map(|(n, _)| *n).unwrap_or_default();
                f.write_str(name)
            }
        }
    }
}

pub(crate) fn is_query_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'[' | b']'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in ["country", "deviceType", "sub1", "sub10", "param:kw", "isBot", "trafficbackDepth"] {
            let field: ConditionField = name.parse().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(field.to_string(), name);
        }
        assert_eq!("query.kw".parse::<ConditionField>(), Ok(ConditionField::Param("kw".into())));
        for bad in ["sub0", "sub11", "sub01", "Country", "param:", "query.", "nope"] {
            assert!(bad.parse::<ConditionField>().is_err(), "{bad}");
        }
    }
}
