//! Limits on failed authentication per client address (`--auth-failure-limit` per minute):
//! an address that keeps presenting bad credentials gets `429` with `Retry-After` on `/v1`
//! and the forward-auth endpoints, and `RATE_LIMITED` answers from `/v1/verify`, until its
//! rate of failures is back under the limit.
//!
//! Failures are counted by `governor` (GCRA, one bucket per address, bursts up to the
//! per-minute limit). When a failure finds the bucket empty, the address is refused for as
//! long as `governor` says the next failure would have to wait — before its credential is
//! even looked at, so a correct guess during the lock-out does not get through either.
//! Successful requests consume nothing: a well-behaved client is never limited. 256-bit
//! secrets make guessing hopeless anyway; this keeps floods of bad credentials from costing
//! anything but a map lookup.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Where a limited request was refused, for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surface {
    /// Bearer authentication of a `/v1` route.
    Api,
    /// `POST /v1/verify`.
    Verify,
    /// A forward-auth endpoint.
    ForwardAuth,
}

impl Surface {
    pub fn as_str(self) -> &'static str {
        match self {
            Surface::Api => "api",
            Surface::Verify => "verify",
            Surface::ForwardAuth => "forward_auth",
        }
    }
}

/// Counts failed authentications per client address.
pub struct FailureLimiter {
    counter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    clock: DefaultClock,
    /// Addresses refused until the instant given.
    blocked: Mutex<HashMap<IpAddr, Instant>>,
}

impl FailureLimiter {
    /// A limiter of `per_minute` failures per address; 0 turns it off.
    pub fn new(per_minute: u32) -> FailureLimiter {
        FailureLimiter {
            counter: NonZeroU32::new(per_minute).map(|n| RateLimiter::keyed(Quota::per_minute(n))),
            clock: DefaultClock::default(),
            blocked: Mutex::new(HashMap::new()),
        }
    }

    /// How long `client` is still refused, if it is.
    pub fn refused(&self, client: IpAddr) -> Option<Duration> {
        self.counter.as_ref()?;
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        let until = *blocked.get(&client)?;
        let now = Instant::now();
        if until > now {
            Some(until - now)
        } else {
            blocked.remove(&client);
            None
        }
    }

    /// Counts one failure of `client`; returns how long it is now refused, if this failure
    /// went over the limit.
    pub fn failed(&self, client: IpAddr) -> Option<Duration> {
        let counter = self.counter.as_ref()?;
        match counter.check_key(&client) {
            Ok(()) => None,
            Err(not_until) => {
                let wait = not_until
                    .wait_time_from(self.clock.now())
                    .max(Duration::from_millis(100));
                self.blocked
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(client, Instant::now() + wait);
                Some(wait)
            }
        }
    }

    /// Forgets addresses whose buckets are full again and whose refusal has ended, so the
    /// maps stay as small as the set of recent offenders.
    pub fn prune(&self) {
        if let Some(counter) = &self.counter {
            counter.retain_recent();
            counter.shrink_to_fit();
        }
        let now = Instant::now();
        self.blocked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, until| *until > now);
    }
}

/// Whole seconds for a `Retry-After` header (at least 1).
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_over_the_limit_refuse_the_address_and_only_it() {
        let limiter = FailureLimiter::new(5);
        let bad: IpAddr = "203.0.113.1".parse().expect("ip");
        let good: IpAddr = "203.0.113.2".parse().expect("ip");
        for _ in 0..5 {
            assert_eq!(limiter.failed(bad), None);
            assert_eq!(limiter.refused(bad), None);
        }
        let wait = limiter
            .failed(bad)
            .expect("the sixth failure is over the limit");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(13),
            "{wait:?}"
        );
        assert!(limiter.refused(bad).is_some());
        assert_eq!(limiter.refused(good), None);
        assert_eq!(limiter.failed(good), None);
        limiter.prune();
        assert!(
            limiter.refused(bad).is_some(),
            "pruning keeps live refusals"
        );
        assert_eq!(retry_after_secs(Duration::from_millis(1200)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
        let off = FailureLimiter::new(0);
        for _ in 0..100 {
            assert_eq!(off.failed(bad), None);
        }
        assert_eq!(off.refused(bad), None);
    }
}
