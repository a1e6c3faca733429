//! Reusable request budgets: rolling and fixed windows per key (usually one provider
//! account), checked together so one request either fits every policy or is refused.
//!
//! Providers describe their limits as a list of [`Policy`] values and turn the resulting
//! [`Verdict`] into their own headers and error body; the limiter knows nothing about HTTP.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// How a policy's window moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowKind {
    /// Counts the requests of the last `window` (a sliding log).
    Rolling,
    /// Counts requests since the window opened; the count restarts once `window` has passed.
    Fixed,
}

/// One limit: at most `limit` requests per `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Name reported when this policy refuses a request, e.g. `TEN_SECONDLY_ROLLING`.
    pub name: &'static str,
    /// Requests allowed per window.
    pub limit: u64,
    /// Length of the window.
    pub window: Duration,
    /// Rolling or fixed window.
    pub kind: WindowKind,
    /// When false the policy is only reported (e.g. in headers) and never refuses.
    pub enforced: bool,
}

impl Policy {
    /// An enforced rolling-window policy.
    pub const fn rolling(name: &'static str, limit: u64, window: Duration) -> Self {
        Self {
            name,
            limit,
            window,
            kind: WindowKind::Rolling,
            enforced: true,
        }
    }

    /// An enforced fixed-window policy.
    pub const fn fixed(name: &'static str, limit: u64, window: Duration) -> Self {
        Self {
            name,
            limit,
            window,
            kind: WindowKind::Fixed,
            enforced: true,
        }
    }

    /// The same policy, reported but never refusing.
    pub const fn informational(self) -> Self {
        Self {
            enforced: false,
            ..self
        }
    }
}

/// How much of one policy's budget is left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// The policy's name.
    pub policy: &'static str,
    /// Requests allowed per window.
    pub limit: u64,
    /// Requests still allowed in the current window.
    pub remaining: u64,
    /// Time until at least one more request is allowed (or the window restarts).
    pub reset_after: Duration,
}

/// The answer to a request for budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The request fits every policy and has been counted.
    Allowed {
        /// Budget left per policy, after counting this request.
        usage: Vec<Usage>,
    },
    /// An enforced policy is exhausted; nothing was counted.
    Denied {
        /// The first policy that refused.
        policy: &'static str,
        /// Time until that policy allows a request again.
        retry_after: Duration,
        /// Budget left per policy.
        usage: Vec<Usage>,
    },
}

impl Verdict {
    /// Budget left per policy, in the order the policies were given.
    pub fn usage(&self) -> &[Usage] {
        match self {
            Self::Allowed { usage } | Self::Denied { usage, .. } => usage,
        }
    }

    /// Whether the request was allowed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allowed { .. })
    }
}

/// Request windows per key and policy name.
#[derive(Debug, Default)]
pub struct RateLimiter {
    windows: HashMap<(String, &'static str), Window>,
}

impl RateLimiter {
    /// An empty limiter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one request for `key` if it fits every enforced policy.
    pub fn acquire(&mut self, key: &str, policies: &[Policy], now: Instant) -> Verdict {
        let mut refusal = None;
        for policy in policies {
            let window = self.window(key, policy, now);
            if policy.enforced && refusal.is_none() && window.used() >= policy.limit {
                refusal = Some((policy.name, window.retry_after(policy, now)));
            }
        }
        if refusal.is_none() {
            for policy in policies {
                self.window(key, policy, now).record(now);
            }
        }
        let usage = self.peek(key, policies, now);
        match refusal {
            None => Verdict::Allowed { usage },
            Some((policy, retry_after)) => Verdict::Denied {
                policy,
                retry_after,
                usage,
            },
        }
    }

    /// Budget left for `key` per policy, without counting a request.
    pub fn peek(&mut self, key: &str, policies: &[Policy], now: Instant) -> Vec<Usage> {
        policies
            .iter()
            .map(|policy| {
                let window = self.window(key, policy, now);
                Usage {
                    policy: policy.name,
                    limit: policy.limit,
                    remaining: policy.limit.saturating_sub(window.used()),
                    reset_after: window.reset_after(policy, now),
                }
            })
            .collect()
    }

    /// Forgets every window.
    pub fn clear(&mut self) {
        self.windows.clear();
    }

    /// The pruned window of `key` for `policy`, created on first use.
    fn window(&mut self, key: &str, policy: &Policy, now: Instant) -> &mut Window {
        let window = self
            .windows
            .entry((key.to_owned(), policy.name))
            .or_insert_with(|| Window::new(policy.kind));
        if window.kind() != policy.kind {
            *window = Window::new(policy.kind);
        }
        window.prune(policy, now);
        window
    }
}

/// The requests counted for one key under one policy.
#[derive(Debug)]
enum Window {
    Rolling(VecDeque<Instant>),
    Fixed { opened: Option<Instant>, count: u64 },
}

impl Window {
    fn new(kind: WindowKind) -> Self {
        match kind {
            WindowKind::Rolling => Self::Rolling(VecDeque::new()),
            WindowKind::Fixed => Self::Fixed {
                opened: None,
                count: 0,
            },
        }
    }

    fn kind(&self) -> WindowKind {
        match self {
            Self::Rolling(_) => WindowKind::Rolling,
            Self::Fixed { .. } => WindowKind::Fixed,
        }
    }

