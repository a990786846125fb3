//! Deficit round robin over per-account queues (Shreedhar & Varghese, 1995).
//!
//! Every account with work has its own FIFO; the active accounts are visited in turn, and
//! on each visit an account's deficit grows by `quantum × weight` and it may take items
//! while their cost fits the deficit. A backlog of any size in one account therefore
//! delays another account's next item by at most one round — about one quantum of work per
//! active account — which is the bound the product promises a small sender while a large
//! one floods. Costs are in whatever unit the stage measures (bytes for rewrite and
//! spool, messages for delivery slots); an item costlier than a quantum still gets
//! through, after its account has saved up enough rounds.
//!
//! Plain data: no executor, no clock, so the bound is tested exactly.

use std::collections::{HashMap, VecDeque};

/// The queues of one stage.
#[derive(Debug)]
pub struct Drr<K, T> {
    quantum: u64,
    queues: HashMap<K, Flow<T>>,
    /// Accounts with queued items, in visiting order.
    active: VecDeque<K>,
    len: usize,
}

#[derive(Debug)]
struct Flow<T> {
    items: VecDeque<(T, u64)>,
    deficit: u64,
    weight: u32,
    /// The account got its quantum for the turn it is having now.
    topped: bool,
}

impl<K: Clone + Eq + std::hash::Hash, T> Drr<K, T> {
    /// `quantum` is the cost an account of weight 1 may take per round.
    pub fn new(quantum: u64) -> Drr<K, T> {
        Drr {
            quantum: quantum.max(1),
            queues: HashMap::new(),
            active: VecDeque::new(),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Items queued for one account.
    pub fn len_of(&self, key: &K) -> usize {
        self.queues.get(key).map_or(0, |f| f.items.len())
    }

    /// Queues `item` of `cost` for `key`, whose share is `weight` (≥ 1) times the quantum.
    pub fn push(&mut self, key: K, item: T, cost: u64, weight: u32) {
        let flow = self.queues.entry(key.clone()).or_insert_with(|| Flow {
            items: VecDeque::new(),
            deficit: 0,
            weight: weight.max(1),
            topped: false,
        });
        flow.weight = weight.max(1);
        if flow.items.is_empty() {
            self.active.push_back(key);
        }
        flow.items.push_back((item, cost));
        self.len += 1;
    }

    /// The next item to serve, with its account.
    pub fn pop(&mut self) -> Option<(K, T)> {
        // Every turn that cannot serve adds a quantum to that account and moves it to the
        // back, so an item of any cost is reached after a bounded number of turns.
        loop {
            let key = self.active.front()?.clone();
            let alone = self.active.len() == 1;
            let quantum = self.quantum;
            let flow = self.queues.get_mut(&key)?;
            let cost = flow.items.front()?.1;
            if !flow.topped {
                flow.deficit += quantum * flow.weight as u64;
                flow.topped = true;
            }
            if alone {
                // Nobody to be fair to: do not spin through empty rounds.
                flow.deficit = flow.deficit.max(cost);
            }
            if cost <= flow.deficit {
                flow.deficit -= cost;
                let (item, _) = flow.items.pop_front()?;
                self.len -= 1;
                if flow.items.is_empty() {
                    // An account that empties its queue keeps no credit (DRR's rule).
                    self.active.pop_front();
                    self.queues.remove(&key);
                }
                return Some((key, item));
            }
            // Its turn is over: keep the deficit, go to the back of the round.
            flow.topped = false;
            self.active.rotate_left(1);
        }
    }

    /// Removes every queued item for which `f` is false (e.g. messages that finished).
    pub fn retain(&mut self, mut f: impl FnMut(&K, &T) -> bool) {
        let mut removed = 0;
        for (key, flow) in self.queues.iter_mut() {
            let before = flow.items.len();
            flow.items.retain(|(item, _)| f(key, item));
            removed += before - flow.items.len();
        }
        self.len -= removed;
        self.queues.retain(|_, flow| !flow.items.is_empty());
        let queues = &self.queues;
        self.active.retain(|k| queues.contains_key(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The order in which items are served, as (account, item).
    fn drain(d: &mut Drr<&'static str, u32>) -> Vec<(&'static str, u32)> {
        std::iter::from_fn(|| d.pop()).collect()
    }

    #[test]
    fn a_small_account_waits_at_most_one_round_behind_a_flood() {
        let mut d = Drr::new(20_000);
        for i in 0..50_000 {
            d.push("big", i, 20_000, 1);
        }
        d.push("small", 0, 20_000, 1);
        let order = drain(&mut d);
        let small_at = order.iter().position(|(k, _)| *k == "small").unwrap();
        assert!(
            small_at <= 1,
            "served at position {small_at} behind a 50,000-message backlog"
        );
        assert_eq!(order.len(), 50_001);
    }

    #[test]
    fn weights_share_the_work_in_proportion() {
        let mut d = Drr::new(1);
        for i in 0..300 {
            d.push("heavy", i, 1, 3);
            d.push("light", i, 1, 1);
        }
        let first: Vec<_> = drain(&mut d).into_iter().take(200).collect();
        let heavy = first.iter().filter(|(k, _)| *k == "heavy").count();
        assert_eq!(heavy, 150, "3:1 weights give 150 of the first 200");
    }

    #[test]
    fn costly_items_get_through_and_fifo_holds_within_an_account() {
        let mut d = Drr::new(1000);
        d.push("a", 1, 5000, 1);
        d.push("a", 2, 10, 1);
        d.push("b", 1, 10, 1);
        d.push("b", 2, 10, 1);
        let order = drain(&mut d);
        assert_eq!(order, vec![("b", 1), ("b", 2), ("a", 1), ("a", 2)]);
        assert!(d.is_empty());
        assert_eq!(d.pop(), None);
    }

    #[test]
    fn retain_drops_items_and_idle_accounts() {
        let mut d = Drr::new(1);
        d.push("a", 1, 1, 1);
        d.push("a", 2, 1, 1);
        d.push("b", 3, 1, 1);
        d.retain(|_, item| *item != 3 && *item != 1);
        assert_eq!(d.len(), 1);
        assert_eq!(d.len_of(&"b"), 0);
        assert_eq!(drain(&mut d), vec![("a", 2)]);
    }
}
