//! The two aggregations every backend implements, and the reports built on them in Rust.
//!
//! A backend answers two questions in SQL: click sums and conversion sums within a UTC window, optionally
//! grouped by one dimension and by time bucket. Everything else — the metrics, zero-filled days, merging
//! clicks with conversions, totals, ordering — happens here once, so ClickHouse and SQLite cannot disagree
//! about it.

use std::collections::BTreeMap;

use super::reports::{Day, GroupBy, GroupRow, Grouped, Metrics, ReportQuery, Totals};
use super::window::Window;
use super::{Analytics, AnalyticsError};

/// One aggregation: events with `start <= ts < end` (Unix seconds), filtered and grouped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateQuery {
    pub start: u32,
    pub end: u32,
    pub campaign_id: Option<String>,
    pub team_id: Option<String>,
    /// Group by this dimension (the row `key`); `None` puts everything under the key `""`.
    pub by: Option<GroupBy>,
    /// Also group by `ts / bucket_secs` (the row `bucket`); `None` makes every bucket 0.
    pub bucket_secs: Option<u32>,
    /// Only trafficback clicks, and only conversions whose click was one.
    pub trafficback_only: bool,
}

impl AggregateQuery {
    pub fn new(window: &Window, q: &ReportQuery) -> Self {
        let present = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        Self {
            start: window.start(),
            end: window.end(),
            campaign_id: present(&q.campaign_id),
            team_id: present(&q.team_id),
            by: None,
            bucket_secs: None,
            trafficback_only: false,
        }
    }
}

/// Click sums for one (key, bucket): each click ID counted once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClickAggregate {
    pub key: String,
    pub bucket: i64,
    pub clicks: u64,
    pub unique_clicks: u64,
    pub cost_micros: i64,
}

/// Conversion sums for one (key, bucket): each conversion once, at its latest revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConversionAggregate {
    pub key: String,
    pub bucket: i64,
    pub approved: u64,
    pub pending: u64,
    pub rejected: u64,
    /// Revenue of the approved conversions.
    pub revenue_micros: i64,
}

impl From<&ClickAggregate> for Totals {
    fn from(c: &ClickAggregate) -> Self {
        Totals { clicks: c.clicks, unique_clicks: c.unique_clicks, cost_micros: c.cost_micros, ..Totals::default() }
    }
}

impl From<&ConversionAggregate> for Totals {
    fn from(c: &ConversionAggregate) -> Self {
        Totals {
            approved: c.approved,
            pending: c.pending,
            rejected: c.rejected,
            revenue_micros: c.revenue_micros,
            ..Totals::default()
        }
    }
}

async fn both<A: Analytics + ?Sized>(
    a: &A,
    q: &AggregateQuery,
) -> Result<(Vec<ClickAggregate>, Vec<ConversionAggregate>), AnalyticsError> {
    futures::try_join!(a.click_aggregates(q), a.conversion_aggregates(q))
}

pub(crate) async fn overview<A: Analytics + ?Sized>(a: &A, q: &ReportQuery) -> Result<Metrics, AnalyticsError> {
    let window = Window::of(q)?;
    let (clicks, conversions) = both(a, &AggregateQuery::new(&window, q)).await?;
    let mut totals = Totals::default();
    clicks.iter().for_each(|c| totals.add(&c.into()));
    conversions.iter().for_each(|c| totals.add(&c.into()));
    Ok(totals.metrics())
}

pub(crate) async fn daily<A: Analytics + ?Sized>(a: &A, q: &ReportQuery) -> Result<Vec<Day>, AnalyticsError> {
    let window = Window::of(q)?;
    let agg = AggregateQuery { bucket_secs: Some(window.bucket_secs), ..AggregateQuery::new(&window, q) };
    let (clicks, conversions) = both(a, &agg).await?;
    let mut days = vec![Totals::default(); window.days()];
    let mut put = |bucket: i64, t: Totals| {
        if let Some(day) = window.day_of_bucket(bucket).and_then(|i| days.get_mut(i)) {
            day.add(&t);
        }
    };
    clicks.iter().for_each(|c| put(c.bucket, c.into()));
    conversions.iter().for_each(|c| put(c.bucket, c.into()));
    Ok(q.days().zip(days).map(|(date, t)| Day { date, metrics: t.metrics() }).collect())
}

pub(crate) async fn grouped<A: Analytics + ?Sized>(
    a: &A,
    q: &ReportQuery,
    by: GroupBy,
) -> Result<Grouped, AnalyticsError> {
    let window = Window::of(q)?;
    group(a, AggregateQuery { by: Some(by), ..AggregateQuery::new(&window, q) }, by).await
}

pub(crate) async fn trafficback<A: Analytics + ?Sized>(a: &A, q: &ReportQuery) -> Result<Grouped, AnalyticsError> {
    let window = Window::of(q)?;
    let by = GroupBy::Campaign;
    group(a, AggregateQuery { by: Some(by), trafficback_only: true, ..AggregateQuery::new(&window, q) }, by).await
}

async fn group<A: Analytics + ?Sized>(a: &A, agg: AggregateQuery, by: GroupBy) -> Result<Grouped, AnalyticsError> {
    let (clicks, conversions) = both(a, &agg).await?;
    let mut keys: BTreeMap<String, Totals> = BTreeMap::new();
    for c in &clicks {
        keys.entry(c.key.clone()).or_default().add(&c.into());
    }
    for c in &conversions {
        keys.entry(c.key.clone()).or_default().add(&c.into());
    }
    let mut totals = Totals::default();
    let mut rows: Vec<(String, Totals)> = keys.into_iter().inspect(|(_, t)| totals.add(t)).collect();
    // Most clicks first; ties in key order (the map's order, kept by the stable sort).
    rows.sort_by_key(|(_, t)| std::cmp::Reverse(t.clicks));
    let rows = rows
        .into_iter()
        .map(|(key, t)| GroupRow { key: BTreeMap::from([(by.key_name().to_owned(), key)]), metrics: t.metrics() })
        .collect();
    Ok(Grouped { rows, totals: totals.metrics() })
}
