//! The hub's clock. Times are kept to the microsecond, the precision both databases store, so
//! that what a call answers is exactly what a later read returns.

use chrono::{DateTime, SubsecRound, Utc};

pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

#[cfg(test)]
mod tests {
    #[test]
    fn microsecond_precision() {
        assert_eq!(super::now().timestamp_subsec_nanos() % 1000, 0);
    }
}
