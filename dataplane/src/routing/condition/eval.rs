//! Evaluation of a compiled condition against one click's [`Facts`]: no allocation for ordinary values.

use std::net::IpAddr;
use std::str::FromStr;

use rust_decimal::Decimal;
use traffoflex_crds::ConditionField;

use super::{CmpOp, CompiledCondition, Members, Node, Rule, Test, TextOp};
use crate::routing::context::Facts;
use crate::routing::text::{StackStr, with_folded};

/// One field's value in a click.
#[derive(Clone, Copy, Debug)]
enum Value<'v> {
    Missing,
    Text(&'v str),
    Num(Decimal),
    Bool(bool),
    Ip(IpAddr),
}

fn text(s: &str) -> Value<'_> {
    if s.is_empty() { Value::Missing } else { Value::Text(s) }
}

fn lookup<'v>(field: &ConditionField, facts: &Facts<'v>) -> Value<'v> {
    use ConditionField as F;
    let ctx = facts.ctx;
    match field {
        F::Country => text(&ctx.country),
        F::Region => text(&ctx.region),
        F::City => text(&ctx.city),
        F::DeviceType => text(&ctx.device_type),
        F::Os => text(&ctx.os),
        F::Browser => text(&ctx.browser),
        F::Language => text(&ctx.language),
        F::Ip => ctx.ip.map_or(Value::Missing, |ip| Value::Ip(ip.to_canonical())),
        F::Isp => text(&ctx.isp),
        F::Asn => ctx.asn.map_or(Value::Missing, |asn| Value::Num(Decimal::from(asn))),
        F::Source => text(facts.source()),
        F::SourceClickId => text(&ctx.source_click_id),
        F::Referrer => text(&ctx.referrer),
        F::UserAgent => text(&ctx.user_agent),
        F::UtmSource => text(&ctx.utm_source),
        F::UtmMedium => text(&ctx.utm_medium),
        F::UtmCampaign => text(&ctx.utm_campaign),
        F::UtmContent => text(&ctx.utm_content),
        F::UtmTerm => text(&ctx.utm_term),
        F::Sub(n) => text(ctx.sub(*n)),
        F::Hour => Value::Num(Decimal::from(facts.hour())),
        F::DayOfWeek => Value::Text(facts.day_of_week().as_str()),
        F::IsBot => Value::Bool(ctx.is_bot),
        F::IsUnique => Value::Bool(ctx.is_unique),
        F::TrafficbackDepth => Value::Num(Decimal::from(ctx.trafficback_depth)),
        F::Cost => facts.cost().map_or(Value::Missing, Value::Num),
        F::Currency => text(facts.currency()),
        F::Param(name) => ctx.param(name).map_or(Value::Missing, text),
    }
}

impl CompiledCondition {
    /// Whether the click matches.
    pub fn matches(&self, facts: &Facts<'_>) -> bool {
        self.0.matches(facts)
    }
}

impl Node {
    fn matches(&self, facts: &Facts<'_>) -> bool {
        match self {
            Self::All(children) => children.iter().all(|c| c.matches(facts)),
            Self::Any(children) => children.iter().any(|c| c.matches(facts)),
            Self::Not(child) => !child.matches(facts),
            Self::Rule(rule) => rule.matches(lookup(&rule.field, facts)),
        }
    }
}

impl Rule {
    fn matches(&self, value: Value<'_>) -> bool {
        match &self.test {
            Test::Exists { negate } => matches!(value, Value::Missing) == *negate,
            Test::Member { set, negate } => set.contains(value, self.fold) != *negate,
            Test::Text { op, needle, negate } => {
                let hit = self.with_text(value, |t| match op {
                    TextOp::Contains => t.contains(&**needle),
                    TextOp::StartsWith => t.starts_with(&**needle),
                    TextOp::EndsWith => t.ends_with(&**needle),
                });
                hit.unwrap_or(false) != *negate
            }
            // The regex itself is case-insensitive for folded fields.
            Test::Regex(re) => as_text(value, |t| re.is_match(t)).unwrap_or(false),
            Test::Cidr(nets) => {
                let ip = match value {
                    Value::Ip(ip) => Some(ip),
                    Value::Text(t) => t.trim().parse::<IpAddr>().ok().map(|ip| ip.to_canonical()),
                    _ => None,
                };
                ip.is_some_and(|ip| nets.iter().any(|net| net.contains(&ip)))
            }
            Test::Compare { op, rhs } => {
                let lhs = match value {
                    Value::Num(d) => Some(d),
                    Value::Text(t) => Decimal::from_str(t.trim()).ok(),
                    _ => None,
                };
                lhs.is_some_and(|lhs| match op {
                    CmpOp::Gt => lhs > *rhs,
                    CmpOp::Gte => lhs >= *rhs,
                    CmpOp::Lt => lhs < *rhs,
                    CmpOp::Lte => lhs <= *rhs,
                })
            }
        }
    }

    /// `f` on the value as text, folded for case-insensitive fields; `None` when missing.
    fn with_text<R>(&self, value: Value<'_>, f: impl FnOnce(&str) -> R) -> Option<R> {
        if self.fold { as_text(value, |t| with_folded(t, f)) } else { as_text(value, f) }
    }
}

/// `f` on the value written as text; `None` when missing.
fn as_text<R>(value: Value<'_>, f: impl FnOnce(&str) -> R) -> Option<R> {
    match value {
        Value::Missing => None,
        Value::Text(t) => Some(f(t)),
        Value::Bool(b) => Some(f(if b { "true" } else { "false" })),
        Value::Num(d) => StackStr::display(d).map(|s| f(s.as_str())),
        Value::Ip(ip) => StackStr::display(ip).map(|s| f(s.as_str())),
    }
}

impl Members {
    fn contains(&self, value: Value<'_>, fold: bool) -> bool {
        match value {
            Value::Missing => false,
            Value::Text(t) => {
                let text_hit = !self.texts.is_empty()
                    && if fold { with_folded(t, |f| self.texts.contains(f)) } else { self.texts.contains(t) };
                let nums = self.nums();
                text_hit || (!nums.is_empty() && Decimal::from_str(t.trim()).is_ok_and(|d| nums.contains(&d)))
            }
            Value::Num(d) => self.nums().contains(&d),
            Value::Bool(b) => self.bools().contains(&b),
            Value::Ip(ip) => self.ips().contains(&ip),
        }
    }
}
