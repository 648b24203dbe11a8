//! The load generator against a real vault (in process, on 127.0.0.1:0, with
//! a temporary data directory): its JSON report has throughput, latency
//! percentiles and errors, and it refuses a vault holding other data. Only
//! functional checks: no figure is asserted (benchmarks are not timed tests).
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output, Stdio};

use pii_vault::app::VaultOptions;
use pii_vault::pb::{self, vault_service_client::VaultServiceClient};
use pii_vault::policy::{api_key_sha256_hex, dev_policy_toml};
use pii_vault::server::RunningServer;
use pii_vault_testkit::cli::{assert_exit, json_of};
use pii_vault_testkit::vault::{prepare_dir, start};
use tempfile::TempDir;
use tonic::transport::Channel;

/// The API key of the one principal, which may do everything.
const KEY: &str = "pv_bench_test_key";

struct Vault {
    addr: String,
    server: RunningServer,
    _dir: TempDir,
}

async fn spawn_vault() -> Vault {
    let dir = tempfile::tempdir().unwrap();
    let paths = prepare_dir(dir.path(), &dev_policy_toml(&api_key_sha256_hex(KEY)));
    let server = start(&paths, &VaultOptions::default()).await;
    Vault {
        addr: format!("http://{}", server.local_addr),
        server,
        _dir: dir,
    }
}

/// `pii-vault-bench` with `args` against the vault at `addr`, off the runtime.
async fn bench(addr: &str, args: &[&str]) -> Output {
    let addr = addr.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_pii-vault-bench"))
            .args(&args)
            .env("PII_VAULT_ADDR", addr)
            .env("PII_VAULT_API_KEY", KEY)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

async fn client(vault: &Vault) -> VaultServiceClient<Channel> {
    VaultServiceClient::connect(vault.addr.clone())
        .await
        .unwrap()
}

fn authorized<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {KEY}").parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_drives_a_vault_and_reports_json() {
    let vault = spawn_vault().await;
    let output = bench(
        &vault.addr,
        &[
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
        ],
    )
    .await;
    assert_exit(&output, 0);
    let report = json_of(&output);

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
    vault.server.shutdown().await.unwrap();
}

/// Exit code 2 (usage) for a refused run, as in docs/cli.md.
const EXIT_USAGE: i32 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_refuses_a_vault_that_holds_other_data_unless_allowed() {
    let vault = spawn_vault().await;
    let mut vault_client = client(&vault).await;
    vault_client
        .put_fields(authorized(pb::PutFieldsRequest {
            customer_id: "real-1".into(),
            fields: vec![pb::Field {
                name: "email".into(),
                kind: pb::FieldKind::Email.into(),
                value: "r1@example.com".into(),
            }],
            purpose: "billing".into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    let run = [
        "--op",
        "get",
        "--customers",
        "5",
        "--connections",
        "1",
        "--concurrency",
        "1",
        "--duration",
        "200ms",
        "--warmup",
        "0s",
        "--json",
    ];

    let refused = bench(&vault.addr, &run).await;
    assert_exit(&refused, EXIT_USAGE);
    assert_eq!(json_of(&refused)["error"]["code"], "VAULT_NOT_EMPTY");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--allow-existing-data"));
    let untouched = vault_client
        .get_fields(authorized(pb::GetFieldsRequest {
            customer_id: "bench-c000000000".into(),
            purpose: "billing".into(),
            ..Default::default()
        }))
        .await;
    assert_eq!(
        untouched.unwrap_err().code(),
        tonic::Code::NotFound,
        "the refused run wrote to the vault"
    );

    let mut allowed = run.to_vec();
    allowed.push("--allow-existing-data");
    let ran = bench(&vault.addr, &allowed).await;
    assert_exit(&ran, 0);
    assert_eq!(json_of(&ran)["dataset"]["customers"], 5);
    vault.server.shutdown().await.unwrap();
}

/// Not a refusal: bench runs again on the data set it populated itself, also
/// with `--populate always` (a guard for the check above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_runs_again_on_its_own_data_set() {
    let vault = spawn_vault().await;
    let populate = [
        "--customers",
        "5",
        "--connections",
        "1",
        "--concurrency",
        "1",
        "--populate-only",
        "--json",
    ];
    assert_exit(&bench(&vault.addr, &populate).await, 0);
    assert_exit(&bench(&vault.addr, &populate).await, 0);
    let mut again = populate.to_vec();
    again.extend(["--populate", "always"]);
    assert_exit(&bench(&vault.addr, &again).await, 0);
    vault.server.shutdown().await.unwrap();
}
