//! The DNIS pool of one tenant: random allocation of a free number, lookup by number, and
//! a quarantine before a released number is handed out again.
//!
//! Pure: time comes in as `Instant`s. Must never: hand out a number that is in use or
//! still in quarantine.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::leg::SessionId;

/// How long a released number stays out of the pool by default.
pub const DEFAULT_QUARANTINE: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
enum Slot {
    Free,
    InUse(SessionId),
    Quarantined { session: SessionId, until: Instant },
}

/// What a number is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnisState {
    /// Not one of this pool's numbers.
    Unknown,
    /// In the pool, not allocated.
    Free,
    /// Allocated to this session.
    InUse(SessionId),
    /// Released by this session, not yet reusable.
    Quarantined(SessionId),
}

/// One tenant's numbers.
#[derive(Debug)]
pub struct DnisPool {
    numbers: Vec<Arc<str>>,
    slots: Vec<Slot>,
    index: HashMap<Arc<str>, usize>,
    free: Vec<usize>,
    quarantine: VecDeque<usize>,
    quarantine_for: Duration,
}

impl DnisPool {
    /// A pool of these numbers (duplicates are kept once).
    pub fn new(numbers: impl IntoIterator<Item = String>, quarantine_for: Duration) -> DnisPool {
        let mut pool = DnisPool {
            numbers: Vec::new(),
            slots: Vec::new(),
            index: HashMap::new(),
            free: Vec::new(),
            quarantine: VecDeque::new(),
            quarantine_for,
        };
        for n in numbers {
            let n: Arc<str> = n.into();
            if pool.index.contains_key(&n) {
                continue;
            }
            let i = pool.numbers.len();
            pool.index.insert(n.clone(), i);
            pool.numbers.push(n);
            pool.slots.push(Slot::Free);
            pool.free.push(i);
        }
        pool
    }

    /// Numbers in all.
    pub fn total(&self) -> usize {
        self.numbers.len()
    }

    /// Numbers allocated to a session now (neither free nor quarantined).
    pub fn in_use(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s, Slot::InUse(_)))
            .count()
    }

    /// Numbers that can be allocated at `now`.
    pub fn available(&mut self, now: Instant) -> usize {
        self.expire_quarantine(now);
        self.free.len()
    }

    fn expire_quarantine(&mut self, now: Instant) {
        while let Some(&i) = self.quarantine.front() {
            match &self.slots[i] {
                Slot::Quarantined { until, .. } if *until <= now => {
                    self.quarantine.pop_front();
                    self.slots[i] = Slot::Free;
                    self.free.push(i);
                }
                Slot::Quarantined { .. } => break,
                _ => {
                    self.quarantine.pop_front();
                }
            }
        }
    }

    /// Allocate a random free number to `session`.
    pub fn allocate(&mut self, session: SessionId, now: Instant) -> Option<Arc<str>> {
        self.expire_quarantine(now);
        if self.free.is_empty() {
            return None;
        }
        let pick = rand::rng().random_range(0..self.free.len());
        let i = self.free.swap_remove(pick);
        self.slots[i] = Slot::InUse(session);
        Some(self.numbers[i].clone())
    }

    /// Give a number back: it is quarantined until `now + quarantine`. Only the session
    /// holding it can release it; anything else is ignored.
    pub fn release(&mut self, number: &str, session: &SessionId, now: Instant) {
        let Some(&i) = self.index.get(number) else {
            return;
        };
        if matches!(&self.slots[i], Slot::InUse(s) if s == session) {
            self.slots[i] = Slot::Quarantined {
                session: session.clone(),
                until: now + self.quarantine_for,
            };
            self.quarantine.push_back(i);
        }
    }

    /// What `number` is at `now`.
    pub fn lookup(&mut self, number: &str, now: Instant) -> DnisState {
        self.expire_quarantine(now);
        match self.index.get(number).map(|&i| &self.slots[i]) {
            None => DnisState::Unknown,
            Some(Slot::Free) => DnisState::Free,
            Some(Slot::InUse(s)) => DnisState::InUse(s.clone()),
            Some(Slot::Quarantined { session, .. }) => DnisState::Quarantined(session.clone()),
        }
    }

    /// Whether this pool holds `number`.
    pub fn contains(&self, number: &str) -> bool {
        self.index.contains_key(number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn sid(s: &str) -> SessionId {
        s.into()
    }

    fn pool(n: usize) -> DnisPool {
        DnisPool::new(
            (0..n).map(|i| format!("+6139000{i:04}")),
            Duration::from_secs(10),
        )
    }

    #[test]
    fn allocates_every_number_once() {
        let t0 = Instant::now();
        let mut p = pool(50);
        let mut seen = HashSet::new();
        for i in 0..50 {
            let n = p.allocate(sid(&format!("s{i}")), t0).expect("free");
            assert!(seen.insert(n));
        }
        assert!(p.allocate(sid("x"), t0).is_none());
        assert_eq!(p.available(t0), 0);
    }

    #[test]
    fn quarantine_then_reuse() {
        let t0 = Instant::now();
        let mut p = pool(1);
        let a = sid("a");
        let n = p.allocate(a.clone(), t0).expect("free");
        assert_eq!(p.lookup(&n, t0), DnisState::InUse(a.clone()));
        p.release(&n, &sid("other"), t0); // not the holder: ignored
        assert_eq!(p.lookup(&n, t0), DnisState::InUse(a.clone()));
        p.release(&n, &a, t0);
        assert_eq!(p.lookup(&n, t0), DnisState::Quarantined(a.clone()));
        assert!(p.allocate(sid("b"), t0 + Duration::from_secs(9)).is_none());
        assert_eq!(p.lookup(&n, t0 + Duration::from_secs(10)), DnisState::Free);
        assert_eq!(p.allocate(sid("b"), t0 + Duration::from_secs(10)), Some(n));
        assert_eq!(p.lookup("+1", t0), DnisState::Unknown);
    }

    #[test]
    fn allocation_is_random() {
        let t0 = Instant::now();
        let mut firsts = HashSet::new();
        for _ in 0..20 {
            let mut p = pool(100);
            firsts.insert(p.allocate(sid("a"), t0).expect("free"));
        }
        assert!(firsts.len() > 1);
    }

    #[test]
    fn double_release_keeps_one_entry() {
        let t0 = Instant::now();
        let mut p = pool(2);
        let a = sid("a");
        let n = p.allocate(a.clone(), t0).expect("free");
        p.release(&n, &a, t0);
        p.release(&n, &a, t0);
        let later = t0 + Duration::from_secs(11);
        assert_eq!(p.available(later), 2);
    }
}
