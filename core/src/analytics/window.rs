//! Local days as UTC instants: the report range's bounds, and how events are put on local days without a time
//! zone database in the backend.
//!
//! Both backends store UTC seconds. The range `[from 00:00, to+1 00:00)` in the report's zone is turned into
//! UTC instants here (chrono-tz) and bound as numbers, so no backend interprets a zone. For per-day numbers the
//! backends group by buckets of `bucket_secs` seconds (`intDiv(ts, bucket_secs)`), and each bucket is put on
//! the local day whose `[start, next start)` holds it. `bucket_secs` is the greatest common divisor of 900 and
//! every day start in the range, so no day starts inside a bucket and the method is exact: 15-minute buckets
//! for every zone in use since 1972 (all offsets are whole quarter hours), finer ones for historic offsets.
//! The same arithmetic serves ClickHouse and SQLite, so their daily numbers agree even where ClickHouse's own
//! zone data would differ from chrono-tz's.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};
use chrono_tz::Tz;

use super::AnalyticsError;
use super::reports::ReportQuery;

/// The widest bucket: a quarter hour.
const MAX_BUCKET_SECS: i64 = 900;

/// A validated query's days as UTC seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// The first local day.
    pub from: NaiveDate,
    /// The start of every day of the range and, last, the end of the range, as Unix seconds clamped to the
    /// `DateTime` range (1970–2106).
    pub starts: Vec<u32>,
    /// Bucket width for per-day grouping (divides 900 and every element of `starts`).
    pub bucket_secs: u32,
}

impl Window {
    /// The query's window; fails as [`ReportQuery::validate`] does.
    pub fn of(q: &ReportQuery) -> Result<Self, AnalyticsError> {
        q.validate()?;
        let mut starts: Vec<u32> = q.days().map(|d| clamp(day_start(q.tz, d))).collect();
        let after = q.to.succ_opt().map_or(u32::MAX, |d| clamp(day_start(q.tz, d)));
        starts.push(after);
        let bucket = starts.iter().fold(MAX_BUCKET_SECS, |g, s| gcd(g, i64::from(*s)));
        let bucket_secs = u32::try_from(bucket).unwrap_or(1).max(1);
        Ok(Self { from: q.from, starts, bucket_secs })
    }

    /// The first second of the range.
    pub fn start(&self) -> u32 {
        self.starts.first().copied().unwrap_or(0)
    }

    /// The first second after the range.
    pub fn end(&self) -> u32 {
        self.starts.last().copied().unwrap_or(0)
    }

    /// How many local days the range has.
    pub fn days(&self) -> usize {
        self.starts.len().saturating_sub(1)
    }

    /// The index of the local day that holds bucket `bucket` (of `bucket_secs`), if it is in the range.
    pub fn day_of_bucket(&self, bucket: i64) -> Option<usize> {
        let instant = bucket.checked_mul(i64::from(self.bucket_secs))?;
        let after = self.starts.partition_point(|s| i64::from(*s) <= instant);
        (after >= 1 && after < self.starts.len()).then(|| after - 1)
    }
}