    /// Drops what has left the window.
    fn prune(&mut self, policy: &Policy, now: Instant) {
        match self {
            Self::Rolling(hits) => {
                while hits
                    .front()
                    .is_some_and(|hit| now.saturating_duration_since(*hit) >= policy.window)
                {
                    hits.pop_front();
                }
            }
            Self::Fixed { opened, count } => {
                if opened.is_some_and(|at| now.saturating_duration_since(at) >= policy.window) {
                    *opened = None;
                    *count = 0;
                }
            }
        }
    }

    fn used(&self) -> u64 {
        match self {
            Self::Rolling(hits) => u64::try_from(hits.len()).unwrap_or(u64::MAX),
            Self::Fixed { count, .. } => *count,
        }
    }

    fn record(&mut self, now: Instant) {
        match self {
            Self::Rolling(hits) => hits.push_back(now),
            Self::Fixed { opened, count } => {
                opened.get_or_insert(now);
                *count += 1;
            }
        }
    }

    /// Time until the oldest counted request leaves the window (or the window restarts).
    fn reset_after(&self, policy: &Policy, now: Instant) -> Duration {
        let oldest = match self {
            Self::Rolling(hits) => hits.front().copied(),
            Self::Fixed { opened, .. } => *opened,
        };
        oldest.map_or(policy.window, |at| expiry(at, policy, now))
    }

    /// Time until the window holds fewer than `limit` requests.
    fn retry_after(&self, policy: &Policy, now: Instant) -> Duration {
        match self {
            Self::Rolling(hits) => {
                let excess = self.used().saturating_sub(policy.limit);
                let index = usize::try_from(excess).unwrap_or(usize::MAX);
                hits.get(index)
                    .map_or(Duration::ZERO, |at| expiry(*at, policy, now))
            }
            Self::Fixed { .. } => self.reset_after(policy, now),
        }
    }
}

/// Time left before something counted at `at` leaves the window.
fn expiry(at: Instant, policy: &Policy, now: Instant) -> Duration {
    (at + policy.window).saturating_duration_since(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN_S: Duration = Duration::from_secs(10);

    #[test]
    fn rolling_allows_limit_then_denies_then_recovers() {
        let policies = [Policy::rolling("TEN", 3, TEN_S)];
        let mut limiter = RateLimiter::new();
        let start = Instant::now();
        for i in 0..3 {
            let verdict = limiter.acquire("a", &policies, start + Duration::from_secs(i));
            assert!(verdict.is_allowed());
            assert_eq!(verdict.usage()[0].remaining, 2 - i);
        }
        let denied = limiter.acquire("a", &policies, start + Duration::from_secs(4));
        assert_eq!(
            denied,
            Verdict::Denied {
                policy: "TEN",
                retry_after: Duration::from_secs(6),
                usage: vec![Usage {
                    policy: "TEN",
                    limit: 3,
                    remaining: 0,
                    reset_after: Duration::from_secs(6),
                }],
            }
        );
        // The first request leaves the window at start + 10 s: one slot frees up.
        let later = start + TEN_S;
        assert!(limiter.acquire("a", &policies, later).is_allowed());
        assert!(!limiter.acquire("a", &policies, later).is_allowed());
    }

    #[test]
    fn keys_are_independent() {
        let policies = [Policy::rolling("TEN", 1, TEN_S)];
        let mut limiter = RateLimiter::new();
        let now = Instant::now();
        assert!(limiter.acquire("a", &policies, now).is_allowed());
        assert!(!limiter.acquire("a", &policies, now).is_allowed());
        assert!(limiter.acquire("b", &policies, now).is_allowed());
    }

    #[test]
    fn fixed_window_restarts() {
        let policies = [Policy::fixed("DAILY", 2, TEN_S)];
        let mut limiter = RateLimiter::new();
        let start = Instant::now();
        assert!(limiter.acquire("a", &policies, start).is_allowed());
        assert!(
            limiter
                .acquire("a", &policies, start + Duration::from_secs(9))
                .is_allowed()
        );
        let denied = limiter.acquire("a", &policies, start + Duration::from_secs(9));
        assert!(
            matches!(denied, Verdict::Denied { retry_after, .. } if retry_after == Duration::from_secs(1))
        );
        assert!(limiter.acquire("a", &policies, start + TEN_S).is_allowed());
    }

    #[test]
    fn a_refusal_counts_nothing_anywhere() {
        let policies = [
            Policy::rolling("SMALL", 1, TEN_S),
            Policy::fixed("BIG", 100, TEN_S),
        ];
        let mut limiter = RateLimiter::new();
        let now = Instant::now();
        assert!(limiter.acquire("a", &policies, now).is_allowed());
        assert!(!limiter.acquire("a", &policies, now).is_allowed());
        assert_eq!(limiter.peek("a", &policies, now)[1].remaining, 99);
    }

    #[test]
    fn informational_policies_never_refuse() {
        let policies = [Policy::rolling("SECONDLY", 1, TEN_S).informational()];
        let mut limiter = RateLimiter::new();
        let now = Instant::now();
        for _ in 0..5 {
            assert!(limiter.acquire("a", &policies, now).is_allowed());
        }
        assert_eq!(limiter.peek("a", &policies, now)[0].remaining, 0);
    }

    #[test]
    fn clear_forgets() {
        let policies = [Policy::rolling("TEN", 1, TEN_S)];
        let mut limiter = RateLimiter::new();
        let now = Instant::now();
        assert!(limiter.acquire("a", &policies, now).is_allowed());
        limiter.clear();
        assert!(limiter.acquire("a", &policies, now).is_allowed());
    }
}
