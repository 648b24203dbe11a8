//! `pii-vault bench` works: a short run of the real binary against a real
//! vault reports JSON with throughput, latency percentiles and errors. Only a
//! functional check: no figure is asserted (benchmarks are not timed tests).

use crate::common;

use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_drives_a_vault_and_reports_json() {
    let vault = common::spawn_vault().await;
    let addr = format!("http://{}", vault.addr);
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_pii-vault"))
            .args([
                "bench",
                "--op",
                "mixed,health",
                "--customers",
                "20",
                "--batch",
                "5",
                "--connections",
                "1",
                "--concurrency",
                "4",
                "--duration",
                "1s",
                "--warmup",
                "100ms",
                "--json",
            ])
            .env("PII_VAULT_ADDR", addr)
            .env("PII_VAULT_API_KEY", common::ADMIN_KEY)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();

    assert_eq!(report["dataset"]["customers"], 20);
    assert_eq!(report["dataset"]["tokens"], 20 * 10);
    assert!(report["dataset"]["populated_in_s"].is_number(), "{report}");
    assert_eq!(report["config"]["in_flight"], 4);

    let runs = report["runs"].as_array().unwrap();
    let find = |target: &str, op: &str| {
        runs.iter()
            .find(|r| r["target"] == target && r["op"] == op)
            .unwrap_or_else(|| panic!("no {target} {op} run in {report}"))
    };
    for run in [find("health", "check"), find("vault", "mixed")] {
        assert!(run["requests"].as_u64().unwrap() > 0, "{run}");
        assert!(run["requests_per_sec"].as_f64().unwrap() > 0.0, "{run}");
        assert!(run["values_per_sec"].as_f64().unwrap() > 0.0, "{run}");
        assert_eq!(run["errors"], 0, "{run}");
        assert_eq!(run["item_errors"], 0, "{run}");
        let latency = &run["latency_ms"];
        let p50 = latency["p50"].as_f64().unwrap();
        let p90 = latency["p90"].as_f64().unwrap();
        let p99 = latency["p99"].as_f64().unwrap();
        let p999 = latency["p99_9"].as_f64().unwrap();
        assert!(
            0.0 < p50 && p50 <= p90 && p90 <= p99 && p99 <= p999,
            "{run}"
        );
    }
    assert_eq!(find("vault", "mixed")["batch"], 5);
}
