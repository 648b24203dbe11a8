//! How refused calls reach the audit log without becoming a write path that
//! anyone with an API key can flood. A refusal costs its caller nothing and
//! each audit event is a durable write (on PostgreSQL under the chain's
//! database-wide lock), so the vault bounds what it writes for them:
//!
//! - the first few identical refusals (same principal, action, outcome and
//!   customer) in a window are recorded one by one, as every call used to be;
//!   the rest are counted into one event, written when the window ends (or at
//!   shutdown), that says how many there were and since when;
//! - recording a refusal one by one spends a budget of its principal and one
//!   of its source address; refusals past either are counted without their
//!   customer, fields and purpose, so naming a victim customer in a flood of
//!   refused calls does not grow that customer's access history.
//!
//! The caller always gets its refusal unchanged: a consent or scope refusal
//! answered RESOURCE_EXHAUSTED would only invite retries. What is bounded is
//! the audit log's growth: per window, at most the budgets' worth of events
//! plus one counted event per kind of refusal. Counted refusals wait in
//! memory until their window ends, so a crash loses at most one window's
//! counts (never a call's answer: no refused call discloses anything).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::store::{AuditEntry, Counted};

use crate::vault::limits::{RefusalBudget, RefusalLimits};

/// Kinds of refusal counted at once, at most: past it, refusals are counted
/// as past the budget, so memory stays bounded whatever the limits say.
const MAX_TALLIES: usize = 100_000;
/// Source addresses whose budget is tracked at once; past it, buckets that
/// have refilled are forgotten, and a new address records nothing one by one
/// while none has.
const MAX_ADDRESSES: usize = 10_000;
/// Counted events kept for another try when writing them failed.
const MAX_UNWRITTEN: usize = 100_000;

/// What makes refusals identical.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct TallyKey {
    principal: String,
    action: String,
    outcome: String,
    customer_id: String,
}

impl TallyKey {
    fn of(refusal: &AuditEntry) -> TallyKey {
        TallyKey {
            principal: refusal.principal.clone(),
            action: refusal.action.clone(),
            outcome: refusal.outcome.clone(),
            customer_id: refusal.customer_id.clone(),
        }
    }
}

/// One window of identical refusals.
struct Tally {
    opened: Instant,
    /// Recorded one by one in this window.
    recorded: u32,
    /// Counted for the window's event.
    counted: u64,
    /// The first refusal counted: its time, request id, fields and purpose
    /// (fields and purpose cleared when a later one differed).
    first: Option<AuditEntry>,
    /// Whether refusals past a budget were counted here.
    past_budget: bool,
}

impl Tally {
    fn open(now: Instant) -> Tally {
        Tally {
            opened: now,
            recorded: 0,
            counted: 0,
            first: None,
            past_budget: false,
        }
    }

    fn count(&mut self, refusal: &AuditEntry) {
        self.counted += 1;
        match &mut self.first {
            None => {
                self.first = Some(AuditEntry {
                    source: None,
                    ..refusal.clone()
                })
            }
            Some(first) => {
                if first.fields != refusal.fields {
                    first.fields.clear();
                }
                if first.purpose != refusal.purpose {
                    first.purpose.clear();
                }
            }
        }
    }

    /// The event that stands for the refusals counted, if any.
    fn event(self, now_ms: i64) -> Option<AuditEntry> {
        let first = self.first?;
        let counted = Counted {
            count: self.counted,
            since_ms: first.at_ms,
        };
        Some(
            AuditEntry {
                at_ms: now_ms.max(first.at_ms),
                ..first
            }
            .counted(counted),
        )
    }
}

/// A token bucket of refusals that may still be recorded one by one.
struct Bucket {
    tokens: f64,
    refreshed: Instant,
}

impl Bucket {
    fn full(budget: RefusalBudget, now: Instant) -> Bucket {
        Bucket {
            tokens: budget.burst,
            refreshed: now,
        }
    }

    fn refill(&mut self, budget: RefusalBudget, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refreshed).as_secs_f64();
        self.tokens = (self.tokens + elapsed * budget.per_second).min(budget.burst);
        self.refreshed = now;
    }
}

#[derive(Default)]
struct State {
    tallies: HashMap<TallyKey, Tally>,
    principals: HashMap<String, Bucket>,
    addresses: HashMap<IpAddr, Bucket>,
    /// Counted events whose write failed, for the next try.
    unwritten: Vec<AuditEntry>,
}

