//! Abuse limits per principal: token buckets for reads and detokenization (from
//! the policy's `rate_limits`), and an anomaly signal when a principal's
//! detokenization rate jumps far above its own baseline.

use crate::vault::Reason;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use crate::vault::{Caller, VaultError};

/// The window over which detokenization rates are compared.
const WINDOW_SECS: f64 = 10.0;
/// A window this many times its principal's baseline is an anomaly...
const ANOMALY_FACTOR: f64 = 10.0;
/// ...when it also exceeds this many values (small absolute jumps are noise).
const ANOMALY_FLOOR: f64 = 1000.0;
/// Weight of the newest window in the baseline (an exponential average).
const BASELINE_WEIGHT: f64 = 0.2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Budget {
    Detokenize,
    Reads,
}

struct Bucket {
    tokens: f64,
    refreshed: Instant,
}

/// The detokenization history of one principal.
struct Trend {
    window_start: Instant,
    in_window: f64,
    baseline: Option<f64>,
}

#[derive(Default)]
pub struct AbuseGuard {
    buckets: Mutex<HashMap<(String, Budget), Bucket>>,
    trends: Mutex<HashMap<String, Trend>>,
}

impl AbuseGuard {
    /// Spends `values` of the caller's detokenization budget, and watches its rate.
    pub fn detokenize(&self, caller: &Caller, values: usize) -> Result<bool, VaultError> {
        let rate = caller.principal.rate_limits().detokenize_per_second;
        self.spend(
            caller,
            Budget::Detokenize,
            values as f64,
            rate,
            "values detokenized",
        )?;
        Ok(self.observe(caller.name(), values as f64))
    }

    /// Spends one read (GetFields, FindCustomers, ExportCustomer).
    pub fn read(&self, caller: &Caller) -> Result<(), VaultError> {
        let rate = caller.principal.rate_limits().reads_per_second;
        self.spend(caller, Budget::Reads, 1.0, rate, "reads")
    }

    /// A token bucket holding one second of the rate: a batch larger than
    /// that is always refused.
    fn spend(
        &self,
        caller: &Caller,
        budget: Budget,
        amount: f64,
        rate: Option<f64>,
        what: &str,
    ) -> Result<(), VaultError> {
        let Some(rate) = rate else {
            return Ok(());
        };
        let capacity = rate.max(1.0);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let bucket = buckets
            .entry((caller.name().to_owned(), budget))
            .or_insert(Bucket {
                tokens: capacity,
                refreshed: now,
            });
        let elapsed = now.duration_since(bucket.refreshed).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(capacity);
        bucket.refreshed = now;
        if bucket.tokens < amount {
            return Err(VaultError::new(
                Reason::RateLimited,
                format!(
                "principal \"{}\" is over its rate limit of {rate} {what} per second; retry later",
                caller.name()
            ),
            ));
        }
        bucket.tokens -= amount;
        Ok(())
    }

    /// Counts values into the principal's current window; true when the last
    /// full window was an anomaly against the baseline before it.
    fn observe(&self, principal: &str, values: f64) -> bool {
        let now = Instant::now();
        let mut trends = self.trends.lock().unwrap_or_else(PoisonError::into_inner);
        let trend = trends.entry(principal.to_owned()).or_insert(Trend {
            window_start: now,
            in_window: 0.0,
            baseline: None,
        });
        let mut anomaly = false;
        if now.duration_since(trend.window_start).as_secs_f64() >= WINDOW_SECS {
            let finished = trend.in_window;
            if let Some(baseline) = trend.baseline {
                anomaly = finished > ANOMALY_FLOOR && finished > ANOMALY_FACTOR * baseline;
            }
            // An anomalous window does not become the new normal.
            if !anomaly {
                trend.baseline = Some(match trend.baseline {
                    Some(baseline) => {
                        baseline * (1.0 - BASELINE_WEIGHT) + finished * BASELINE_WEIGHT
                    }
                    None => finished,
                });
            }
            trend.window_start = now;
            trend.in_window = 0.0;
        }
        trend.in_window += values;
        anomaly
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn caller(policy_limits: &str) -> Caller {
        let policy = crate::policy::Policy::parse(&format!(
            r#"
[[purposes]]
name = "billing"
description = "Billing."
basis = "contract"

[[principals]]
name = "reader"
spiffe_id = "spiffe://example.org/reader"
scopes = ["data:read"]
{policy_limits}
"#
        ))
        .unwrap();
        let principal = policy
            .authenticate_certificate(None, &["spiffe://example.org/reader".into()])
            .unwrap();
        Caller {
            principal: Arc::clone(&principal),
            policy: Arc::new(policy),
            request_id: "req".into(),
            source: None,
        }
    }

    #[test]
    fn without_limits_nothing_is_refused() {
        let guard = AbuseGuard::default();
        let caller = caller("");
        for _ in 0..10_000 {
            guard.read(&caller).unwrap();
        }
    }

    #[test]
    fn a_principal_over_its_rate_is_refused_and_recovers() {
        let guard = AbuseGuard::default();
        let caller = caller(
            "[principals.rate_limits]\nreads_per_second = 5.0\ndetokenize_per_second = 100.0",
        );
        for _ in 0..5 {
            guard.read(&caller).unwrap();
        }
        let refused = guard.read(&caller).unwrap_err();
        assert_eq!(refused.reason(), Reason::RateLimited);
        assert!(refused.to_string().contains("reader"));
        guard.detokenize(&caller, 100).unwrap();
        assert!(guard.detokenize(&caller, 1).is_err());
        std::thread::sleep(std::time::Duration::from_millis(250));
        guard.read(&caller).unwrap();
    }

    #[test]
    fn a_jump_far_above_the_baseline_is_an_anomaly() {
        let guard = AbuseGuard::default();
        let mut trends = guard.trends.lock().unwrap();
        trends.insert(
            "reader".into(),
            Trend {
                window_start: Instant::now() - std::time::Duration::from_secs(11),
                in_window: 5000.0,
                baseline: Some(100.0),
            },
        );
        drop(trends);
        assert!(guard.observe("reader", 1.0));
        // A normal window afterwards is no anomaly.
        let mut trends = guard.trends.lock().unwrap();
        let trend = trends.get_mut("reader").unwrap();
        trend.window_start = Instant::now() - std::time::Duration::from_secs(11);
        trend.in_window = 120.0;
        drop(trends);
        assert!(!guard.observe("reader", 1.0));
    }
}
