//! moto (`moto_server`), a local AWS API server, for the AWS KMS root of
//! trust's tests: started on a free port, killed on drop.
//!
//! moto is not AWS: its KMS keeps no key state on Encrypt and Decrypt (a key
//! pending deletion still decrypts) and a second ScheduleKeyDeletion moves
//! the date instead of failing; ScheduleKeyDeletion with a key ARN (not its
//! id) fails with a 500 (moto 5.2.6). Tests that need KMS's own answers build
//! them without a server.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The credentials moto accepts (any would do) and its default region.
pub const ACCESS_KEY_ID: &str = "testing";
pub const SECRET_ACCESS_KEY: &str = "testing";
pub const REGION: &str = "us-east-1";

/// Generous: a loaded CI machine runs many of these, each a Python process.
const START_TIMEOUT: Duration = Duration::from_secs(60);

const HOW_TO_INSTALL: &str =
    "run .ci/root-of-trust-tools (installs moto_server into .ci-tools/venv), \
     or set PII_VAULT_TEST_MOTO to a moto_server binary";

/// A running `moto_server`, killed on drop.
pub struct Moto {
    child: Child,
    address: SocketAddr,
    // moto_server's output, shown when it does not come up.
    log_file: tempfile::NamedTempFile,
}

impl Moto {
    /// Starts `moto_server` on a port of 127.0.0.1 it picks itself (port 0:
    /// a port chosen here and bound later could be taken by another test's
    /// server meanwhile, and since moto takes any credentials the two tests
    /// would share it unnoticed) and waits until it accepts connections.
    /// Panics when it is not installed or does not come up.
    pub fn start() -> Moto {
        let binary = moto_binary();
        let log = tempfile::NamedTempFile::new().expect("a temporary log file");
        let mut child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdin(Stdio::null())
            .stdout(log.reopen().expect("the log file"))
            .stderr(log.reopen().expect("the log file"))
            .spawn()
            .unwrap_or_else(|error| panic!("{}: {error}; {HOW_TO_INSTALL}", binary.display()));
        let port = match port_it_listens_on(&mut child, &log) {
            Ok(port) => port,
            Err(problem) => {
                let _ = child.kill();
                let _ = child.wait();
                let printed = std::fs::read_to_string(log.path()).unwrap_or_default();
                panic!("moto_server {problem}:\n{printed}");
            }
        };
        let mut moto = Moto {
            child,
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            log_file: log,
        };
        moto.wait_until_it_answers();
        moto
    }

    /// Where it listens, for `AWS_ENDPOINT_URL`.
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// What a child `pii-vault serve` needs in its environment to use it.
    pub fn env_vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint_url()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.to_owned()),
        ]
    }

    fn wait_until_it_answers(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&self.address, Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "moto_server exited ({status}) before answering:\n{}",
                    self.log()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "moto_server did not answer within {START_TIMEOUT:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_file.path()).unwrap_or_default()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `PII_VAULT_TEST_MOTO`, else the repository's `.ci-tools/venv`, else PATH.
fn moto_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PII_VAULT_TEST_MOTO") {
        return PathBuf::from(path);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.ci-tools/venv/bin/moto_server");
    if venv.is_file() {
        return venv;
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("moto_server"))
            .find(|candidate| candidate.is_file())
    });
    on_path.unwrap_or_else(|| panic!("moto_server not found: {HOW_TO_INSTALL}"))
}

/// The port moto bound, from the line werkzeug prints once it listens
/// (` * Running on http://127.0.0.1:PORT`).
fn port_it_listens_on(child: &mut Child, log: &tempfile::NamedTempFile) -> Result<u16, String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let printed = std::fs::read_to_string(log.path()).unwrap_or_default();
        let port = printed
            .lines()
            .find_map(|line| line.split("Running on http://127.0.0.1:").nth(1))
            .and_then(|rest| rest.trim().parse().ok());
        if let Some(port) = port {
            return Ok(port);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited ({status}) before listening"));
        }
        if Instant::now() > deadline {
            return Err(format!("did not listen within {START_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Moto {
    /// The vault's AWS KMS root of trust, pointed at this server with its
    /// test credentials (passed in, not through the process's environment,
    /// which tests running in parallel share).
    pub fn kms_root(
        &self,
        config: pii_vault::root_of_trust::aws_kms::AwsKmsConfig,
    ) -> pii_vault::root_of_trust::aws_kms::AwsKmsRoot {
        use aws_config::{BehaviorVersion, Region, SdkConfig};
        use aws_credential_types::provider::SharedCredentialsProvider;
        use aws_credential_types::Credentials;
        let credentials = Credentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY, None, None, "moto");
        let sdk = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(self.endpoint_url())
            .credentials_provider(SharedCredentialsProvider::new(credentials))
            .build();
        pii_vault::root_of_trust::aws_kms::AwsKmsRoot::from_sdk_config(&sdk, config)
            .expect("a KMS client for moto")
    }
}
