//! Destination schedules: weekday windows of `HH:MM` start/end in an IANA time zone, overnight windows allowed.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Timelike, Utc};
use chrono_tz::Tz;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::default_true;
use crate::validation::{Errors, item, join};

/// When a destination takes traffic. `schedule: null` (or absent) means always.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    /// `false` turns the schedule off (the destination is always open) without deleting its windows.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// IANA time zone the windows are read in, e.g. `Europe/Berlin`. Default `UTC`.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// The destination is open while any window is open.
    #[serde(default)]
    pub windows: Vec<ScheduleWindow>,
}

/// Open on `weekdays` from `start` to `end`. When `end` is not after `start` the window runs overnight into
/// the next day: `{weekdays: [mon], start: "22:00", end: "02:00"}` is Monday 22:00 to Tuesday 02:00.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleWindow {
    /// The days the window starts on.
    pub weekdays: Vec<Weekday>,
    /// Opening time, `HH:MM` (00:00–23:59).
    pub start: String,
    /// Closing time, `HH:MM` (00:00–23:59, or 24:00 for the end of the day); not included.
    pub end: String,
}

/// A day of the week.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    /// Monday.
    Mon,
    /// Tuesday.
    Tue,
    /// Wednesday.
    Wed,
    /// Thursday.
    Thu,
    /// Friday.
    Fri,
    /// Saturday.
    Sat,
    /// Sunday.
    Sun,
}

impl Weekday {
    /// Monday first.
    pub const ALL: [Weekday; 7] = [Self::Mon, Self::Tue, Self::Wed, Self::Thu, Self::Fri, Self::Sat, Self::Sun];

    /// The JSON name (`mon` … `sun`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mon => "mon",
            Self::Tue => "tue",
            Self::Wed => "wed",
            Self::Thu => "thu",
            Self::Fri => "fri",
            Self::Sat => "sat",
            Self::Sun => "sun",
        }
    }

    /// The day before.
    pub fn previous(self) -> Self {
        Self::ALL[(self as usize + 6) % 7]
    }

    fn from_chrono(day: chrono::Weekday) -> Self {
        Self::ALL[day.num_days_from_monday() as usize]
    }
}

impl fmt::Display for Weekday {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn default_time_zone() -> String {
    "UTC".to_string()
}

/// Minutes after midnight of an `HH:MM` time (00:00–23:59); `24:00` only when `allow_24` (an end time).
pub fn parse_hhmm(text: &str, allow_24: bool) -> Option<u16> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m) = (h.parse::<u16>().ok()?, m.parse::<u16>().ok()?);
    match (h, m) {
        (24, 0) if allow_24 => Some(24 * 60),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

impl Schedule {
    /// The time zone, or `None` when its name is not in the IANA database.
    pub fn tz(&self) -> Option<Tz> {
        Tz::from_str(&self.time_zone).ok()
    }

    /// Whether the destination is open at `now`. A disabled schedule is always open; an invalid one (which
    /// validation rejects) is closed.
    pub fn is_open_at(&self, now: DateTime<Utc>) -> bool {
        if !self.enabled {
            return true;
        }
        let Some(tz) = self.tz() else { return false };
        let local = now.with_timezone(&tz);
        let day = Weekday::from_chrono(local.weekday());
        // Hours and minutes are < 60 * 24, well inside u16.
        let minute = (local.hour() * 60 + local.minute()) as u16;
        self.windows.iter().any(|w| w.is_open(day, minute))
    }
}

impl ScheduleWindow {
    /// Whether the window is open on `day` at `minute` after local midnight.
    pub fn is_open(&self, day: Weekday, minute: u16) -> bool {
        let (Some(start), Some(end)) = (parse_hhmm(&self.start, false), parse_hhmm(&self.end, true)) else {
            return false;
        };
        let on = |d: Weekday| self.weekdays.contains(&d);
        if start < end {
            on(day) && (start..end).contains(&minute)
        } else {
            (on(day) && minute >= start) || (on(day.previous()) && minute < end)
        }
    }
}

pub(crate) fn validate_schedule(errs: &mut Errors, path: &str, schedule: &Schedule) {
    let tz_path = join(path, "timeZone");
    if schedule.time_zone.trim().is_empty() {
        errs.add(&tz_path, "time zone is required, e.g. `Europe/Berlin` or `UTC`");
    } else if schedule.tz().is_none() {
        errs.add(
            &tz_path,
            format!(
                "`{}` is not an IANA time zone name: use e.g. `Europe/Berlin`, `America/New_York`, `UTC`",
                schedule.time_zone
            ),
        );
    }
    let windows = join(path, "windows");
    if schedule.enabled && schedule.windows.is_empty() {
        errs.add(&windows, "an enabled schedule needs at least one window (or set `enabled: false`)");
    }
    for (i, window) in schedule.windows.iter().enumerate() {
        let at = item(&windows, i);
        if window.weekdays.is_empty() {
            errs.add(join(&at, "weekdays"), "list at least one weekday (mon … sun)");
        }
        for (j, day) in window.weekdays.iter().enumerate() {
            if window.weekdays[..j].contains(day) {
                errs.add(item(&join(&at, "weekdays"), j), format!("`{day}` is listed twice"));
            }
        }
        let start = parse_hhmm(&window.start, false);
        let end = parse_hhmm(&window.end, true);
        if start.is_none() {
            errs.add(join(&at, "start"), format!("`{}` is not a time: use HH:MM from 00:00 to 23:59", window.start));
        }
        if end.is_none() {
            errs.add(join(&at, "end"), format!("`{}` is not a time: use HH:MM from 00:00 to 24:00", window.end));
        }
        if start.is_some() && start == end {
            errs.add(join(&at, "end"), "start and end are the same; for a whole day use start 00:00 and end 24:00");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn window(days: &[Weekday], start: &str, end: &str) -> ScheduleWindow {
        ScheduleWindow { weekdays: days.to_vec(), start: start.into(), end: end.into() }
    }

    #[test]
    fn overnight_window_runs_into_the_next_day() {
        let w = window(&[Weekday::Mon], "22:00", "02:00");
        assert!(w.is_open(Weekday::Mon, 22 * 60));
        assert!(w.is_open(Weekday::Tue, 60));
        assert!(!w.is_open(Weekday::Tue, 2 * 60));
        assert!(!w.is_open(Weekday::Mon, 60));
        assert!(!w.is_open(Weekday::Sun, 23 * 60));
    }

    #[test]
    fn end_of_day_and_time_zone() {
        let s = Schedule {
            enabled: true,
            time_zone: "Europe/Berlin".into(),
            windows: vec![window(&[Weekday::Wed], "09:00", "24:00")],
        };
        // 2025-01-01 is a Wednesday; 08:30 UTC is 09:30 in Berlin.
        let Some(t) = Utc.with_ymd_and_hms(2025, 1, 1, 8, 30, 0).single() else { panic!("bad date") };
        assert!(s.is_open_at(t));
        let Some(t) = Utc.with_ymd_and_hms(2025, 1, 1, 7, 30, 0).single() else { panic!("bad date") };
        assert!(!s.is_open_at(t));
    }

    #[test]
    fn hhmm() {
        assert_eq!(parse_hhmm("00:00", false), Some(0));
        assert_eq!(parse_hhmm("23:59", false), Some(1439));
        assert_eq!(parse_hhmm("24:00", false), None);
        assert_eq!(parse_hhmm("24:00", true), Some(1440));
        for bad in ["7:00", "07:60", "25:00", "ab:cd", "0700", "07:00:00"] {
            assert_eq!(parse_hhmm(bad, true), None, "{bad}");
        }
    }
}
