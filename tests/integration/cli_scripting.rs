//! The CLI in scripts: exit codes by class of failure, `--json` errors,
//! `--timeout` and confirmations of irreversible commands. The real binary
//! against a real vault. (The load generator's refusal of a vault with other
//! data is tested with it, in bench/tests/.)

use crate::common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pii_vault_testkit::cli::{assert_exit, describe, json_of};

const EXIT_USAGE: i32 = 2;
const EXIT_INTEGRITY: i32 = 65;
const EXIT_UNAVAILABLE: i32 = 69;
const EXIT_REFUSED: i32 = 77;

/// Runs the binary with stdin not a terminal (as in a script).
fn run(addr: &str, api_key: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pii-vault"));
    command
        .args(args)
        .env("PII_VAULT_ADDR", addr)
        .env_remove("PII_VAULT_API_KEY")
        .stdin(Stdio::null());
    if let Some(key) = api_key {
        command.env("PII_VAULT_API_KEY", key);
    }
    command.output().unwrap()
}

async fn pii_vault(addr: &str, api_key: Option<&str>, args: &[&str]) -> Output {
    let (addr, api_key) = (addr.to_owned(), api_key.map(str::to_owned));
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&addr, api_key.as_deref(), &args)
    })
    .await
    .unwrap()
}

