//! Destination caps: limits on clicks, cost, conversions and revenue, each over a window in hours.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::Amount;
use crate::validation::{Errors, item, join};

/// The longest cap or history window: 366 days.
pub const MAX_WINDOW_HOURS: i64 = 24 * 366;

/// Limits after which a destination takes no more traffic until the window moves on.
///
/// `dailyClicks: 1000` is short for the rule `{metric: clicks, limit: 1000, windowHours: 24}`;
/// [`Caps::effective_rules`] gives both forms as one list.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Caps {
    /// At most this many clicks in the last 24 hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub daily_clicks: Option<i64>,
    /// Any number of limits, each on one metric over its own window.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<CapRule>,
}

/// At most `limit` of `metric` over the last `windowHours` hours.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CapRule {
    /// What is counted.
    pub metric: CapMetric,
    /// The limit: a whole number for clicks and conversions, a decimal amount for cost and revenue.
    pub limit: Amount,
    /// The sliding window in hours (1 to 8784); default 24.
    #[serde(default = "default_window_hours")]
    #[schemars(range(min = 1, max = 8784))]
    pub window_hours: i64,
}

/// What a cap counts.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum CapMetric {
    /// Clicks sent to the destination.
    Clicks,
    /// Cost of those clicks.
    Cost,
    /// Conversions attributed to the destination.
    Conversions,
    /// Revenue of those conversions.
    Revenue,
}

impl CapMetric {
    /// Whether the metric counts things (so its limit is a whole number).
    pub fn is_count(self) -> bool {
        matches!(self, Self::Clicks | Self::Conversions)
    }
}

impl fmt::Display for CapMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Clicks => "clicks",
            Self::Cost => "cost",
            Self::Conversions => "conversions",
            Self::Revenue => "revenue",
        })
    }
}

fn default_window_hours() -> i64 {
    24
}

impl Caps {
    /// Every limit as a rule, `dailyClicks` first.
    pub fn effective_rules(&self) -> Vec<CapRule> {
        let daily = self.daily_clicks.map(|limit| CapRule {
            metric: CapMetric::Clicks,
            limit: Amount(limit.to_string()),
            window_hours: 24,
        });
        daily.into_iter().chain(self.rules.iter().cloned()).collect()
    }
}

pub(crate) fn validate_caps(errs: &mut Errors, path: &str, caps: &Caps) {
    if let Some(daily) = caps.daily_clicks
        && daily < 1
    {
        errs.add(
            join(path, "dailyClicks"),
            format!("must be at least 1 (got {daily}); to stop traffic, disable the destination"),
        );
    }
    let rules = join(path, "rules");
    for (i, rule) in caps.rules.iter().enumerate() {
        let at = item(&rules, i);
        let limit_path = join(&at, "limit");
        match rule.limit.to_decimal() {
            None => errs.add(
                &limit_path,
                format!("`{}` is not a non-negative number: write e.g. 1000 or \"12.50\"", rule.limit.as_str()),
            ),
            Some(limit) if limit.is_zero() => {
                errs.add(&limit_path, "must be more than 0; to stop traffic, disable the destination")
            }
            Some(limit) if rule.metric.is_count() && !limit.fract().is_zero() => errs.add(
                &limit_path,
                format!("{} are counted in whole numbers (got {})", rule.metric, rule.limit.as_str()),
            ),
            Some(_) => {}
        }
        errs.range(&join(&at, "windowHours"), rule.window_hours, 1, MAX_WINDOW_HOURS, " hours");
    }
}