impl State {
    /// Spends one refusal of the principal's budget and of its address's,
    /// if both have one.
    fn spend(&mut self, limits: &RefusalLimits, refusal: &AuditEntry, now: Instant) -> bool {
        let principal = self
            .principals
            .entry(refusal.principal.clone())
            .or_insert_with(|| Bucket::full(limits.per_principal, now));
        principal.refill(limits.per_principal, now);
        if principal.tokens < 1.0 {
            return false;
        }
        if let Some(source) = refusal.source {
            if !self.addresses.contains_key(&source) && self.addresses.len() >= MAX_ADDRESSES {
                self.addresses.retain(|_, bucket| {
                    bucket.refill(limits.per_address, now);
                    bucket.tokens < limits.per_address.burst
                });
                if self.addresses.len() >= MAX_ADDRESSES {
                    return false;
                }
            }
            let address = self
                .addresses
                .entry(source)
                .or_insert_with(|| Bucket::full(limits.per_address, now));
            address.refill(limits.per_address, now);
            if address.tokens < 1.0 {
                return false;
            }
            address.tokens -= 1.0;
        }
        principal.tokens -= 1.0;
        true
    }
}

/// Decides which refusals are recorded at once and counts the others.
pub(in crate::vault) struct RefusalGate {
    limits: RefusalLimits,
    state: Mutex<State>,
    /// Held while counted events are written, so that the last write at
    /// shutdown waits for one under way.
    pub(in crate::vault) writing: tokio::sync::Mutex<()>,
}

impl RefusalGate {
    pub fn new(limits: RefusalLimits) -> RefusalGate {
        RefusalGate {
            limits,
            state: Mutex::new(State::default()),
            writing: tokio::sync::Mutex::new(()),
        }
    }

