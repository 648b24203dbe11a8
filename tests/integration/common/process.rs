//! The real binary, started as a child process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pii_vault::app::VaultPaths;
use pii_vault::pb;
use pii_vault::pb::audit_service_client::AuditServiceClient;
use pii_vault::pb::key_admin_service_client::KeyAdminServiceClient;
use pii_vault::pb::vault_service_client::VaultServiceClient;
use tonic::transport::Channel;

use super::{
    verify_audit_log, AuditClient, Bearer, KeyAdminClient, TestDatabase, VaultClient, ADMIN_KEY,
};

/// The real binary, serving on a free port with JSON logs captured to a file.
pub struct VaultProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub log_file: PathBuf,
}

impl VaultProcess {
    pub fn start(paths: &VaultPaths, log_file: &Path) -> VaultProcess {
        Self::start_with(paths, log_file, &[])
    }

    /// `start` with more `serve` arguments (`--store postgres --database-url ...`).
    pub fn start_with(paths: &VaultPaths, log_file: &Path, extra_args: &[&str]) -> VaultProcess {
        let already_logged = std::fs::metadata(log_file).map_or(0, |m| m.len() as usize);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_file)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_pii-vault"))
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .arg("--data-dir")
            .arg(&paths.data_dir)
            .arg("--keyring-file")
            .arg(&paths.keyring_file)
            .arg("--root-key-file")
            .arg(&paths.root_key_file)
            .arg("--policy")
            .arg(&paths.policy_file)
            .args(extra_args)
            .env("PII_VAULT_LOG", "debug")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let addr = wait_for_listening(log_file, already_logged);
        VaultProcess {
            child,
            addr,
            log_file: log_file.to_path_buf(),
        }
    }

    /// `start_with` on `database` (its `serve_args`), with `extra_args`.
    pub fn start_on(
        paths: &VaultPaths,
        log_file: &Path,
        database: &TestDatabase,
        extra_args: &[&str],
    ) -> VaultProcess {
        let mut args: Vec<&str> = database.serve_args().to_vec();
        args.extend_from_slice(extra_args);
        Self::start_with(paths, log_file, &args)
    }

    pub async fn channel(&self) -> Channel {
        super::connect(self.addr).await
    }

    pub async fn vault(&self, api_key: &str) -> VaultClient {
        VaultServiceClient::with_interceptor(self.channel().await, Bearer::new(api_key))
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }

    pub async fn audit(&self, api_key: &str) -> AuditClient {
        AuditServiceClient::with_interceptor(self.channel().await, Bearer::new(api_key))
    }

    pub async fn key_admin(&self, api_key: &str) -> KeyAdminClient {
        KeyAdminServiceClient::with_interceptor(self.channel().await, Bearer::new(api_key))
    }

    /// The whole audit log's verification, as the admin sees it.
    pub async fn verify_audit_log(&self) -> pb::VerifyAuditLogResponse {
        verify_audit_log(&mut self.audit(ADMIN_KEY).await)
            .await
            .unwrap()
    }

    /// Sends `signal` to the vault (SIGHUP to reload, SIGSTOP to freeze it).
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    pub fn terminate(mut self) -> std::process::ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.child.wait().unwrap()
    }
}

/// A test that fails, or never stops its vault, must not leave the process
/// running: it would hold CPU, ports and PostgreSQL connections for the rest
/// of the suite.
impl Drop for VaultProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The address from the "pii-vault listening on ADDR" line logged after `offset`.
pub fn wait_for_listening(log_file: &Path, offset: usize) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let bytes = std::fs::read(log_file).unwrap_or_default();
        let log = String::from_utf8_lossy(&bytes[offset.min(bytes.len())..]).into_owned();
        if let Some(line) = log
            .lines()
            .find(|l| l.starts_with("pii-vault listening on "))
        {
            return line["pii-vault listening on ".len()..]
                .trim()
                .parse()
                .unwrap();
        }
        assert!(Instant::now() < deadline, "vault did not start:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
