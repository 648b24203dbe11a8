//! A throwaway OpenBao server for the Transit root of trust's tests: `bao
//! server -dev` (in memory, unsealed, a root token of our choosing) on a free
//! local port, with the Transit engine enabled at `transit/`. Killed on drop.
//!
//! The binary: `$PII_VAULT_TEST_BAO`, else `.ci-tools/venv/bin/bao` at the
//! repository root (`.ci/root-of-trust-tools` installs it), else `bao` on the
//! PATH.
//!
//! Dev mode keeps its data in memory, so a stopped server cannot come back
//! with its keys. To make it unavailable, `seal` it instead: it then answers
//! every call with 503 ("Vault is sealed") until `unseal` (with the unseal key
//! dev mode prints) opens it again, keys intact.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct OpenBao {
    bao: PathBuf,
    server: Child,
    addr: String,
    token: String,
    /// With TLS (`-dev-tls`): the CA that signed the server's certificate.
    ca_file: Option<PathBuf>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl OpenBao {
    /// Starts a dev server over plain HTTP and enables Transit on it; panics
    /// when it cannot.
    pub fn start() -> OpenBao {
        OpenBao::start_with(false)
    }

    /// The same over HTTPS (`-dev-tls`), its certificate (for 127.0.0.1)
    /// signed by `ca_file`.
    pub fn start_tls() -> OpenBao {
        OpenBao::start_with(true)
    }

    /// A port chosen here is bound by the server a moment later, so another
    /// test's server may take it first: ours then exits, and it is started
    /// again on other ports.
    fn start_with(tls: bool) -> OpenBao {
        const ATTEMPTS: usize = 5;
        for _ in 0..ATTEMPTS {
            let mut openbao = OpenBao::spawn(tls);
            match openbao.wait_until_unsealed() {
                Ok(()) => {
                    openbao.run_ok(&["secrets", "enable", "transit"]);
                    return openbao;
                }
                Err(exited) if openbao.log_text().contains("address already in use") => {
                    eprintln!("OpenBao lost its port to another process ({exited}); again")
                }
                Err(exited) => panic!("OpenBao {exited}:\n{}", openbao.log_text()),
            }
        }
        panic!("OpenBao lost its port to another process {ATTEMPTS} times")
    }

    fn spawn(tls: bool) -> OpenBao {
        let bao = bao_binary();
        let dir = tempfile::tempdir().expect("a temporary directory for OpenBao");
        let log = dir.path().join("bao.log");
        let log_file = std::fs::File::create(&log).expect("OpenBao's log file");
        let port = free_port_pair();
        let scheme = if tls { "https" } else { "http" };
        let addr = format!("{scheme}://127.0.0.1:{port}");
        let token = format!("pii-vault-test-{:032x}", rand::random::<u128>());
        let mut args = vec![
            "server".to_string(),
            "-dev".to_string(),
            "-dev-no-store-token".to_string(),
            format!("-dev-root-token-id={token}"),
            format!("-dev-listen-address=127.0.0.1:{port}"),
        ];
        let tls_dir = dir.path().join("tls");
        if tls {
            std::fs::create_dir(&tls_dir).expect("a directory for OpenBao's TLS files");
            args.push("-dev-tls".to_string());
            args.push(format!("-dev-tls-cert-dir={}", tls_dir.display()));
        }
        let server = Command::new(&bao)
            .args(&args)
            .env_remove("BAO_ADDR")
            .env_remove("VAULT_ADDR")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("OpenBao's log file"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {}: {e}", bao.display()));
        OpenBao {
            bao,
            server,
            addr,
            token,
            ca_file: tls.then(|| tls_dir.join("vault-ca.pem")),
            log,
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The CA file to trust, for a server started by `start_tls`.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// The root token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Seals the server: every call answers 503 until `unseal`.
    pub fn seal(&mut self) {
        self.run_ok(&["operator", "seal"]);
    }

    /// Unseals a server `seal` sealed, its keys intact.
    pub fn unseal(&mut self) {
        let key = self.unseal_key();
        self.run_ok(&["operator", "unseal", &key]);
        if let Err(exited) = self.wait_until_unsealed() {
            panic!("OpenBao {exited}:\n{}", self.log_text());
        }
    }

    /// Runs the `bao` CLI against this server as root.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut command = Command::new(&self.bao);
        if let Some(ca_file) = &self.ca_file {
            command.env("BAO_CACERT", ca_file);
        }
        command
            .args(args)
            .env("BAO_ADDR", &self.addr)
            .env("BAO_TOKEN", &self.token)
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_TOKEN")
            .env_remove("VAULT_CACERT")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("could not run {}: {e}", self.bao.display()))
    }

    fn run_ok(&self, args: &[&str]) -> Output {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "bao {args:?} failed: {}{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.log_text()
        );
        output
    }

    /// Waits until this server answers unsealed, to its own root token (a
    /// server of another test on the same port would refuse it); `Err` when
    /// it exited first.
    fn wait_until_unsealed(&mut self) -> Result<(), String> {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.server.try_wait() {
                return Err(format!("exited ({status})"));
            }
            if self.run(&["token", "lookup"]).status.success() {
                return Ok(());
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "OpenBao did not answer unsealed within {START_TIMEOUT:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn unseal_key(&self) -> String {
        let log = self.log_text();
        log.lines()
            .find_map(|line| line.trim().strip_prefix("Unseal Key: "))
            .map(|key| key.trim().to_string())
            .unwrap_or_else(|| panic!("no unseal key in OpenBao's log:\n{log}"))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// The bao binary to run; panics with how to install one.
fn bao_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PII_VAULT_TEST_BAO") {
        return PathBuf::from(path);
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lies in the repository");
    let venv = repo.join(".ci-tools/venv/bin/bao");
    if venv.is_file() {
        return venv;
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("bao"))
            .find(|candidate| candidate.is_file())
    });
    on_path.unwrap_or_else(|| {
        panic!(
            "no OpenBao binary: run .ci/root-of-trust-tools (it installs one in \
             .ci-tools/venv), or set PII_VAULT_TEST_BAO"
        )
    })
}

/// A free port whose next port is free too: dev mode listens for its
/// cluster on the port after the API's.
fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let first = TcpListener::bind("127.0.0.1:0").expect("a free local port");
        let port = first.local_addr().expect("its address").port();
        let Some(next) = port.checked_add(1) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", next)).is_ok() {
            return port;
        }
    }
    panic!("no two consecutive free local ports")
}