    pub fn window(&self) -> std::time::Duration {
        self.limits.window
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Counters and buckets: consistent enough after any panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `refusal` is to be recorded now as an event of its own; if
    /// not, it has been counted into an event written when its window ends.
    pub fn admit(&self, refusal: &AuditEntry, now: Instant) -> bool {
        let key = TallyKey::of(refusal);
        let mut state = self.lock();
        if let Some(tally) = state.tallies.get_mut(&key) {
            if tally.recorded >= self.limits.recorded_per_window {
                tally.count(refusal);
                return false;
            }
        }
        if (state.tallies.len() < MAX_TALLIES || state.tallies.contains_key(&key))
            && state.spend(&self.limits, refusal, now)
        {
            state
                .tallies
                .entry(key)
                .or_insert_with(|| Tally::open(now))
                .recorded += 1;
            return true;
        }
        // Past a budget: counted without the customer, fields and purpose,
        // so that these tallies are bounded by principals, actions and codes.
        let key = TallyKey {
            customer_id: String::new(),
            ..key
        };
        let anonymous = AuditEntry {
            customer_id: String::new(),
            fields: Vec::new(),
            purpose: String::new(),
            ..refusal.clone()
        };
        let tally = state.tallies.entry(key).or_insert_with(|| Tally::open(now));
        tally.past_budget = true;
        tally.count(&anonymous);
        false
    }

    /// Takes the counted events of the windows that have ended (of every
    /// window when `all`), oldest first, with any whose write failed before.
    pub fn take_due(&self, now: Instant, now_ms: i64, all: bool) -> Vec<AuditEntry> {
        let window = self.limits.window;
        let mut state = self.lock();
        let mut due = std::mem::take(&mut state.unwritten);
        let mut flooded = Vec::new();
        state.tallies.retain(|key, tally| {
            if !all && now.saturating_duration_since(tally.opened) < window {
                return true;
            }
            let tally = std::mem::replace(tally, Tally::open(now));
            if tally.past_budget {
                flooded.push((key.principal.clone(), key.action.clone(), tally.counted));
            }
            due.extend(tally.event(now_ms));
            false
        });
        let per_address = self.limits.per_address;
        state.addresses.retain(|_, bucket| {
            bucket.refill(per_address, now);
            bucket.tokens < per_address.burst
        });
        drop(state);
        for (principal, action, count) in flooded {
            tracing::warn!(
                security_event = "refusal_flood",
                %principal,
                %action,
                count,
                "refused calls past the principal's or its address's budget were counted, not recorded one by one"
            );
        }
        due.sort_by_key(|event| event.at_ms);
        due
    }

    /// Keeps counted events whose write failed for the next try; returns how
    /// many of them were dropped because too many are waiting already.
    pub fn put_back(&self, events: Vec<AuditEntry>) -> usize {
        let mut state = self.lock();
        let room = MAX_UNWRITTEN.saturating_sub(state.unwritten.len());
        let dropped = events.len().saturating_sub(room);
        state.unwritten.extend(events.into_iter().take(room));
        dropped
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::AuditRecord;
    use crate::vault::Action;

    const WINDOW: Duration = Duration::from_secs(60);

    fn limits() -> RefusalLimits {
        RefusalLimits {
            recorded_per_window: 3,
            window: WINDOW,
            per_principal: RefusalBudget {
                per_second: 1.0,
                burst: 10.0,
            },
            per_address: RefusalBudget {
                per_second: 1.0,
                burst: 15.0,
            },
        }
    }

    fn refusal(principal: &str, customer: &str, at_ms: i64) -> AuditEntry {
        AuditEntry {
            at_ms,
            principal: principal.into(),
            action: Action::GetFields.name().into(),
            customer_id: customer.into(),
            fields: vec!["email".into()],
            purpose: "billing".into(),
            outcome: "PERMISSION_DENIED".into(),
            request_id: format!("req-{at_ms}"),
            source: Some("192.0.2.7".parse().unwrap()),
        }
    }

    fn counted(event: &AuditEntry) -> Option<Counted> {
        AuditRecord::chain(event.clone(), 0, crate::store::GENESIS_HASH).counted()
    }

    #[test]
    fn identical_refusals_past_the_first_few_are_counted_into_one_event() {
        let gate = RefusalGate::new(limits());
        let start = Instant::now();
        let admitted: Vec<bool> = (0..1000)
            .map(|i| gate.admit(&refusal("nobody", "cust-1", 1000 + i), start))
            .collect();
        assert_eq!(admitted.iter().filter(|&&now| now).count(), 3);
        assert!(admitted[..3].iter().all(|&now| now));

        // Nothing is written before the window ends.
        assert!(gate.take_due(start + WINDOW / 2, 5000, false).is_empty());
        let due = gate.take_due(start + WINDOW, 90_000, false);
        assert_eq!(due.len(), 1, "{due:?}");
        let event = &due[0];
        assert_eq!(
            counted(event),
            Some(Counted {
                count: 997,
                since_ms: 1003
            })
        );
        assert_eq!(event.at_ms, 90_000);
        assert_eq!(event.customer_id, "cust-1");
        assert_eq!(event.fields, ["email"]);
        assert_eq!(event.purpose, "billing");
        assert_eq!(event.request_id, "req-1003");
        assert_eq!(event.source, None);

        // A new window records its first few again.
        let later = start + WINDOW;
        assert!(gate.admit(&refusal("nobody", "cust-1", 91_000), later));
        assert!(gate.take_due(later, 91_000, true).is_empty());
    }

    #[test]
    fn refusals_past_the_principals_budget_are_counted_without_their_customer() {
        let gate = RefusalGate::new(limits());
        let start = Instant::now();
        let recorded = (0..500)
            .filter(|&i| gate.admit(&refusal("nobody", &format!("cust-{i}"), i), start))
            .count();
        assert_eq!(recorded, 10);
        let due = gate.take_due(start, 1000, true);
        assert_eq!(due.len(), 1, "{due:?}");
        assert_eq!(due[0].customer_id, "");
        assert!(due[0].fields.is_empty() && due[0].purpose.is_empty());
        assert_eq!(counted(&due[0]).unwrap().count, 490);

        // The budget refills with time.
        let later = start + Duration::from_secs(2);
        assert!(gate.admit(&refusal("nobody", "cust-x", 3000), later));
        assert!(gate.admit(&refusal("nobody", "cust-y", 3000), later));
        assert!(!gate.admit(&refusal("nobody", "cust-z", 3000), later));
    }

    #[test]
    fn principals_at_one_address_share_its_budget() {
        let gate = RefusalGate::new(limits());
        let start = Instant::now();
        let recorded = ["a", "b", "c"]
            .iter()
            .flat_map(|principal| (0..10).map(move |i| (principal, i)))
            .filter(|(principal, i)| {
                gate.admit(&refusal(principal, &format!("cust-{i}"), 0), start)
            })
            .count();
        assert_eq!(recorded, 15);
        // Another address has a budget of its own.
        let elsewhere = AuditEntry {
            source: Some("198.51.100.1".parse().unwrap()),
            ..refusal("d", "cust-1", 0)
        };
        assert!(gate.admit(&elsewhere, start));
    }

    #[test]
    fn counted_refusals_keep_fields_and_purpose_only_when_they_agree() {
        let gate = RefusalGate::new(limits());
        let now = Instant::now();
        for i in 0..5 {
            gate.admit(&refusal("nobody", "cust-1", i), now);
        }
        let mut other_fields = refusal("nobody", "cust-1", 9);
        other_fields.fields = vec!["ssn".into()];
        gate.admit(&other_fields, now);
        let due = gate.take_due(now, 10, true);
        assert_eq!(due.len(), 1);
        assert!(due[0].fields.is_empty(), "{due:?}");
        assert_eq!(due[0].purpose, "billing");
        assert_eq!(counted(&due[0]).unwrap().count, 3);
    }

    #[test]
    fn events_whose_write_failed_are_taken_again() {
        let gate = RefusalGate::new(limits());
        let now = Instant::now();
        for i in 0..5 {
            gate.admit(&refusal("nobody", "cust-1", i), now);
        }
        let due = gate.take_due(now, 10, true);
        assert_eq!(gate.put_back(due.clone()), 0);
        assert_eq!(gate.take_due(now, 20, false), due);
        assert!(gate.take_due(now, 30, true).is_empty());
    }
}
