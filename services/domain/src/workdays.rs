//! Deadlines in working days (工作日): an access request is answered within so many working days,
//! weekends and the configured holidays not counted.

use std::collections::BTreeSet;

use chrono::{Datelike, NaiveDate, Weekday};

/// A working-day calendar: Monday to Friday, less the holidays, plus the make-up working days
/// (调休) that fall on a weekend.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Calendar {
    pub holidays: BTreeSet<NaiveDate>,
    pub extra_workdays: BTreeSet<NaiveDate>,
}

impl Calendar {
    pub fn is_workday(&self, day: NaiveDate) -> bool {
        if self.extra_workdays.contains(&day) {
            return true;
        }
        !matches!(day.weekday(), Weekday::Sat | Weekday::Sun) && !self.holidays.contains(&day)
    }

    /// The last day to answer something received on `received`: the `n`-th working day after it
    /// (the day of receipt does not count).
    pub fn deadline(&self, received: NaiveDate, n: u32) -> NaiveDate {
        let mut day = received;
        let mut counted = 0;
        while counted < n {
            match day.succ_opt() {
                Some(next) => day = next,
                None => return day,
            }
            if self.is_workday(day) {
                counted += 1;
            }
        }
        day
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn weekends_do_not_count() {
        let c = Calendar::default();
        // Friday 2026-11-27 + 10 working days = Friday 2026-12-11.
        assert_eq!(c.deadline(d(2026, 11, 27), 10), d(2026, 12, 11));
        // Received on a Saturday: the first working day is Monday.
        assert_eq!(c.deadline(d(2026, 11, 28), 1), d(2026, 11, 30));
        assert_eq!(c.deadline(d(2026, 11, 28), 0), d(2026, 11, 28));
    }

    #[test]
    fn holidays_are_skipped_and_make_up_days_count() {
        let mut c = Calendar::default();
        // National Day week 2026: 1–7 October off; Saturday 10 October a make-up working day.
        c.holidays.extend((1..=7).map(|day| d(2026, 10, day)));
        c.extra_workdays.insert(d(2026, 10, 10));
        // Received Wednesday 30 September: 1 Oct–7 Oct off, then 8 (Thu), 9 (Fri), 10 (Sat, 调休).
        assert_eq!(c.deadline(d(2026, 9, 30), 1), d(2026, 10, 8));
        assert_eq!(c.deadline(d(2026, 9, 30), 3), d(2026, 10, 10));
        assert!(!c.is_workday(d(2026, 10, 5)));
        assert!(c.is_workday(d(2026, 10, 10)));
    }
}
