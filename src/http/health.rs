//! Readiness as every core sees it: each core marks itself running once it serves, and
//! whether its spool accepts writes. `/readyz` on any core answers for all of them.
//! (A few atomics written rarely and read per health check: not on a hot path.)

use std::sync::atomic::{AtomicU8, Ordering};

const STARTING: u8 = 0;
const RUNNING: u8 = 1;
const SPOOL_FAILING: u8 = 2;

/// The readiness of every core.
pub struct Health {
    cores: Vec<AtomicU8>,
}

impl Health {
    pub fn new(cores: usize) -> Health {
        Health {
            cores: (0..cores).map(|_| AtomicU8::new(STARTING)).collect(),
        }
    }

    pub fn set_running(&self, core: usize) {
        self.set(core, RUNNING);
    }

    /// Records whether `core`'s last spool write succeeded.
    pub fn set_spool_ok(&self, core: usize, ok: bool) {
        self.set(core, if ok { RUNNING } else { SPOOL_FAILING });
    }

    fn set(&self, core: usize, state: u8) {
        if let Some(c) = self.cores.get(core) {
            c.store(state, Ordering::Relaxed);
        }
    }

    /// `None` when every core runs with a writable spool; otherwise why not.
    pub fn not_ready_reason(&self) -> Option<String> {
        let mut why = Vec::new();
        for (i, c) in self.cores.iter().enumerate() {
            match c.load(Ordering::Relaxed) {
                STARTING => why.push(format!("core {i} is starting")),
                SPOOL_FAILING => why.push(format!("core {i} cannot write its spool")),
                _ => {}
            }
        }
        (!why.is_empty()).then(|| why.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_core_runs_with_a_writable_spool() {
        let h = Health::new(2);
        assert_eq!(
            h.not_ready_reason().unwrap(),
            "core 0 is starting, core 1 is starting"
        );
        h.set_running(0);
        h.set_running(1);
        assert_eq!(h.not_ready_reason(), None);
        h.set_spool_ok(1, false);
        assert_eq!(h.not_ready_reason().unwrap(), "core 1 cannot write its spool");
        h.set_spool_ok(1, true);
        assert_eq!(h.not_ready_reason(), None);
    }
}
