//! EventBridge Scheduler's schedule expressions, evaluated locally:
//!
//! - `rate(N minute|minutes|hour|hours|day|days)`: every N units from the schedule's
//!   start (its `StartDate`, else its creation), the first one period after it;
//! - `cron(minutes hours day-of-month month day-of-week year)`: each field `*`, a
//!   number, a list (`1,15`), a range (`MON-FRI`), a step (`*/15`, `0-30/10`) or
//!   month and weekday names; `?` in day-of-month or day-of-week (one of them must
//!   be); day-of-week 1-7 is SUN-SAT. `L`, `W` and `#` are not evaluated locally;
//! - `at(yyyy-mm-ddThh:mm:ss)`: once.
//!
//! Times are in the schedule's `ScheduleExpressionTimezone` when it is UTC or a fixed
//! `Etc/GMT±N` zone ([`fixed_offset`]); other zones are evaluated as UTC.

use std::fmt;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use time::macros::format_description;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

/// The last year a cron expression may name.
const LAST_YEAR: i32 = 2199;
/// The first year a cron expression may name.
const FIRST_YEAR: i32 = 1970;
/// A bound on the steps of one cron search (far above what any expression needs).
const MAX_STEPS: usize = 1_000_000;

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// A parsed EventBridge Scheduler schedule expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchedulerExpression {
    /// `rate(…)`: the period.
    Rate(Duration),
    /// `cron(…)`.
    Cron(Cron),
    /// `at(…)`: the one time, in the schedule's timezone.
    At(PrimitiveDateTime),
}

/// A parsed `cron(…)` expression.
#[derive(Clone, PartialEq, Eq)]
pub struct Cron {
    text: String,
    minutes: Vec<bool>,
    hours: Vec<bool>,
    /// `None`: `?`.
    days_of_month: Option<Vec<bool>>,
    months: Vec<bool>,
    /// `None`: `?`; index 1-7 is SUN-SAT.
    days_of_week: Option<Vec<bool>>,
    /// Indexed by year - [`FIRST_YEAR`].
    years: Vec<bool>,
}

impl fmt::Debug for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cron({})", self.text)
    }
}

impl fmt::Display for SchedulerExpression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rate(period) => write!(f, "rate({} seconds)", period.as_secs()),
            Self::Cron(cron) => write!(f, "cron({})", cron.text),
            Self::At(at) => write!(f, "at({at})"),
        }
    }
}

impl SchedulerExpression {
    /// Parses `rate(…)`, `cron(…)` or `at(…)`.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        let inner = |prefix: &str| {
            text.strip_prefix(prefix)
                .and_then(|t| t.strip_suffix(')'))
                .map(str::trim)
        };
        if let Some(inner) = inner("rate(") {
            return parse_rate(inner).with_context(|| format!("{text:?}"));
        }
        if let Some(inner) = inner("cron(") {
            return Cron::parse(inner)
                .map(Self::Cron)
                .with_context(|| format!("{text:?}"));
        }
        if let Some(inner) = inner("at(") {
            let at = PrimitiveDateTime::parse(
                inner,
                format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"),
            )
            .map_err(|e| anyhow!("{text:?}: at() takes yyyy-mm-ddThh:mm:ss ({e})"))?;
            return Ok(Self::At(at));
        }
        bail!("{text:?} is none of rate(…), cron(…) or at(…)")
    }

    /// The first firing strictly after `after`: `anchor` is when a rate schedule
    /// started (its first firing is one period later), `offset` the schedule's
    /// timezone. `None` when it never fires again.
    pub fn next_after(
        &self,
        after: OffsetDateTime,
        anchor: OffsetDateTime,
        offset: UtcOffset,
    ) -> Option<OffsetDateTime> {
        match self {
            Self::Rate(period) => {
                let period = i128::try_from(period.as_nanos()).ok().filter(|p| *p > 0)?;
                let since = (after - anchor).whole_nanoseconds();
                let k = if since < 0 { 1 } else { since / period + 1 };
                let nanos = k.checked_mul(period)?;
                let nanos = i64::try_from(nanos).ok()?;
                anchor.checked_add(time::Duration::nanoseconds(nanos))
            }
            Self::Cron(cron) => cron.next_after(after, offset),
            Self::At(at) => {
                let at = at.assume_offset(offset);
                (at > after).then_some(at)
            }
        }
    }

    /// The firing in (`from`, `until`], if any (the first, when several are).
    pub fn due_between(
        &self,
        from: OffsetDateTime,
        until: OffsetDateTime,
        anchor: OffsetDateTime,
        offset: UtcOffset,
    ) -> Option<OffsetDateTime> {
        self.next_after(from, anchor, offset)
            .filter(|next| *next <= until)
    }
}

