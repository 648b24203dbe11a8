//! The engine the suite runs on, and databases of a test's own on PostgreSQL.

use pii_vault::app;

/// The engine the suite runs on: sled, or PostgreSQL with
/// `PII_VAULT_TEST_STORE=postgres` (`.ci/run` runs the suite both ways).
pub fn on_postgres() -> bool {
    std::env::var("PII_VAULT_TEST_STORE").is_ok_and(|store| store == "postgres")
}

/// For tests that look inside sled's files: false (with the reason printed)
/// when the suite runs on PostgreSQL.
pub fn sled_only(test: &str) -> bool {
    if on_postgres() {
        eprintln!("{test}: skipped on PostgreSQL: it inspects sled's files directly");
        return false;
    }
    true
}

/// Where tests reach PostgreSQL to create their databases.
pub fn postgres_admin_url() -> String {
    std::env::var("PII_VAULT_TEST_POSTGRES")
        .unwrap_or_else(|_| "host=127.0.0.1 user=postgres dbname=postgres".to_owned())
}

/// The local server may offer TLS with a certificate nothing here can verify
/// (Debian's self-signed one): the vault, which always verifies, is told to
/// speak plain unless the admin URL says otherwise.
fn plain_unless_asked() -> &'static str {
    if postgres_admin_url().contains("sslmode") {
        ""
    } else {
        " sslmode=disable"
    }
}

/// A client of the PostgreSQL at `url` (in clear), its connection driven by
/// a task of the test's runtime.
pub async fn postgres_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// A database of one test's own, dropped (with its connections) when dropped.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    /// `serve` arguments that put a vault process on this database (in clear
    /// on purpose, as `storage` does).
    pub fn serve_args(&self) -> [&str; 5] {
        [
            "--store",
            "postgres",
            "--database-url",
            &self.url,
            "--database-allow-plaintext",
        ]
    }

    /// A fresh database for a test of PostgreSQL itself. Such a test is
    /// `#[ignore]`d, so the sled pass reports it as ignored, not passed; the
    /// PostgreSQL pass (`PII_VAULT_TEST_STORE=postgres`, `--include-ignored`)
    /// runs it, and there an unreachable PostgreSQL fails it, as does running
    /// it without the variable.
    pub async fn required() -> TestDatabase {
        assert!(
            on_postgres(),
            "a PostgreSQL test: run it with PII_VAULT_TEST_STORE=postgres"
        );
        TestDatabase::create()
            .await
            .expect("PII_VAULT_TEST_STORE=postgres is set")
    }

    /// A fresh database in the PostgreSQL pass (an unreachable PostgreSQL
    /// fails the test there); `None` in the sled pass, for tests that run on
    /// both and add a PostgreSQL part.
    pub async fn create() -> Option<TestDatabase> {
        if !on_postgres() {
            return None;
        }
        let admin =
            match tokio_postgres::connect(&postgres_admin_url(), tokio_postgres::NoTls).await {
                Ok((client, connection)) => {
                    tokio::spawn(connection);
                    client
                }
                Err(error) => panic!(
                "PII_VAULT_TEST_STORE=postgres, but PostgreSQL is not reachable at {:?}: {error}",
                postgres_admin_url()
            ),
            };
        let name = format!(
            "pv_test_{}",
            pii_vault::vault::tokens::random_id("db").trim_start_matches("db_")
        );
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let url = format!(
            "{} dbname={name}{}",
            postgres_admin_url().replace("dbname=postgres", ""),
            plain_unless_asked(),
        );
        Some(TestDatabase { name, url })
    }

    /// A client of this database, as the test's own session.
    pub async fn client(&self) -> tokio_postgres::Client {
        postgres_client(&self.url).await
    }

    pub fn storage(&self) -> app::StorageBackend {
        app::StorageBackend::Postgres {
            url: self.url.clone(),
            pool_size: 8,
            ca_file: None,
            // Plain on purpose (see `plain_unless_asked`); TLS has tests of its own.
            allow_plaintext: true,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside any runtime: a thread with its own does the async work.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime
                .block_on(async move {
                    let (client, connection) =
                        tokio_postgres::connect(&postgres_admin_url(), tokio_postgres::NoTls)
                            .await?;
                    tokio::spawn(connection);
                    client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await
                })
                .map_err(std::io::Error::other)
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

/// A plain-text `pg_dump` of `database`: what any backup of it holds.
pub fn pg_dump(database: &TestDatabase) -> String {
    let output = std::process::Command::new("pg_dump")
        .arg("--dbname")
        .arg(&database.url)
        .output()
        .expect("pg_dump runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A new database holding what `dump` (plain `pg_dump` output) held.
pub async fn restore_dump(dump: &str) -> TestDatabase {
    let restored = TestDatabase::create().await.unwrap();
    let dump_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(dump_file.path(), dump).unwrap();
    let loaded = std::process::Command::new("psql")
        .args([
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
            "--dbname",
            &restored.url,
            "-f",
        ])
        .arg(dump_file.path())
        .output()
        .unwrap();
    assert!(
        loaded.status.success(),
        "{}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    restored
}
