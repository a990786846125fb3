//! The retry schedule, as a pure function of the configuration, the message's age and the
//! number of attempts made. Kept free of clocks and queues so the whole schedule can be
//! checked as one vector in a test.

use std::time::Duration;

/// What to do with a message after a deferred attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again at this time (ms since the Unix epoch).
    RetryAt(u64),
    /// The message is too old: fail what remains.
    Expire,
}

/// The delay before attempt `attempts + 1`, after `attempts` attempts (≥ 1) were made:
/// the schedule's entries in order, the last one repeating.
pub fn delay_after(schedule: &[Duration], attempts: u32) -> Duration {
    let i = (attempts.max(1) - 1) as usize;
    schedule
        .get(i)
        .or(schedule.last())
        .copied()
        .unwrap_or(Duration::from_secs(60))
}

/// Decides the next step for a message accepted at `received_at_ms` that has now been
/// tried `attempts` times, the last attempt ending at `now_ms`. A retry that would fall
/// after the maximum age is moved to the expiry time, so the last attempt happens right at
/// the end of the message's life rather than a whole interval early.
pub fn plan(
    schedule: &[Duration],
    max_age: Duration,
    received_at_ms: u64,
    attempts: u32,
    now_ms: u64,
) -> Next {
    let expires_ms = received_at_ms.saturating_add(max_age.as_millis() as u64);
    if now_ms >= expires_ms {
        return Next::Expire;
    }
    let at = now_ms.saturating_add(delay_after(schedule, attempts).as_millis() as u64);
    Next::RetryAt(at.min(expires_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&s| Duration::from_secs(s)).collect()
    }

    /// Follows a message that is always deferred from accept to expiry, attempting as soon
    /// as each retry is due, and returns the attempt times (seconds after accept).
    fn timeline(schedule: &[Duration], max_age: Duration) -> Vec<u64> {
        let mut times = vec![0];
        let mut now_ms = 0;
        for attempts in 1.. {
            match plan(schedule, max_age, 0, attempts, now_ms) {
                Next::RetryAt(at) => {
                    now_ms = at;
                    times.push(at / 1000);
                }
                Next::Expire => break,
            }
        }
        times
    }

    #[test]
    fn default_schedule_as_a_whole_vector() {
        let schedule = secs(&[60, 300, 900, 1800, 3600, 7200, 14400]);
        let t = timeline(&schedule, Duration::from_secs(86_400));
        assert_eq!(
            t,
            vec![
                0, 60, 360, 1260, 3060, 6660, 13860, 28260, 42660, 57060, 71460, 85860, 86400
            ]
        );
    }

    /// The shipped default (issue 5: "minutes growing to hours, maximum age 5 days"):
    /// 1, 5, 15, 30 minutes, 1, 2, 4 hours, then every 4 hours until day 5.
    #[test]
    fn the_configured_default_is_minutes_growing_to_hours_for_five_days() {
        let c = crate::config::Config::from_toml(crate::config::DEFAULT_TOML).unwrap();
        assert_eq!(c.delivery.message_max_age, Duration::from_secs(5 * 86_400));
        let t = timeline(&c.delivery.retry_schedule, c.delivery.message_max_age);
        assert_eq!(t[..8], [0, 60, 360, 1260, 3060, 6660, 13860, 28260]);
        let gaps: Vec<u64> = t.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps[7..gaps.len() - 1].iter().all(|&g| g == 14_400), "{gaps:?}");
        assert_eq!(*t.last().unwrap(), 432_000, "the last try is at the 5-day expiry");
        assert_eq!(t.len(), 37);
    }

    #[test]
    fn short_schedule_repeats_its_last_step_until_expiry() {
        let t = timeline(&secs(&[1, 2]), Duration::from_secs(8));
        assert_eq!(t, vec![0, 1, 3, 5, 7, 8]);
    }

    #[test]
    fn expired_message_is_not_retried() {
        let s = secs(&[60]);
        assert_eq!(plan(&s, Duration::from_secs(10), 0, 1, 10_000), Next::Expire);
        assert_eq!(
            plan(&s, Duration::from_secs(10), 0, 1, 9_000),
            Next::RetryAt(10_000)
        );
        assert_eq!(delay_after(&s, 0), Duration::from_secs(60));
    }
}