fn parse_rate(inner: &str) -> Result<SchedulerExpression> {
    let (count, unit) = inner
        .split_once(char::is_whitespace)
        .ok_or_else(|| anyhow!("a rate is rate(N unit)"))?;
    let count: u64 = count
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| anyhow!("the rate must be a positive whole number"))?;
    let seconds = match unit.trim() {
        "minute" | "minutes" => 60,
        "hour" | "hours" => 3600,
        "day" | "days" => 86_400,
        other => bail!("unit {other:?}: the unit must be minute(s), hour(s) or day(s)"),
    };
    let period = count
        .checked_mul(seconds)
        .ok_or_else(|| anyhow!("the rate is too long"))?;
    Ok(SchedulerExpression::Rate(Duration::from_secs(period)))
}

impl Cron {
    /// Parses the six fields of a cron expression (without `cron(` and `)`).
    pub fn parse(inner: &str) -> Result<Self> {
        let fields: Vec<&str> = inner.split_whitespace().collect();
        let [minutes, hours, dom, month, dow, year] = fields.as_slice() else {
            bail!("a cron expression has six fields, not {}", fields.len());
        };
        let minutes = parse_field(minutes, 0, 59, &[]).context("minutes")?;
        let hours = parse_field(hours, 0, 23, &[]).context("hours")?;
        let months = parse_field(month, 1, 12, &MONTHS).context("month")?;
        let years = parse_field(year, FIRST_YEAR as u32, LAST_YEAR as u32, &[]).context("year")?;
        let (days_of_month, days_of_week) = match (*dom, *dow) {
            ("?", "?") => bail!("only one of day-of-month and day-of-week may be ?"),
            ("?", dow) => (
                None,
                Some(parse_field(dow, 1, 7, &WEEKDAYS).context("day-of-week")?),
            ),
            (dom, "?") => (
                Some(parse_field(dom, 1, 31, &[]).context("day-of-month")?),
                None,
            ),
            _ => bail!("one of day-of-month and day-of-week must be ?"),
        };
        Ok(Self {
            text: fields.join(" "),
            minutes,
            hours,
            days_of_month,
            months,
            days_of_week,
            years: years[FIRST_YEAR as usize..].to_vec(),
        })
    }

    fn day_matches(&self, date: Date) -> bool {
        if let Some(days) = &self.days_of_month {
            return days[usize::from(date.day())];
        }
        if let Some(days) = &self.days_of_week {
            return days[usize::from(date.weekday().number_from_sunday())];
        }
        false
    }

    fn year_matches(&self, year: i32) -> bool {
        usize::try_from(year - FIRST_YEAR)
            .ok()
            .and_then(|i| self.years.get(i))
            .copied()
            .unwrap_or(false)
    }

