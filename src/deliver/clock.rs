//! The delivery engine's clock, injected so tests can drive time: retries, expiry, delay
//! notices and rate limits all read "now" from a [`Clock`], never from the system directly.
//! The engine still sleeps in real time between looks at the clock (at most a scheduler
//! tick), so a test that moves a [`ManualClock`] forward sees the effect within a tick.

use std::cell::Cell;

/// Milliseconds since the Unix epoch.
pub trait Clock {
    fn now_ms(&self) -> u64;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        crate::observe::log::now_ms()
    }
}

/// A clock that moves only when told (tests).
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ms: Cell<u64>,
}

impl ManualClock {
    pub fn new(now_ms: u64) -> ManualClock {
        ManualClock {
            now_ms: Cell::new(now_ms),
        }
    }

    pub fn set(&self, now_ms: u64) {
        self.now_ms.set(now_ms);
    }

    pub fn advance(&self, by_ms: u64) {
        self.now_ms.set(self.now_ms.get() + by_ms);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.get()
    }
}
