//! Schedules: standard 5-field crontab in an IANA time zone, and which fire times are due.
//!
//! Parsing is [croner](https://docs.rs/croner)'s, restricted to the 5-field form (minute hour
//! day-of-month month day-of-week, Sunday = 0 or 7); the `cron` crate's 6-field, Sunday = 1
//! reading would fire a day off. Daylight-saving changes follow croner's rules, which match
//! what crontab users expect: a fixed time that falls into a spring-forward gap fires once at
//! the first instant after the gap (02:30 on 2026-03-29 in Europe/Berlin fires at 03:00 CEST),
//! and a fixed time that occurs twice on a fall-back day fires once, at its first occurrence.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::CatchUpPolicy;

/// Parses a standard 5-field crontab expression, refusing the 6- and 7-field forms some
/// libraries accept.
pub fn parse_cron(expr: &str) -> Result<croner::Cron, String> {
    let fields = expr.split_whitespace().count();
    if fields != 5 {
        return Err(format!(
            "cron {expr:?} has {fields} fields; use standard 5-field crontab syntax (minute hour day-of-month month day-of-week)"
        ));
    }
    expr.parse::<croner::Cron>()
        .map_err(|e| format!("cron {expr:?} is invalid: {e}"))
}

/// The zone a schedule runs in: its own, else the Tenant's.
pub fn time_zone(own: Option<&str>, tenant: &str) -> Result<Tz, String> {
    let name = own.unwrap_or(tenant);
    name.parse::<Tz>()
        .map_err(|_| format!("time zone {name:?} is not in the tz database"))
}