    /// The first minute strictly after `after` that matches, in the zone `offset`.
    pub fn next_after(&self, after: OffsetDateTime, offset: UtcOffset) -> Option<OffsetDateTime> {
        let local = after.to_offset(offset);
        let mut t = PrimitiveDateTime::new(
            local.date(),
            Time::from_hms(local.hour(), local.minute(), 0).ok()?,
        ) + time::Duration::minutes(1);
        for _ in 0..MAX_STEPS {
            if t.year() > LAST_YEAR {
                return None;
            }
            if !self.year_matches(t.year()) {
                t = PrimitiveDateTime::new(
                    Date::from_calendar_date(t.year() + 1, Month::January, 1).ok()?,
                    Time::MIDNIGHT,
                );
                continue;
            }
            if !self.months[usize::from(u8::from(t.month()))] {
                let (year, month) = match t.month() {
                    Month::December => (t.year() + 1, Month::January),
                    m => (t.year(), m.next()),
                };
                t = PrimitiveDateTime::new(
                    Date::from_calendar_date(year, month, 1).ok()?,
                    Time::MIDNIGHT,
                );
                continue;
            }
            if !self.day_matches(t.date()) {
                t = PrimitiveDateTime::new(t.date().next_day()?, Time::MIDNIGHT);
                continue;
            }
            if !self.hours[usize::from(t.hour())] {
                t = t.replace_minute(0).ok()? + time::Duration::hours(1);
                continue;
            }
            if !self.minutes[usize::from(t.minute())] {
                t += time::Duration::minutes(1);
                continue;
            }
            return Some(t.assume_offset(offset).to_offset(UtcOffset::UTC));
        }
        None
    }
}

/// One cron field as a table of the values it allows (indexed by value, `0..=max`).
fn parse_field(text: &str, min: u32, max: u32, names: &[&str]) -> Result<Vec<bool>> {
    let mut allowed = vec![false; max as usize + 1];
    let value = |v: &str| -> Result<u32> {
        let upper = v.to_ascii_uppercase();
        let n = match names.iter().position(|n| *n == upper) {
            Some(i) => min + i as u32,
            None => v.parse().map_err(|_| {
                if v.contains(['L', 'W', '#']) {
                    anyhow!("{v:?}: L, W and # are not evaluated by the local scheduler")
                } else {
                    anyhow!("{v:?} is not a number")
                }
            })?,
        };
        if !(min..=max).contains(&n) {
            bail!("{n} is outside {min}-{max}");
        }
        Ok(n)
    };
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| anyhow!("{item:?}: the step must be a positive number"))?;
                (range, step)
            }
            None => (item, 1),
        };
        let (from, to) = match range {
            "*" => (min, max),
            "?" => bail!("? is only allowed in day-of-month or day-of-week, alone"),
            r => match r.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (value(a)?, value(b)?);
                    if a > b {
                        bail!("{item:?}: the range runs backwards");
                    }
                    (a, b)
                }
                // `a/step` runs from a to the end.
                None if step > 1 || item.contains('/') => (value(r)?, max),
                None => {
                    let n = value(r)?;
                    (n, n)
                }
            },
        };
        let mut n = from;
        while n <= to {
            allowed[n as usize] = true;
            n += step;
        }
    }
    Ok(allowed)
}

