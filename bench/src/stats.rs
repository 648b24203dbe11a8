//! What one measured run counts: requests, values, errors by status code, and
//! every request's latency (kept exactly and sorted for percentiles; a 60 s run
//! at 100k requests/s holds 48 MB).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

/// The outcome of one request.
pub struct Outcome {
    /// Values stored or returned (fields, tokens); 0 when the call failed.
    pub values: u32,
    /// Items of a batch refused on their own (the call itself succeeded).
    pub item_errors: u32,
    /// The status code name, when the call failed.
    pub error: Option<String>,
}

impl Outcome {
    pub fn ok(values: usize) -> Outcome {
        Outcome {
            values: u32::try_from(values).unwrap_or(u32::MAX),
            item_errors: 0,
            error: None,
        }
    }

    pub fn failed(code: impl Into<String>) -> Outcome {
        Outcome {
            values: 0,
            item_errors: 0,
            error: Some(code.into()),
        }
    }
}

/// One worker's tally; merged at the end of a run.
#[derive(Default)]
pub struct Tally {
    pub requests: u64,
    pub values: u64,
    pub errors: u64,
    pub item_errors: u64,
    pub error_codes: BTreeMap<String, u64>,
    /// Nanoseconds, successful and failed requests alike.
    pub latencies: Vec<u64>,
}

impl Tally {
    pub fn record(&mut self, outcome: Outcome, latency: Duration) {
        self.requests += 1;
        self.values += u64::from(outcome.values);
        self.item_errors += u64::from(outcome.item_errors);
        if let Some(code) = outcome.error {
            self.errors += 1;
            *self.error_codes.entry(code).or_default() += 1;
        }
        self.latencies
            .push(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
    }

    pub fn merge(&mut self, other: Tally) {
        self.requests += other.requests;
        self.values += other.values;
        self.errors += other.errors;
        self.item_errors += other.item_errors;
        for (code, count) in other.error_codes {
            *self.error_codes.entry(code).or_default() += count;
        }
        self.latencies.extend(other.latencies);
    }
}

/// A finished run, ready to print.
#[derive(Clone, Debug)]
pub struct Summary {
    pub target: String,
    pub op: String,
    pub batch: usize,
    /// "max" (closed loop) or the offered rate in requests/s.
    pub load: String,
    pub seconds: f64,
    pub requests: u64,
    pub values: u64,
    pub errors: u64,
    pub item_errors: u64,
    pub error_codes: BTreeMap<String, u64>,
    pub requests_per_sec: f64,
    pub values_per_sec: f64,
    /// Milliseconds.
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Summary {
    pub fn new(
        target: &str,
        op: &str,
        batch: usize,
        load: String,
        elapsed: Duration,
        mut tally: Tally,
    ) -> Summary {
        tally.latencies.sort_unstable();
        let seconds = elapsed.as_secs_f64().max(1e-9);
        let ms = |ns: u64| ns as f64 / 1e6;
        let mean = if tally.latencies.is_empty() {
            0.0
        } else {
            ms(tally.latencies.iter().sum::<u64>()) / tally.latencies.len() as f64
        };
        Summary {
            target: target.to_owned(),
            op: op.to_owned(),
            batch,
            load,
            seconds,
            requests: tally.requests,
            values: tally.values,
            errors: tally.errors,
            item_errors: tally.item_errors,
            error_codes: tally.error_codes,
            requests_per_sec: tally.requests as f64 / seconds,
            values_per_sec: tally.values as f64 / seconds,
            p50: ms(percentile(&tally.latencies, 50.0)),
            p90: ms(percentile(&tally.latencies, 90.0)),
            p99: ms(percentile(&tally.latencies, 99.0)),
            p999: ms(percentile(&tally.latencies, 99.9)),
            max: ms(tally.latencies.last().copied().unwrap_or(0)),
            mean,
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "target": self.target,
            "op": self.op,
            "batch": self.batch,
            "load": self.load,
            "seconds": round(self.seconds, 3),
            "requests": self.requests,
            "values": self.values,
            "requests_per_sec": round(self.requests_per_sec, 1),
            "values_per_sec": round(self.values_per_sec, 1),
            "latency_ms": {
                "p50": round(self.p50, 3),
                "p90": round(self.p90, 3),
                "p99": round(self.p99, 3),
                "p99_9": round(self.p999, 3),
                "max": round(self.max, 3),
                "mean": round(self.mean, 3),
            },
            "errors": self.errors,
            "item_errors": self.item_errors,
            "error_codes": self.error_codes,
        })
    }

    pub fn header() -> String {
        format!(
            "{:<9} {:<11} {:>5} {:>7} {:>10} {:>11} {:>8} {:>8} {:>8} {:>8} {:>7}",
            "target",
            "op",
            "batch",
            "load",
            "req/s",
            "values/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9 ms",
            "errors"
        )
    }

    pub fn line(&self) -> String {
        format!(
            "{:<9} {:<11} {:>5} {:>7} {:>10.0} {:>11.0} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>7}",
            self.target,
            self.op,
            self.batch,
            self.load,
            self.requests_per_sec,
            self.values_per_sec,
            self.p50,
            self.p90,
            self.p99,
            self.p999,
            self.errors + self.item_errors
        )
    }
}

/// Nearest-rank percentile of sorted values; 0 when there are none.
pub fn percentile(sorted: &[u64], pct: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    // The epsilon keeps 99.9% of 1000 at rank 999 despite binary fractions.
    let rank = ((pct / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&values, 50.0), 500);
        assert_eq!(percentile(&values, 99.0), 990);
        assert_eq!(percentile(&values, 99.9), 999);
        assert_eq!(percentile(&values, 100.0), 1000);
        assert_eq!(percentile(&[7], 99.9), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn a_summary_counts_rates_and_errors() {
        let mut tally = Tally::default();
        tally.record(Outcome::ok(3), Duration::from_millis(1));
        tally.record(Outcome::failed("Unavailable"), Duration::from_millis(3));
        let summary = Summary::new(
            "vault",
            "get",
            1,
            "max".into(),
            Duration::from_secs(2),
            tally,
        );
        assert_eq!(summary.requests, 2);
        assert_eq!(summary.values, 3);
        assert_eq!(summary.errors, 1);
        assert!((summary.requests_per_sec - 1.0).abs() < 1e-9);
        assert!((summary.p99 - 3.0).abs() < 1e-9);
        assert_eq!(summary.error_codes["Unavailable"], 1);
    }
}
