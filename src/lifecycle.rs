//! The stop signal as one core sees it: raised once (by the runtime, when the process is
//! asked to stop), checked by anything that starts new work, awaited by anything that
//! would otherwise wait for ever (an accept, a read between commands).
//!
//! A leaf module, so the ingress and delivery layers can use it without knowing the
//! runtime that raises it.

use std::cell::Cell;
use std::rc::Rc;

use glommio::sync::Semaphore;

/// A core's stop signal. Cheap to clone; every task on the core may hold one.
#[derive(Clone)]
pub struct Stop {
    inner: Rc<Inner>,
}

struct Inner {
    raised: Cell<bool>,
    /// Never signalled; closing it wakes every waiter at once.
    gate: Semaphore,
}

impl Default for Stop {
    fn default() -> Self {
        Stop::new()
    }
}

impl Stop {
    pub fn new() -> Stop {
        Stop {
            inner: Rc::new(Inner {
                raised: Cell::new(false),
                gate: Semaphore::new(0),
            }),
        }
    }

    /// Raises the signal; every `wait` returns. Raising twice is harmless.
    pub fn raise(&self) {
        if !self.inner.raised.replace(true) {
            self.inner.gate.close();
        }
    }

    pub fn is_raised(&self) -> bool {
        self.inner.raised.get()
    }

    /// Resolves once the signal is raised.
    pub async fn wait(&self) {
        if self.is_raised() {
            return;
        }
        // The semaphore never has units: acquire only ever ends by the close in `raise`.
        let _ = self.inner.gate.acquire(1).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_waiter_wakes_when_raised() {
        glommio::LocalExecutorBuilder::default()
            .io_memory(128 << 10)
            .spawn(|| async {
                let stop = Stop::new();
                let waiters: Vec<_> = (0..3)
                    .map(|_| {
                        let s = stop.clone();
                        glommio::spawn_local(async move { s.wait().await })
                    })
                    .collect();
                glommio::timer::sleep(Duration::from_millis(10)).await;
                assert!(!stop.is_raised());
                stop.raise();
                stop.raise();
                for w in waiters {
                    w.await;
                }
                stop.wait().await;
                assert!(stop.is_raised());
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
