//! SoftHSM2 tokens for the PKCS#11 root of trust's tests.
//!
//! SoftHSM2 reads its configuration (where the tokens live) from the file
//! the `SOFTHSM2_CONF` environment variable names, and lists the tokens in
//! it, once: when the module is initialized, which happens once per process.
//! A token created afterwards (by `softhsm2-util`, another process) is not
//! seen by this process. So a test process has ONE configuration and token
//! directory, in a directory of its own under the system's temporary
//! directory, and the first `SoftHsm::new()` creates a pool of [`TOKENS`]
//! tokens in it, before any test can have loaded the module; each test takes
//! a token of its own from the pool.
//!
//! `SOFTHSM2_CONF` is set once, by that first `SoftHsm::new()` (a test loads
//! the module only after it has its `SoftHsm`; `OnceLock` makes the others
//! wait). Setting a variable while other threads run is unsound only against
//! a concurrent C `getenv` (Rust's own environment access takes a lock): at
//! that moment the other test threads are waiting for the same `OnceLock` or
//! running Rust tests that do not call into C code that reads the
//! environment. That is sound enough for tests; the vault itself never sets
//! a variable.
//!
//! A vault started as a child process (`pii-vault serve --root-of-trust
//! pkcs11`) gets the same configuration through [`SoftHsm::envs`] on its
//! `Command`, and sees the test's token (a child loads the module afresh,
//! so it would also see tokens created after the pool).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// Debian's `softhsm2` package puts the module here.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const UTIL: &str = "softhsm2-util";
/// Tokens per test process: one per test that uses SoftHSM2.
pub const TOKENS: u32 = 32;
const INSTALL_HINT: &str = "run .ci/root-of-trust-tools to install SoftHSM2";

/// One initialized token in this process's SoftHSM2 token directory, with
/// its PIN in an owner-only file.
#[derive(Debug)]
pub struct SoftHsm {
    label: String,
    pin: String,
    pin_file: PathBuf,
}

/// This process's SoftHSM2 configuration: its file and token directory.
struct Store {
    dir: PathBuf,
    conf: PathBuf,
}

impl SoftHsm {
    /// A new token with a label no other test of this process uses, and a
    /// PIN file for it. Panics when SoftHSM2 is not installed.
    pub fn new() -> SoftHsm {
        static NEXT: AtomicU32 = AtomicU32::new(1);
        let store = store();
        let number = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(
            number <= TOKENS,
            "the process's {TOKENS} SoftHSM2 tokens are taken: raise softhsm::TOKENS"
        );
        let (label, pin) = token(number);
        let pin_file = store.dir.join(format!("{label}.pin"));
        write_private(&pin_file, &format!("{pin}\n"));
        SoftHsm {
            label,
            pin,
            pin_file,
        }
    }

    /// The PKCS#11 module to load.
    pub fn module(&self) -> PathBuf {
        PathBuf::from(MODULE)
    }

    pub fn token_label(&self) -> &str {
        &self.label
    }

    /// The user PIN, for tests that need a wrong one.
    pub fn pin(&self) -> &str {
        &self.pin
    }

    /// A file holding the user PIN and a newline, mode 0600.
    pub fn pin_file(&self) -> &Path {
        &self.pin_file
    }

    /// The SoftHSM2 configuration file of this process (every token's).
    pub fn conf(&self) -> &Path {
        &store().conf
    }

    /// The environment a child process (the vault server) needs to see this
    /// token: pass to `Command::envs`.
    pub fn envs(&self) -> [(&'static str, &Path); 1] {
        [("SOFTHSM2_CONF", self.conf())]
    }

    /// A file holding `pin`, mode 0600, beside the token's own.
    pub fn write_pin_file(&self, name: &str, pin: &str) -> PathBuf {
        let path = store().dir.join(format!("{}.{name}.pin", self.label));
        write_private(&path, &format!("{pin}\n"));
        path
    }
}

impl Default for SoftHsm {
    fn default() -> Self {
        SoftHsm::new()
    }
}

fn store() -> &'static Store {
    static STORE: OnceLock<Store> = OnceLock::new();
    STORE.get_or_init(|| {
        assert!(
            Path::new(MODULE).exists(),
            "{MODULE} is missing: {INSTALL_HINT}"
        );
        remove_stale_stores();
        let dir = std::env::temp_dir().join(format!("{STORE_PREFIX}{}", std::process::id()));
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", tokens.display()));
        let conf = dir.join("softhsm2.conf");
        let text = format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        );
        std::fs::write(&conf, text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", conf.display()));
        for number in 1..=TOKENS {
            init_token(&conf, number);
        }
        // See the module's documentation: once per process, before any test
        // loads the module.
        std::env::set_var("SOFTHSM2_CONF", &conf);
        Store { dir, conf }
    })
}

/// The label and user PIN of the pool's token `number`.
fn token(number: u32) -> (String, String) {
    (
        format!("pii-vault-test-{number}"),
        format!("user-pin-{number}"),
    )
}

fn init_token(conf: &Path, number: u32) {
    let (label, pin) = token(number);
    let output = Command::new(UTIL)
        .env("SOFTHSM2_CONF", conf)
        .args(["--init-token", "--free", "--label", &label])
        .args(["--pin", &pin, "--so-pin", "so-pin-0000"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {UTIL} ({e}): {INSTALL_HINT}"));
    assert!(
        output.status.success(),
        "{UTIL} --init-token failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

const STORE_PREFIX: &str = "pii-vault-softhsm.";

/// The stores of test processes that have ended: a store lives as long as
/// its process, which has no hook to remove it at exit.
fn remove_stale_stores() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix(STORE_PREFIX))
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn write_private(path: &Path, contents: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    file.write_all(contents.as_bytes())
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}