fn addr_of(vault: &common::TestVault) -> String {
    format!("http://{}", vault.addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_tell_refused_from_unavailable_from_usage() {
    let vault = common::spawn_vault().await;
    let addr = addr_of(&vault);

    let ok = pii_vault(&addr, Some(common::ADMIN_KEY), &["purposes"]).await;
    assert_exit(&ok, 0);

    // The vault answered and refused: a bad value, a wrong key, an unknown customer.
    let invalid = pii_vault(
        &addr,
        Some(common::ADMIN_KEY),
        &["put", "s-1", "ssn:ssn=000-12-3456", "--purpose", "billing"],
    )
    .await;
    assert_exit(&invalid, EXIT_REFUSED);
    let unauthenticated = pii_vault(
        &addr,
        Some("wrong"),
        &["get", "s-1", "--purpose", "billing"],
    )
    .await;
    assert_exit(&unauthenticated, EXIT_REFUSED);
    assert!(String::from_utf8_lossy(&unauthenticated.stderr).contains("Unauthenticated"));

    // Nothing listens there: unavailable.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let unreachable = pii_vault(&closed, Some(common::ADMIN_KEY), &["purposes"]).await;
    assert_exit(&unreachable, EXIT_UNAVAILABLE);

    // No API key at all: the command line cannot be run as given.
    let no_key = pii_vault(&addr, None, &["purposes"]).await;
    assert_exit(&no_key, EXIT_USAGE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_json_an_error_is_one_document_on_stdout() {
    let vault = common::spawn_vault().await;
    let addr = addr_of(&vault);

    let refused = pii_vault(
        &addr,
        Some("wrong"),
        &["get", "s-2", "--purpose", "billing", "--json"],
    )
    .await;
    assert_exit(&refused, EXIT_REFUSED);
    let error = json_of(&refused);
    assert_eq!(error["error"]["code"], "UNAUTHENTICATED", "{error}");
    assert_eq!(error["error"]["reason"], "API_KEY_INVALID", "{error}");
    assert!(error["error"]["message"].is_string(), "{error}");

    let invalid = pii_vault(
        &addr,
        Some(common::ADMIN_KEY),
        &[
            "put",
            "s-2",
            "ssn:ssn=000-12-3456",
            "--purpose",
            "billing",
            "--json",
        ],
    )
    .await;
    assert_exit(&invalid, EXIT_REFUSED);
    let error = json_of(&invalid);
    assert_eq!(error["error"]["code"], "INVALID_ARGUMENT", "{error}");
    assert!(!error.to_string().contains("000-12-3456"), "{error}");

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let unreachable = pii_vault(&closed, Some(common::ADMIN_KEY), &["purposes", "--json"]).await;
    assert_exit(&unreachable, EXIT_UNAVAILABLE);
    assert_eq!(json_of(&unreachable)["error"]["code"], "UNAVAILABLE");
    // No answer from the vault, so no reason of the vault's.
    assert!(json_of(&unreachable)["error"].get("reason").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_gives_up_on_a_vault_that_does_not_answer() {
    // A listener that accepts connections and never answers on them.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = format!("http://{}", listener.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            open.push(socket);
        }
    });

    let started = Instant::now();
    let output = pii_vault(
        &silent,
        Some(common::ADMIN_KEY),
        &["purposes", "--timeout", "1s", "--json"],
    )
    .await;
    let took = started.elapsed();
    held.abort();
    assert_exit(&output, EXIT_UNAVAILABLE);
    assert_eq!(
        json_of(&output)["error"]["code"],
        "DEADLINE_EXCEEDED",
        "{}",
        describe(&output)
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn irreversible_commands_need_yes_when_stdin_is_not_a_terminal() {
    let vault = common::spawn_vault().await;
    let addr = addr_of(&vault);
    let key = Some(common::ADMIN_KEY);
    let put = pii_vault(
        &addr,
        key,
        &[
            "put",
            "s-3",
            "email:email=s3@example.com",
            "--purpose",
            "billing",
        ],
    )
    .await;
    assert_exit(&put, 0);

    let unconfirmed = pii_vault(&addr, key, &["delete-customer", "s-3", "--json"]).await;
    assert_exit(&unconfirmed, EXIT_USAGE);
    assert_eq!(
        json_of(&unconfirmed)["error"]["code"],
        "CONFIRMATION_REQUIRED"
    );
    assert!(String::from_utf8_lossy(&unconfirmed.stderr).contains("--yes"));
    let still_there = pii_vault(&addr, key, &["get", "s-3", "--purpose", "billing"]).await;
    assert_exit(&still_there, 0);
    assert!(String::from_utf8_lossy(&still_there.stdout).contains("s3@example.com"));

    let erased = pii_vault(&addr, key, &["delete-customer", "s-3", "--yes", "--json"]).await;
    assert_exit(&erased, 0);
    assert!(json_of(&erased)["receipt_id"].is_string());

    let retire = pii_vault(&addr, key, &["keys", "rotate-master", "--retire"]).await;
    assert_exit(&retire, EXIT_USAGE);
    let status = json_of(&pii_vault(&addr, key, &["keys", "status", "--json"]).await);
    assert_eq!(status["active_master_version"], 1, "{status}");
    let retired = pii_vault(&addr, key, &["keys", "rotate-master", "--retire", "--yes"]).await;
    assert_exit(&retired, 0);
    // Without --retire nothing is destroyed: no confirmation.
    let rotated = pii_vault(&addr, key, &["keys", "rotate-master"]).await;
    assert_exit(&rotated, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_of_a_tampered_log_exits_with_the_integrity_code() {
    if !common::sled_only("audit_verify_of_a_tampered_log_exits_with_the_integrity_code") {
        return;
    }
    let mut vault = common::spawn_vault().await;
    let key = Some(common::ADMIN_KEY);
    for customer in ["t-1", "t-2", "t-3"] {
        let put = pii_vault(
            &addr_of(&vault),
            key,
            &[
                "put",
                customer,
                "email:email=t@example.com",
                "--purpose",
                "billing",
            ],
        )
        .await;
        assert_exit(&put, 0);
    }
    let intact = pii_vault(&addr_of(&vault), key, &["audit", "verify", "--json"]).await;
    assert_exit(&intact, 0);

    // Remove event 2 from the chain (key: b"a" + big-endian seq).
    vault.stop().await;
    {
        let db = common::open_sled_when_released(&vault.paths.data_dir);
        let mut event = b"a".to_vec();
        event.extend_from_slice(&2u64.to_be_bytes());
        db.remove(event).unwrap().unwrap();
        db.flush().unwrap();
    }
    vault.start_again().await;

    let broken = pii_vault(&addr_of(&vault), key, &["audit", "verify", "--json"]).await;
    assert_exit(&broken, EXIT_INTEGRITY);
    // The verification result is the one document on stdout.
    assert_eq!(json_of(&broken)["intact"], false, "{}", describe(&broken));
}

/// At a terminal (a pseudo-terminal from util-linux `script`) the command asks,
/// and goes on only on "yes". Skipped where `script` is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_a_terminal_an_erasure_asks_and_needs_yes() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` to give the command a terminal");
        return;
    }
    let vault = common::spawn_vault().await;
    let addr = addr_of(&vault);
    let key = Some(common::ADMIN_KEY);
    let put = pii_vault(
        &addr,
        key,
        &[
            "put",
            "s-4",
            "email:email=s4@example.com",
            "--purpose",
            "billing",
        ],
    )
    .await;
    assert_exit(&put, 0);
    let at_terminal = |answer: &'static str| {
        let addr = addr.clone();
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let command = format!("{} delete-customer s-4", env!("CARGO_BIN_EXE_pii-vault"));
            let mut child = Command::new("script")
                .args(["-qefc", &command, "/dev/null"])
                .env("PII_VAULT_ADDR", addr)
                .env("PII_VAULT_API_KEY", common::ADMIN_KEY)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(500));
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(answer.as_bytes()).unwrap();
            drop(stdin);
            child.wait_with_output().unwrap()
        })
    };

    let declined = at_terminal("no\n").await.unwrap();
    assert_exit(&declined, EXIT_USAGE);
    assert!(String::from_utf8_lossy(&declined.stdout).contains("cannot be undone"));
    let still_there = pii_vault(&addr, key, &["get", "s-4", "--purpose", "billing"]).await;
    assert_exit(&still_there, 0);

    let confirmed = at_terminal("yes\n").await.unwrap();
    assert_exit(&confirmed, 0);
    assert!(String::from_utf8_lossy(&confirmed.stdout).contains("erased customer s-4"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_with_json_answers_one_document() {
    let vault = common::spawn_vault().await;
    let addr = addr_of(&vault);
    let serving = pii_vault(&addr, None, &["health", "--json"]).await;
    assert_exit(&serving, 0);
    assert_eq!(
        json_of(&serving),
        serde_json::json!({ "service": "", "status": "SERVING" })
    );
    // A service the vault does not know: the health service refuses it.
    let unknown = pii_vault(&addr, None, &["health", "--json", "--service", "nope"]).await;
    assert_exit(&unknown, EXIT_REFUSED);
    assert!(
        json_of(&unknown)["error"]["code"].is_string(),
        "{}",
        describe(&unknown)
    );
    // Nothing listening: an error document, and the unavailable class.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let gone = pii_vault(&closed, None, &["health", "--json"]).await;
    assert_exit(&gone, EXIT_UNAVAILABLE);
    assert!(json_of(&gone)["error"].is_object(), "{}", describe(&gone));
}

/// docs/cli.md: `tokenize --request-id` makes a retry safe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokenize_with_a_request_id_retries_safely() {
    let vault = common::spawn_vault().await;
    let addr = addr_of(&vault);
    let tokenize = |request_id: &'static str, value: &'static str| {
        let addr = addr.clone();
        async move {
            let mut args = vec![
                "tokenize",
                "cust-1",
                value,
                "--purpose",
                "billing",
                "--json",
            ];
            if !request_id.is_empty() {
                args.extend(["--request-id", request_id]);
            }
            pii_vault(&addr, Some(common::ADMIN_KEY), &args).await
        }
    };
    let tokens = |output: &Output| -> Vec<String> {
        assert_exit(output, 0);
        serde_json::from_value(json_of(output)["tokens"].clone()).unwrap()
    };
    const FIRST: &str = "0b6f3a52-8c1d-4f7e-9a2b-1c3d5e7f9a01";
    const SECOND: &str = "0b6f3a52-8c1d-4f7e-9a2b-1c3d5e7f9a02";

    let first = tokens(&tokenize(FIRST, "generic=v").await);
    assert_eq!(first.len(), 1);
    // A retry with the same id gets the same (random) token.
    assert_eq!(tokens(&tokenize(FIRST, "generic=v").await), first);
    // Another id, or none, is another request: a new token.
    let second = tokens(&tokenize(SECOND, "generic=v").await);
    assert_ne!(second, first);
    let without = tokens(&tokenize("", "generic=v").await);
    assert_ne!(without, first);
    assert_ne!(without, second);
    // The same id with other values is refused, and the reason says why.
    let reused = tokenize(FIRST, "generic=w").await;
    assert_exit(&reused, EXIT_REFUSED);
    let error = &json_of(&reused)["error"];
    assert_eq!(error["code"], "ALREADY_EXISTS", "{}", describe(&reused));
    assert_eq!(
        error["reason"],
        "REQUEST_ID_REUSED",
        "{}",
        describe(&reused)
    );
}
