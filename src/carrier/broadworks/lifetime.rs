//! Lifetimes of the Xsi-Events channel and of each watched user's subscription: when each
//! must be refreshed (at 80 % of the `expires` the server granted), which refreshes or
//! re-subscriptions are due, retry times after failures, and whether every watched user is
//! subscribed. Pure bookkeeping: the caller passes every `Instant` in and does the I/O.
//!
//! Must never: do I/O, sleep, read the clock, or hold a credential.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long after a grant of `granted` the refresh is sent: 80 % of it.
pub fn refresh_in(granted: Duration) -> Duration {
    granted.checked_mul(4).map_or(granted, |d| d / 5)
}

/// The grant to plan with: what the server said (seconds, at least 1), else what we asked.
pub fn granted(said: Option<u32>, asked: Duration) -> Duration {
    match said {
        Some(s) => Duration::from_secs(u64::from(s.max(1))),
        None => asked.max(Duration::from_secs(1)),
    }
}

/// Work that is due.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Due {
    /// `PUT …/channel/{id}`.
    Channel(String),
    /// `PUT …/subscription/{id}` for this user's subscription.
    Subscription { user: String, id: String },
    /// `POST …/user/{user}`: subscribe the user (again).
    Subscribe(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum When {
    At(Instant),
    /// Handed out by `take_due`; its outcome reschedules it.
    InFlight,
    /// Not scheduled (a subscription while the channel is down: recovery owns it).
    Idle,
}

#[derive(Debug)]
struct Sub {
    id: Option<String>,
    when: When,
    failures: u32,
}

#[derive(Debug)]
struct Chan {
    id: String,
    when: When,
    failures: u32,
}

/// The channel's and the subscriptions' refresh schedule.
#[derive(Debug, Default)]
pub struct Lifetimes {
    channel: Option<Chan>,
    subs: BTreeMap<String, Sub>,
}

impl Lifetimes {
    pub fn new() -> Lifetimes {
        Lifetimes::default()
    }

    /// A channel opened with this grant.
    pub fn channel_opened(&mut self, id: &str, granted: Duration, now: Instant) {
        self.channel = Some(Chan {
            id: id.to_owned(),
            when: When::At(now + refresh_in(granted)),
            failures: 0,
        });
    }

    /// The channel's refresh was answered with this grant.
    pub fn channel_refreshed(&mut self, granted: Duration, now: Instant) {
        if let Some(c) = &mut self.channel {
            c.when = When::At(now + refresh_in(granted));
            c.failures = 0;
        }
    }

    /// The channel's refresh failed (not "gone"); retry after `backoff(failures)`.
    pub fn channel_refresh_failed(&mut self, backoff: impl Fn(u32) -> Duration, now: Instant) {
        if let Some(c) = &mut self.channel {
            c.when = When::At(now + backoff(c.failures));
            c.failures = c.failures.saturating_add(1);
        }
    }

    /// The channel is gone: nothing is refreshed until the next one opens, and every
    /// subscription must be made again (by recovery).
    pub fn channel_closed(&mut self) {
        self.channel = None;
        for s in self.subs.values_mut() {
            s.id = None;
            s.when = When::Idle;
            s.failures = 0;
        }
    }

    /// The open channel's id.
    pub fn channel_id(&self) -> Option<&str> {
        self.channel.as_ref().map(|c| c.id.as_str())
    }

    /// `user` is subscribed as `id` with this grant.
    pub fn subscribed(&mut self, user: &str, id: &str, granted: Duration, now: Instant) {
        self.subs.insert(
            user.to_owned(),
            Sub {
                id: Some(id.to_owned()),
                when: When::At(now + refresh_in(granted)),
                failures: 0,
            },
        );
    }

    /// The user's subscription refresh was answered with this grant.
    pub fn sub_refreshed(&mut self, user: &str, granted: Duration, now: Instant) {
        if let Some(s) = self.subs.get_mut(user) {
            s.when = When::At(now + refresh_in(granted));
            s.failures = 0;
        }
    }

    /// A tracked user's subscription is gone (a refresh answered 404, or the server
    /// terminated it): subscribe again now. Untracked users are ignored.
    pub fn sub_gone(&mut self, user: &str, now: Instant) {
        let Some(s) = self.subs.get_mut(user) else {
            return;
        };
        s.id = None;
        s.when = When::At(now);
        s.failures = 0;
    }

    /// A refresh or (re-)subscription of the user failed; retry after `backoff(failures)`.
    pub fn sub_failed(&mut self, user: &str, backoff: impl Fn(u32) -> Duration, now: Instant) {
        if let Some(s) = self.subs.get_mut(user) {
            s.when = When::At(now + backoff(s.failures));
            s.failures = s.failures.saturating_add(1);
        }
    }

    /// A subscription attempt during recovery failed: count it, leave it to recovery.
    /// Returns the failures so far (for the backoff).
    pub fn recovery_failed(&mut self, user: &str) -> u32 {
        match self.subs.get_mut(user) {
            Some(s) => {
                s.id = None;
                s.when = When::Idle;
                s.failures = s.failures.saturating_add(1);
                s.failures
            }
            None => 0,
        }
    }

    /// Stop tracking a user.
    pub fn forget(&mut self, user: &str) {
        self.subs.remove(user);
    }

    /// Watched users without a subscription that nothing has scheduled (recovery's work).
    pub fn unsubscribed(&self) -> Vec<String> {
        self.subs
            .iter()
            .filter(|(_, s)| s.id.is_none() && s.when == When::Idle)
            .map(|(u, _)| u.clone())
            .collect()
    }

    /// Every tracked user has a subscription.
    pub fn all_subscribed(&self) -> bool {
        self.subs.values().all(|s| s.id.is_some())
    }

    /// The user's subscription id.
    pub fn subscription(&self, user: &str) -> Option<&str> {
        self.subs.get(user).and_then(|s| s.id.as_deref())
    }

    /// When the next piece of work is due (only while a channel is open).
    pub fn next_due(&self) -> Option<Instant> {
        let chan = self.channel.as_ref()?;
        std::iter::once(chan.when)
            .chain(self.subs.values().map(|s| s.when))
            .filter_map(|w| match w {
                When::At(t) => Some(t),
                _ => None,
            })
            .min()
    }

    /// Hand out everything due at `now`, marking it in flight.
    pub fn take_due(&mut self, now: Instant) -> Vec<Due> {
        let mut out = Vec::new();
        let Some(chan) = &mut self.channel else {
            return out;
        };
        if matches!(chan.when, When::At(t) if t <= now) {
            chan.when = When::InFlight;
            out.push(Due::Channel(chan.id.clone()));
        }
        for (user, s) in &mut self.subs {
            if !matches!(s.when, When::At(t) if t <= now) {
                continue;
            }
            s.when = When::InFlight;
            out.push(match &s.id {
                Some(id) => Due::Subscription {
                    user: user.clone(),
                    id: id.clone(),
                },
                None => Due::Subscribe(user.clone()),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn backoff(n: u32) -> Duration {
        Duration::from_millis(100) * (n + 1)
    }

    #[test]
    fn grants_and_eighty_percent() {
        assert_eq!(
            refresh_in(Duration::from_secs(3600)),
            Duration::from_secs(2880)
        );
        assert_eq!(
            refresh_in(Duration::from_secs(2)),
            Duration::from_millis(1600)
        );
        assert_eq!(granted(Some(2), S * 3600), S * 2);
        assert_eq!(
            granted(Some(0), S * 3600),
            S,
            "a zero grant is not a busy loop"
        );
        assert_eq!(granted(None, S * 90), S * 90);
        assert_eq!(refresh_in(Duration::MAX), Duration::MAX);
    }

    #[test]
    fn channel_and_subscriptions_come_due_at_eighty_percent() {
        let t0 = Instant::now();
        let mut l = Lifetimes::new();
        assert_eq!(l.next_due(), None);
        l.channel_opened("ch-1", S * 10, t0);
        l.subscribed("a", "sub-a", S * 5, t0);
        assert_eq!(l.next_due(), Some(t0 + S * 4));
        assert!(l.take_due(t0 + S * 3).is_empty());
        assert_eq!(
            l.take_due(t0 + S * 4),
            vec![Due::Subscription {
                user: "a".into(),
                id: "sub-a".into()
            }]
        );
        // In flight: not handed out twice.
        assert_eq!(l.next_due(), Some(t0 + S * 8));
        assert!(l.take_due(t0 + S * 5).is_empty());
        l.sub_refreshed("a", S * 5, t0 + S * 5);
        assert_eq!(l.next_due(), Some(t0 + S * 8));
        assert_eq!(l.take_due(t0 + S * 8), vec![Due::Channel("ch-1".into())]);
        l.channel_refreshed(S * 10, t0 + S * 8);
        assert_eq!(l.next_due(), Some(t0 + S * 9));
        assert_eq!(l.channel_id(), Some("ch-1"));
    }

    #[test]
    fn failures_back_off_and_gone_subscriptions_resubscribe() {
        let t0 = Instant::now();
        let mut l = Lifetimes::new();
        l.channel_opened("ch-1", S * 100, t0);
        l.subscribed("a", "sub-a", S * 10, t0);
        l.take_due(t0 + S * 8);
        l.sub_gone("a", t0 + S * 8);
        assert!(!l.all_subscribed());
        assert_eq!(l.take_due(t0 + S * 8), vec![Due::Subscribe("a".into())]);
        l.sub_failed("a", backoff, t0 + S * 8);
        assert_eq!(l.next_due(), Some(t0 + S * 8 + backoff(0)));
        l.take_due(t0 + S * 9);
        l.sub_failed("a", backoff, t0 + S * 9);
        assert_eq!(l.next_due(), Some(t0 + S * 9 + backoff(1)));
        assert_eq!(l.take_due(t0 + S * 10), vec![Due::Subscribe("a".into())]);
        l.subscribed("a", "sub-a2", S * 10, t0 + S * 10);
        assert!(l.all_subscribed());
        assert_eq!(l.subscription("a"), Some("sub-a2"));
        // A failed channel refresh is retried with the backoff.
        l.forget("a");
        assert_eq!(l.take_due(t0 + S * 80), vec![Due::Channel("ch-1".into())]);
        l.channel_refresh_failed(backoff, t0 + S * 80);
        assert_eq!(l.next_due(), Some(t0 + S * 80 + backoff(0)));
    }

    #[test]
    fn a_closed_channel_leaves_subscriptions_to_recovery() {
        let t0 = Instant::now();
        let mut l = Lifetimes::new();
        l.channel_opened("ch-1", S * 10, t0);
        l.subscribed("a", "sub-a", S * 10, t0);
        l.subscribed("b", "sub-b", S * 10, t0);
        l.channel_closed();
        assert_eq!(l.next_due(), None);
        assert!(l.take_due(t0 + S * 100).is_empty());
        assert_eq!(l.unsubscribed(), vec!["a".to_string(), "b".to_string()]);
        l.channel_opened("ch-2", S * 10, t0 + S * 20);
        // Recovery's users are not scheduled by the refresher.
        assert_eq!(l.take_due(t0 + S * 20), vec![]);
        l.subscribed("a", "sub-a2", S * 10, t0 + S * 20);
        assert_eq!(l.recovery_failed("b"), 1);
        assert_eq!(l.recovery_failed("b"), 2);
        assert!(!l.all_subscribed());
        assert_eq!(l.unsubscribed(), vec!["b".to_string()]);
        l.subscribed("b", "sub-b2", S * 10, t0 + S * 21);
        assert!(l.all_subscribed());
        assert!(l.unsubscribed().is_empty());
        l.forget("b");
        assert_eq!(l.subscription("b"), None);
        assert_eq!(l.recovery_failed("zz"), 0);
        l.sub_gone("zz", t0);
        assert_eq!(l.subscription("zz"), None);
        assert!(
            l.all_subscribed(),
            "an untracked user is not subscribed by accident"
        );
    }
}