/// `t` without its fraction of a second. croner keeps the fraction of the time it starts
/// from, so every time given to it is whole: fire times are then exact minutes, the same in
/// every replica (they key the runs).
fn whole(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

/// The next `n` fire times strictly after `after`.
pub fn next_times(
    cron: &croner::Cron,
    tz: Tz,
    after: DateTime<Utc>,
    n: usize,
) -> Vec<DateTime<Tz>> {
    cron.iter_after(whole(after).with_timezone(&tz))
        .take(n)
        .collect()
}

/// The next fire time strictly after `after`, if the expression ever fires again.
pub fn next_time(cron: &croner::Cron, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron.find_next_occurrence(&whole(after).with_timezone(&tz), false)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// What a pass of the scheduler queues for one rule.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Due {
    /// Fire times to queue, oldest first.
    pub runs: Vec<DateTime<Utc>>,
    /// Fire times older than the tolerance (missed while the worker was down or the rule
    /// suspended); `missed_more` when there were more than the search looked at.
    pub missed: usize,
    pub missed_more: bool,
}

/// The fire times in (`cursor`, `now`] and what `policy` makes of them. A time at most
/// `tolerance` before `now` is on time and always queued; older ones were missed:
/// - `Skip`: none of them is queued;
/// - `RunOnce`: the most recent missed one is queued, standing for all of them;
/// - `RunAll`: each is queued, at most `limit` (the most recent ones).
///
/// The search walks back from `now`, so a cursor far in the past costs at most `limit` + the
/// on-time times, however often the rule fires.
pub fn due(
    cron: &croner::Cron,
    tz: Tz,
    cursor: DateTime<Utc>,
    now: DateTime<Utc>,
    policy: CatchUpPolicy,
    tolerance: chrono::Duration,
    limit: usize,
) -> Due {
    let mut on_time = Vec::new();
    let mut missed = Vec::new();
    let mut missed_more = false;
    // `iter_from` is inclusive of `now`: a time exactly at `now` is due.
    let now = whole(now);
    for t in cron.iter_from(now.with_timezone(&tz), croner::Direction::Backward) {
        let t = t.with_timezone(&Utc);
        if t <= cursor {
            break;
        }
        if now - t <= tolerance {
            on_time.push(t);
        } else if missed.len() < limit.max(1) {
            missed.push(t);
        } else {
            missed_more = true;
            break;
        }
    }
    let missed_count = missed.len();
    let mut runs = match policy {
        CatchUpPolicy::Skip => vec![],
        CatchUpPolicy::RunOnce => missed.into_iter().take(1).collect(),
        CatchUpPolicy::RunAll => missed.into_iter().take(limit).collect(),
    };
    runs.extend(on_time);
    runs.sort();
    Due {
        runs,
        missed: missed_count,
        missed_more,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use chrono_tz::Europe::Berlin;

    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn standard_crontab_is_accepted_and_other_forms_refused() {
        assert!(parse_cron("0 9 * * 1-5").is_ok());
        assert!(parse_cron("*/15 * * * *").is_ok());
        let six = parse_cron("0 0 9 * * 1-5").unwrap_err();
        assert!(six.contains("6 fields"), "{six}");
        assert!(parse_cron("61 * * * *").is_err());
    }

    #[test]
    fn weekday_numbers_follow_crontab_not_the_cron_crate() {
        // `0 9 * * 1` is Monday 09:00 in crontab; the `cron` crate would read 1 as Sunday.
        let cron = parse_cron("0 9 * * 1").unwrap();
        let sunday = Berlin.with_ymd_and_hms(2026, 3, 29, 0, 0, 0).unwrap();
        let next = cron.find_next_occurrence(&sunday, false).unwrap();
        assert_eq!(next.format("%A %H:%M").to_string(), "Monday 09:00");
        let seven = parse_cron("0 9 * * 7").unwrap();
        let next = seven.find_next_occurrence(&sunday, false).unwrap();
        assert_eq!(next.format("%A %H:%M").to_string(), "Sunday 09:00");
    }

    /// The exact instants of a 02:30 and a 09:00 rule across both of Berlin's 2026 changes.
    #[test]
    fn daylight_saving_changes_in_berlin() {
        let at = |expr: &str, from: &str, to: &str| -> Vec<String> {
            let cron = parse_cron(expr).unwrap();
            let (from, to) = (utc(from), utc(to));
            next_times(&cron, Berlin, from, 10)
                .into_iter()
                .map(|t| t.with_timezone(&Utc))
                .take_while(|t| *t < to)
                .map(|t| t.to_rfc3339())
                .collect()
        };
        // Spring forward, 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist.
        assert_eq!(
            at("30 2 * * *", "2026-03-28T00:00:00Z", "2026-03-31T00:00:00Z"),
            [
                "2026-03-28T01:30:00+00:00", // 02:30 CET
                "2026-03-29T01:00:00+00:00", // once, at 03:00 CEST, the first instant after the gap
                "2026-03-30T00:30:00+00:00", // 02:30 CEST
            ]
        );
        assert_eq!(
            at("0 9 * * *", "2026-03-28T00:00:00Z", "2026-03-31T00:00:00Z"),
            [
                "2026-03-28T08:00:00+00:00",
                "2026-03-29T07:00:00+00:00",
                "2026-03-30T07:00:00+00:00",
            ]
        );
        // Fall back, 2026-10-25: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice.
        assert_eq!(
            at("30 2 * * *", "2026-10-24T00:00:00Z", "2026-10-27T00:00:00Z"),
            [
                "2026-10-24T00:30:00+00:00", // 02:30 CEST
                "2026-10-25T00:30:00+00:00", // once, at the first 02:30 (CEST)
                "2026-10-26T01:30:00+00:00", // 02:30 CET
            ]
        );
        assert_eq!(
            at("0 9 * * *", "2026-10-24T00:00:00Z", "2026-10-27T00:00:00Z"),
            [
                "2026-10-24T07:00:00+00:00",
                "2026-10-25T08:00:00+00:00",
                "2026-10-26T08:00:00+00:00",
            ]
        );
    }

    #[test]
    fn catch_up_policies() {
        let cron = parse_cron("0 * * * *").unwrap(); // hourly
        let tol = chrono::Duration::seconds(120);
        let cursor = utc("2026-11-30T06:30:00Z");
        let now = utc("2026-11-30T12:00:30Z"); // 07..11 missed, 12:00 on time
        let times = |d: &Due| -> Vec<String> {
            d.runs
                .iter()
                .map(|t| t.format("%H:%M").to_string())
                .collect()
        };
        let skip = due(&cron, Berlin, cursor, now, CatchUpPolicy::Skip, tol, 100);
        assert_eq!(times(&skip), ["12:00"]);
        assert_eq!((skip.missed, skip.missed_more), (5, false));
        let once = due(&cron, Berlin, cursor, now, CatchUpPolicy::RunOnce, tol, 100);
        assert_eq!(times(&once), ["11:00", "12:00"]);
        let all = due(&cron, Berlin, cursor, now, CatchUpPolicy::RunAll, tol, 100);
        assert_eq!(
            times(&all),
            ["07:00", "08:00", "09:00", "10:00", "11:00", "12:00"]
        );
        // The bound keeps the most recent ones and says there were more.
        let bounded = due(&cron, Berlin, cursor, now, CatchUpPolicy::RunAll, tol, 3);
        assert_eq!(times(&bounded), ["09:00", "10:00", "11:00", "12:00"]);
        assert!(bounded.missed_more);
        // Nothing new since the cursor: nothing due.
        let idle = due(
            &cron,
            Berlin,
            utc("2026-11-30T12:00:00Z"),
            now,
            CatchUpPolicy::RunAll,
            tol,
            100,
        );
        assert_eq!(idle, Due::default());
        // Fractions of a second in `now` do not leak into the fire times.
        let frac = utc("2026-11-30T12:00:30.123456Z");
        let d = due(&cron, Berlin, cursor, frac, CatchUpPolicy::Skip, tol, 100);
        assert_eq!(d.runs, [utc("2026-11-30T12:00:00Z")]);
        assert_eq!(
            next_time(&cron, Berlin, frac),
            Some(utc("2026-11-30T13:00:00Z"))
        );
        // A year of every-minute misses costs the bound, not 525,600 steps.
        let minutely = parse_cron("* * * * *").unwrap();
        let long = due(
            &minutely,
            Berlin,
            utc("2025-11-30T12:00:00Z"),
            now,
            CatchUpPolicy::RunAll,
            tol,
            100,
        );
        assert_eq!(long.runs.len(), 100 + 2); // 100 missed, 11:59 and 12:00 on time
        assert!(long.missed_more);
    }
}