/// The fixed offset of a `ScheduleExpressionTimezone` that has one: UTC and its
/// aliases, and `Etc/GMT±N` (whose sign is inverted, as in the tz database). `None` for
/// zones with daylight saving time, which the local scheduler does not evaluate.
pub fn fixed_offset(zone: &str) -> Option<UtcOffset> {
    let zone = zone.trim();
    if [
        "UTC",
        "Etc/UTC",
        "GMT",
        "Etc/GMT",
        "UCT",
        "Etc/UCT",
        "Universal",
        "Etc/Universal",
        "Zulu",
        "Etc/Zulu",
        "Etc/GMT0",
        "Etc/GMT+0",
        "Etc/GMT-0",
    ]
    .contains(&zone)
    {
        return Some(UtcOffset::UTC);
    }
    let rest = zone.strip_prefix("Etc/GMT")?;
    let (sign, hours) = match rest.split_at_checked(1)? {
        ("+", h) => (-1, h),
        ("-", h) => (1, h),
        _ => return None,
    };
    let hours: i8 = hours.parse().ok().filter(|h| (0..=14).contains(h))?;
    UtcOffset::from_hms(sign * hours, 0, 0).ok()
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn parse(text: &str) -> SchedulerExpression {
        SchedulerExpression::parse(text).unwrap_or_else(|e| panic!("{text}: {e:#}"))
    }

    fn next(text: &str, after: OffsetDateTime) -> Option<OffsetDateTime> {
        parse(text).next_after(after, after, UtcOffset::UTC)
    }

    #[test]
    fn rates_parse_and_count_from_their_start() {
        assert_eq!(
            parse("rate(1 minute)"),
            SchedulerExpression::Rate(Duration::from_secs(60))
        );
        assert_eq!(
            parse("rate(5 minutes)"),
            SchedulerExpression::Rate(Duration::from_secs(300))
        );
        assert_eq!(
            parse(" rate(2 hours) "),
            SchedulerExpression::Rate(Duration::from_secs(7200))
        );
        assert_eq!(
            parse("rate(1 day)"),
            SchedulerExpression::Rate(Duration::from_secs(86_400))
        );
        assert_eq!(
            parse("rate(3 days)"),
            SchedulerExpression::Rate(Duration::from_secs(259_200))
        );
        for bad in [
            "rate(0 minutes)",
            "rate(5 seconds)",
            "rate(5)",
            "rate(five minutes)",
            "rate(-1 hours)",
            "every 5 minutes",
        ] {
            assert!(SchedulerExpression::parse(bad).is_err(), "{bad} parsed");
        }

        let rate = parse("rate(5 minutes)");
        let start = datetime!(2026-11-21 12:00:30 UTC);
        let utc = UtcOffset::UTC;
        // The first firing is one period after the start.
        assert_eq!(
            rate.next_after(start, start, utc),
            Some(datetime!(2026-11-21 12:05:30 UTC))
        );
        assert_eq!(
            rate.next_after(datetime!(2026-11-21 12:05:30 UTC), start, utc),
            Some(datetime!(2026-11-21 12:10:30 UTC))
        );
        assert_eq!(
            rate.next_after(datetime!(2026-11-21 11:00:00 UTC), start, utc),
            Some(datetime!(2026-11-21 12:05:30 UTC))
        );
        // Due in a window: only when a firing falls inside it.
        let due = |from, until| rate.due_between(from, until, start, utc);
        assert_eq!(
            due(
                datetime!(2026-11-21 12:05:00 UTC),
                datetime!(2026-11-21 12:06:00 UTC)
            ),
            Some(datetime!(2026-11-21 12:05:30 UTC))
        );
        assert_eq!(
            due(
                datetime!(2026-11-21 12:05:30 UTC),
                datetime!(2026-11-21 12:06:00 UTC)
            ),
            None
        );
        assert_eq!(
            due(
                datetime!(2026-11-21 12:01:00 UTC),
                datetime!(2026-11-21 12:05:29 UTC)
            ),
            None
        );
    }

    #[test]
    fn cron_fields_parse() {
        for good in [
            "cron(0 12 * * ? *)",
            "cron(15 10 ? * 6 2002-2005)",
            "cron(0/15 * * * ? *)",
            "cron(0 8 1,15 JAN-MAR ? 2026)",
            "cron(0 18 ? * MON-FRI *)",
            "cron(*/10 9-17 ? * mon,wed,fri *)",
            "cron(0 0 31 12 ? 2199)",
        ] {
            parse(good);
        }
        for bad in [
            "cron(0 12 * * * *)",
            "cron(0 12 ? * ? *)",
            "cron(0 12 * *)",
            "cron(60 12 * * ? *)",
            "cron(0 24 * * ? *)",
            "cron(0 12 32 * ? *)",
            "cron(0 12 ? * 8 *)",
            "cron(0 12 ? * 6L *)",
            "cron(0 12 L * ? *)",
            "cron(0 12 ? * 2#1 *)",
            "cron(0 12 15W * ? *)",
            "cron(0 12 * FOO ? *)",
            "cron(30-10 12 * * ? *)",
            "cron(*/0 12 * * ? *)",
            "cron(0 12 * * ? 1969)",
        ] {
            assert!(SchedulerExpression::parse(bad).is_err(), "{bad} parsed");
        }
        let err = SchedulerExpression::parse("cron(0 12 ? * 2#1 *)").unwrap_err();
        assert!(format!("{err:#}").contains("not evaluated"), "{err:#}");
    }

    #[test]
    fn cron_finds_the_next_matching_minute() {
        // 2026-11-21 is a Saturday.
        let at = datetime!(2026-11-21 12:00:00 UTC);
        assert_eq!(
            next("cron(0 12 * * ? *)", at),
            Some(datetime!(2026-11-22 12:00:00 UTC))
        );
        assert_eq!(
            next("cron(0 12 * * ? *)", datetime!(2026-11-21 11:59:59 UTC)),
            Some(at)
        );
        assert_eq!(
            next("cron(* * * * ? *)", datetime!(2026-11-21 12:00:30 UTC)),
            Some(datetime!(2026-11-21 12:01:00 UTC))
        );
        assert_eq!(
            next("cron(0/15 * * * ? *)", datetime!(2026-11-21 12:01:00 UTC)),
            Some(datetime!(2026-11-21 12:15:00 UTC))
        );
        assert_eq!(
            next("cron(0 18 ? * MON-FRI *)", at),
            Some(datetime!(2026-11-23 18:00:00 UTC))
        );
        // 1 is Sunday.
        assert_eq!(
            next("cron(30 6 ? * 1 *)", at),
            Some(datetime!(2026-11-22 06:30:00 UTC))
        );
        assert_eq!(
            next("cron(0 8 1,15 JAN-MAR ? *)", at),
            Some(datetime!(2027-01-01 08:00:00 UTC))
        );
        assert_eq!(
            next("cron(0 0 29 2 ? *)", at),
            Some(datetime!(2028-02-29 00:00:00 UTC))
        );
        assert_eq!(
            next("cron(0 0 31 12 ? 2199)", at),
            Some(datetime!(2199-12-31 00:00:00 UTC))
        );
        assert_eq!(next("cron(0 0 1 1 ? 2020-2025)", at), None);
        assert_eq!(next("cron(0 0 31 2 ? *)", at), None);
        assert_eq!(
            next("cron(*/10 9-17 ? * MON,WED,FRI *)", at),
            Some(datetime!(2026-11-23 09:00:00 UTC))
        );
    }

    #[test]
    fn at_fires_once_and_zones_shift_times() {
        let at = parse("at(2026-11-21T12:30:00)");
        let utc = UtcOffset::UTC;
        let before = datetime!(2026-11-21 12:00:00 UTC);
        assert_eq!(
            at.next_after(before, before, utc),
            Some(datetime!(2026-11-21 12:30:00 UTC))
        );
        let after = datetime!(2026-11-21 12:30:00 UTC);
        assert_eq!(at.next_after(after, after, utc), None);
        for bad in ["at(2026-11-21 12:30:00)", "at(2026-13-01T00:00:00)", "at()"] {
            assert!(SchedulerExpression::parse(bad).is_err(), "{bad} parsed");
        }

        assert_eq!(fixed_offset("UTC"), Some(UtcOffset::UTC));
        assert_eq!(fixed_offset("Etc/UTC"), Some(UtcOffset::UTC));
        let plus5 = fixed_offset("Etc/GMT-5").unwrap();
        assert_eq!(plus5, UtcOffset::from_hms(5, 0, 0).unwrap());
        assert_eq!(
            fixed_offset("Etc/GMT+3"),
            Some(UtcOffset::from_hms(-3, 0, 0).unwrap())
        );
        assert_eq!(fixed_offset("Europe/Paris"), None);
        assert_eq!(fixed_offset("Etc/GMT+15"), None);
        // 12:30 at UTC+5 is 07:30 UTC; noon daily at UTC+5 is 07:00 UTC.
        assert_eq!(
            at.next_after(before - time::Duration::hours(6), before, plus5),
            Some(datetime!(2026-11-21 07:30:00 UTC))
        );
        assert_eq!(
            parse("cron(0 12 * * ? *)").next_after(before, before, plus5),
            Some(datetime!(2026-11-22 07:00:00 UTC))
        );
    }
}
