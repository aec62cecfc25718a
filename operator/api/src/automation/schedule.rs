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
/// Bounded however old the cursor and however often the rule fires: a walk back from `now`
/// finds where the last `limit` missed times start (croner's backward search can repeat itself
/// around a fall-back change, so it stops at the first time that is not strictly earlier),
/// then the times are listed walking forward from an hour before that — forward is the
/// direction whose daylight-saving rules the docs state (a time in a spring-forward gap fires
/// at the first instant after it, a repeated time once).
pub fn due(
    cron: &croner::Cron,
    tz: Tz,
    cursor: DateTime<Utc>,
    now: DateTime<Utc>,
    policy: CatchUpPolicy,
    tolerance: chrono::Duration,
    limit: usize,
) -> Due {
    let now = whole(now);
    let cap = limit.max(1);
    // Where to start: the earliest of the last `cap` missed times (and the on-time ones). Where
    // the backward search repeats itself (a fall-back change), it starts again three hours
    // before: the forward listing below covers what was jumped over.
    let mut start = now;
    let mut missed_seen = 0usize;
    let mut missed_more = false;
    let mut from_t = now;
    let mut restarts = 0;
    'search: loop {
        let mut prev = None::<DateTime<Utc>>;
        for t in cron
            .iter_from(from_t.with_timezone(&tz), croner::Direction::Backward)
            .take(cap + MAX_ON_TIME + 2)
        {
            let t = t.with_timezone(&Utc);
            if t > from_t || prev.is_some_and(|p| t >= p) {
                restarts += 1;
                if restarts > 4 {
                    break 'search;
                }
                from_t = prev.unwrap_or(from_t) - chrono::Duration::hours(3);
                start = start.min(from_t.max(cursor));
                continue 'search;
            }
            if t <= cursor {
                break 'search;
            }
            prev = Some(t);
            if now - t > tolerance {
                missed_seen += 1;
                if missed_seen > cap {
                    missed_more = true;
                    break 'search;
                }
            }
            start = start.min(t);
        }
        break;
    }
    // The times themselves, forward, from an hour before the start (or the cursor). Around a
    // fall-back change croner lists an interval rule's two passes through the repeated hour
    // interleaved (00:00, 01:00, 00:05, 01:05 … UTC), so the times are gathered, not assumed
    // in order, until three hours past `now`.
    let from = cursor.max(start - chrono::Duration::hours(1));
    let horizon = now + chrono::Duration::hours(3);
    let mut found = std::collections::BTreeSet::new();
    // Listed from three hours earlier still (croner's "after" is by wall clock, which would
    // lose the second pass through a repeated hour when `from` falls in it), kept from `from`.
    for t in cron
        .iter_after((from - chrono::Duration::hours(3)).with_timezone(&tz))
        .take(cap + MAX_ON_TIME + 5_000)
    {
        let t = t.with_timezone(&Utc);
        if t > horizon {
            break;
        }
        if t > from && t <= now {
            found.insert(t);
        }
    }
    let (on_time, mut missed): (Vec<_>, Vec<_>) =
        found.into_iter().partition(|t| now - *t <= tolerance);
    let mut on_time = on_time;
    if missed.len() > cap {
        missed_more = true;
        missed.drain(..missed.len() - cap);
    }
    on_time.truncate(MAX_ON_TIME);
    let missed_count = missed.len();
    let mut runs = match policy {
        CatchUpPolicy::Skip => vec![],
        CatchUpPolicy::RunOnce => missed.last().copied().into_iter().collect(),
        CatchUpPolicy::RunAll => missed,
    };
    runs.extend(on_time);
    Due {
        runs,
        missed: missed_count,
        missed_more,
    }
}

/// At most this many on-time runs per pass (a tolerance of hours on a minutely rule).
const MAX_ON_TIME: usize = 1_000;

