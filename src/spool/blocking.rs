//! Blocking commits: the express stream writes and syncs a batch with plain system calls on
//! the core's own thread instead of through io_uring, within a time budget.
//!
//! Why: through io_uring, a commit is four steps the executor takes between its other tasks
//! (submit the write, reap it and submit the fdatasync, reap that), and on a core another
//! account keeps saturated each step waits for the task running and for the next poll of
//! the ring (`fairness.io_poll_max_ms`), while the kernel helpers that carry the I/O (the
//! ring's worker thread, the CPU's kblockd kworker that issues the cache flush) compete with
//! the executor for that same CPU. A small sender's `250` then waits 2-3× its idle time
//! (BENCHMARKS.md, fairness round eight). A blocking `pwrite` + `fdatasync` puts the executor
//! to sleep for the device's time instead: the kernel does the I/O at once on a CPU that is
//! otherwise idle, and the committer answers as soon as the call returns.
//!
//! The cost is that the core runs nothing else meanwhile, so it is only for the express
//! stream (small batches of accounts with nothing else waiting) and is bounded: a token
//! bucket of `spool.express_blocking_budget_ms` per second of blocked time. A commit is
//! charged what it took, after the fact, so one that took long (a slow or stalled disk) is
//! paid back before the next may block: until then the stream commits through io_uring, as
//! the bulk stream always does, and the core keeps serving its sessions.

use std::fs::File;
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, FromRawFd};
use std::time::{Duration, Instant};

use glommio::io::DmaFile;

/// A token bucket of blocked time: `per_second` accrues each second, at most one second's
/// worth is saved up, and a commit's whole duration is charged after it (the bucket may go
/// into debt).
#[derive(Debug)]
pub struct Budget {
    per_second: Duration,
    /// Blocked time still allowed, in nanoseconds; negative while in debt.
    tokens_ns: i128,
    refilled: Instant,
}

impl Budget {
    /// A full bucket of `per_second`; `None` when it is zero (never block).
    pub fn new(per_second: Duration, now: Instant) -> Option<Budget> {
        (!per_second.is_zero()).then_some(Budget {
            per_second,
            tokens_ns: per_second.as_nanos() as i128,
            refilled: now,
        })
    }

    /// Whether a commit may block now.
    pub fn allows(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled);
        let earned = elapsed.as_nanos() * self.per_second.as_nanos() / 1_000_000_000;
        let cap = self.per_second.as_nanos() as i128;
        self.tokens_ns = (self.tokens_ns + earned as i128).min(cap);
        self.refilled = now;
        self.tokens_ns > 0
    }

    /// Charges a commit's blocked time.
    pub fn charge(&mut self, spent: Duration) {
        self.tokens_ns -= spent.as_nanos() as i128;
    }
}

/// Writes `bytes` at `pos` of `file` and makes them durable (`fdatasync`), blocking the
/// thread. Returns the time the fdatasync took. `bytes` and `pos` must meet the file's DMA
/// alignment (it is open with O_DIRECT), as for its io_uring writes.
pub fn write_and_sync(file: &DmaFile, bytes: &[u8], pos: u64) -> io::Result<Duration> {
    // SAFETY: the descriptor belongs to `file`, which outlives this borrow and stays open
    // during it (the committer holds its `Rc`); `ManuallyDrop` keeps this `File` from
    // closing it.
    let std_file = ManuallyDrop::new(unsafe { File::from_raw_fd(file.as_raw_fd()) });
    std::os::unix::fs::FileExt::write_all_at(&*std_file, bytes, pos)?;
    let started = Instant::now();
    std_file.sync_data()?;
    Ok(started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn zero_budget_never_blocks() {
        assert!(Budget::new(Duration::ZERO, Instant::now()).is_none());
    }

    #[test]
    fn a_full_bucket_allows_until_spent() {
        let t0 = Instant::now();
        let mut b = Budget::new(100 * MS, t0).unwrap();
        assert!(b.allows(t0));
        b.charge(60 * MS);
        assert!(b.allows(t0), "40 ms left");
        b.charge(60 * MS);
        assert!(!b.allows(t0), "20 ms in debt");
        // 100 ms/s: the 20 ms of debt is paid back after 200 ms.
        assert!(!b.allows(t0 + 150 * MS));
        assert!(b.allows(t0 + 201 * MS));
    }

    #[test]
    fn a_long_commit_is_paid_back_before_the_next_blocks() {
        let t0 = Instant::now();
        let mut b = Budget::new(100 * MS, t0).unwrap();
        assert!(b.allows(t0));
        // A stalled disk: one commit blocked for 2 s.
        b.charge(2000 * MS);
        assert!(!b.allows(t0 + 2000 * MS));
        assert!(!b.allows(t0 + 19_000 * MS));
        assert!(b.allows(t0 + 19_100 * MS));
    }

    #[test]
    fn at_most_one_second_is_saved_up() {
        let t0 = Instant::now();
        let mut b = Budget::new(100 * MS, t0).unwrap();
        assert!(b.allows(t0 + Duration::from_secs(3600)));
        b.charge(101 * MS);
        assert!(!b.allows(t0 + Duration::from_secs(3600)));
    }
}