/// The first instant (Unix seconds) whose local time in `tz` is `date` 00:00 or later. Where midnight is
/// repeated the earlier one counts; where it is skipped (a DST gap) the day starts at the transition.
pub fn day_start(tz: Tz, date: NaiveDate) -> i64 {
    let midnight = date.and_time(NaiveTime::MIN);
    if let Some(t) = tz.from_local_datetime(&midnight).earliest() {
        return t.timestamp();
    }
    // In a gap, local time only moves forward: find the first second at or past midnight.
    let guess = midnight.and_utc().timestamp();
    let (mut lo, mut hi) = (guess - 30 * 3600, guess + 30 * 3600);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if local(tz, mid).is_some_and(|l| l >= midnight) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

fn local(tz: Tz, secs: i64) -> Option<NaiveDateTime> {
    DateTime::from_timestamp(secs, 0).map(|t| t.with_timezone(&tz).naive_local())
}

fn clamp(secs: i64) -> u32 {
    u32::try_from(secs.max(0)).unwrap_or(u32::MAX)
}

fn gcd(a: i64, b: i64) -> i64 {
    let (mut a, mut b) = (a.unsigned_abs(), b.unsigned_abs());
    while b != 0 {
        (a, b) = (b, a % b);
    }
    i64::try_from(a).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn secs(rfc3339: &str) -> i64 {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().timestamp()
    }

    #[test]
    fn utc_days_are_plain() {
        let w = Window::of(&ReportQuery::new(d("2025-11-24"), d("2025-11-25"))).unwrap();
        assert_eq!(w.days(), 2);
        assert_eq!(i64::from(w.start()), secs("2025-11-24T00:00:00Z"));
        assert_eq!(i64::from(w.end()), secs("2025-11-26T00:00:00Z"));
        assert_eq!(w.bucket_secs, 900);
        let bucket = |t: &str| secs(t) / 900;
        assert_eq!(w.day_of_bucket(bucket("2025-11-24T23:59:59Z")), Some(0));
        assert_eq!(w.day_of_bucket(bucket("2025-11-25T00:00:00Z")), Some(1));
        assert_eq!(w.day_of_bucket(bucket("2025-11-26T00:00:00Z")), None);
        assert_eq!(w.day_of_bucket(bucket("2025-11-23T23:59:59Z")), None);
    }

    #[test]
    fn zones_shift_the_bounds() {
        let q = ReportQuery::new(d("2025-11-24"), d("2025-11-24"));
        let kolkata = Window::of(&q.clone().with_tz(chrono_tz::Asia::Kolkata)).unwrap();
        assert_eq!(i64::from(kolkata.start()), secs("2025-11-23T18:30:00Z"));
        assert_eq!(kolkata.bucket_secs, 900, "+05:30 is whole quarter hours");
        let kathmandu = Window::of(&q.clone().with_tz(chrono_tz::Asia::Kathmandu)).unwrap();
        assert_eq!(i64::from(kathmandu.start()), secs("2025-11-23T18:15:00Z"));
        let la = Window::of(&q.with_tz(chrono_tz::America::Los_Angeles)).unwrap();
        assert_eq!(i64::from(la.start()), secs("2025-11-24T08:00:00Z"));
    }

    #[test]
    fn dst_days_are_23_and_25_hours_long() {
        let q = ReportQuery::new(d("2025-03-09"), d("2025-03-10")).with_tz(chrono_tz::America::Los_Angeles);
        let w = Window::of(&q).unwrap();
        assert_eq!(w.starts[1] - w.starts[0], 23 * 3600);
        let q = ReportQuery::new(d("2025-11-02"), d("2025-11-03")).with_tz(chrono_tz::America::Los_Angeles);
        let w = Window::of(&q).unwrap();
        assert_eq!(w.starts[1] - w.starts[0], 25 * 3600);
    }

    #[test]
    fn a_skipped_midnight_starts_the_day_at_the_transition() {
        // Santiago moved clocks from 00:00 to 01:00 on 2024-09-08.
        let start = day_start(chrono_tz::America::Santiago, d("2024-09-08"));
        assert_eq!(start, secs("2024-09-08T04:00:00Z"));
        // Samoa skipped 2011-12-30 entirely: that day is empty.
        let apia = chrono_tz::Pacific::Apia;
        assert_eq!(day_start(apia, d("2011-12-30")), day_start(apia, d("2011-12-31")));
    }

    #[test]
    fn historic_offsets_get_finer_buckets() {
        // Amsterdam was +00:19:32 in 1930: no quarter-hour bucket would fit its midnights.
        let q = ReportQuery::new(d("1930-06-01"), d("1930-06-02")).with_tz(chrono_tz::Europe::Amsterdam);
        let w = Window::of(&q).unwrap();
        assert_eq!(w.start(), 0, "before 1970 clamps to the DateTime range");
        let q = ReportQuery::new(d("1971-06-01"), d("1971-06-02")).with_tz(chrono_tz::Africa::Monrovia);
        let w = Window::of(&q).unwrap();
        assert!(w.starts.iter().all(|s| s % w.bucket_secs == 0));
        assert!(w.bucket_secs < 900, "Monrovia was -00:44:30 until 1972: {}", w.bucket_secs);
    }

    #[test]
    fn bad_ranges_are_refused() {
        assert!(Window::of(&ReportQuery::new(d("2025-11-25"), d("2025-11-24"))).is_err());
        assert!(Window::of(&ReportQuery::new(d("2025-01-01"), d("2026-01-01"))).is_ok(), "366 days");
        assert!(Window::of(&ReportQuery::new(d("2025-01-01"), d("2026-01-02"))).is_err(), "367 days");
    }
}