/// Whether the expression fires again within croner's search horizon (`0 0 30 2 *` never
/// does): a rule that never fires is refused rather than searched for every second.
pub fn fires(cron: &croner::Cron, tz: Tz, after: DateTime<Utc>) -> bool {
    next_time(cron, tz, after).is_some()
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

    /// `due` across both of Berlin's changes, for the rules the review found looping (hourly,
    /// every five minutes) and the ones the docs list.
    #[test]
    fn due_across_daylight_saving_changes_is_bounded_and_forward_exact() {
        let tol = chrono::Duration::seconds(120);
        let times = |d: &Due| -> Vec<String> { d.runs.iter().map(|t| t.to_rfc3339()).collect() };
        // Fall back: 00:00–01:00 UTC is 02:00–03:00 CEST, then 02:00–03:00 CET again.
        let hourly = parse_cron("0 * * * *").unwrap();
        for now in [
            "2026-10-25T00:00:00Z",
            "2026-10-25T01:00:00Z",
            "2026-10-25T01:30:00Z",
            "2026-10-25T02:00:05Z",
        ] {
            let now = utc(now);
            let d = due(
                &hourly,
                Berlin,
                now - chrono::Duration::hours(3),
                now,
                CatchUpPolicy::RunAll,
                tol,
                100,
            );
            assert!(
                d.runs.len() <= 4 && d.runs.iter().all(|t| *t <= now),
                "{now}: {:?}",
                d.runs
            );
            let mut sorted = d.runs.clone();
            sorted.dedup();
            assert_eq!(sorted, d.runs, "{now}: strictly increasing");
        }
        let d = due(
            &hourly,
            Berlin,
            utc("2026-10-24T21:30:00Z"),
            utc("2026-10-25T02:00:30Z"),
            CatchUpPolicy::RunAll,
            tol,
            100,
        );
        assert_eq!(
            times(&d),
            [
                "2026-10-24T22:00:00+00:00",
                "2026-10-24T23:00:00+00:00",
                "2026-10-25T00:00:00+00:00",
                "2026-10-25T01:00:00+00:00",
                "2026-10-25T02:00:00+00:00"
            ]
        );
        let five = parse_cron("*/5 * * * *").unwrap();
        let d = due(
            &five,
            Berlin,
            utc("2026-10-25T00:00:00Z"),
            utc("2026-10-25T01:02:00Z"),
            CatchUpPolicy::RunAll,
            tol,
            100,
        );
        // 02:05–02:55 CEST (00:05–00:55 UTC), then 02:00 CET (01:00 UTC): both passes.
        assert_eq!(d.runs.len(), 12, "{:?}", times(&d));
        assert_eq!(
            d.runs.last().map(|t| t.to_rfc3339()).as_deref(),
            Some("2026-10-25T01:00:00+00:00")
        );
        // Spring forward: the 02:30 job fires at 03:00 CEST, 01:00:00 UTC, as the docs say.
        let half_two = parse_cron("30 2 * * *").unwrap();
        let d = due(
            &half_two,
            Berlin,
            utc("2026-03-28T12:00:00Z"),
            utc("2026-03-29T01:00:30Z"),
            CatchUpPolicy::Skip,
            tol,
            100,
        );
        assert_eq!(times(&d), ["2026-03-29T01:00:00+00:00"]);
        let d = due(
            &half_two,
            Berlin,
            utc("2026-03-27T12:00:00Z"),
            utc("2026-03-29T12:00:00Z"),
            CatchUpPolicy::RunAll,
            tol,
            100,
        );
        assert_eq!(
            times(&d),
            ["2026-03-28T01:30:00+00:00", "2026-03-29T01:00:00+00:00"]
        );
        // Fall back: the 02:30 job once, at the first 02:30.
        let d = due(
            &half_two,
            Berlin,
            utc("2026-10-24T12:00:00Z"),
            utc("2026-10-25T12:00:00Z"),
            CatchUpPolicy::RunAll,
            tol,
            100,
        );
        assert_eq!(times(&d), ["2026-10-25T00:30:00+00:00"]);
        // An expression that never fires is found out, not searched for each pass.
        let never = parse_cron("0 0 30 2 *").unwrap();
        assert!(!fires(&never, Berlin, utc("2026-01-01T00:00:00Z")));
        assert!(fires(&half_two, Berlin, utc("2026-01-01T00:00:00Z")));
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
