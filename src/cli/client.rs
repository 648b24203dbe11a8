//! What every client command shares: connecting to a vault (plain or TLS, with
//! an API key or a client certificate), and turning statuses and enum numbers
//! into words.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

use crate::pb::{
    self, audit_service_client::AuditServiceClient,
    key_admin_service_client::KeyAdminServiceClient, privacy_service_client::PrivacyServiceClient,
    vault_service_client::VaultServiceClient,
};

#[derive(clap::Args, Debug, Clone)]
pub struct ClientArgs {
    /// The vault's address.
    #[arg(
        long,
        env = "PII_VAULT_ADDR",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    pub addr: String,
    /// API key (prefer the environment variable: command lines are visible to other users).
    #[arg(long, env = "PII_VAULT_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
    /// Print JSON instead of text: one document on stdout, the result or, when
    /// the command fails before it has one, `{"error":{"code":..,"message":..}}`.
    #[arg(long, global = true)]
    pub json: bool,
    /// Give up on a call after this long (exit code 69) [default: 30s; 1500ms for `health`].
    #[arg(long, global = true, value_parser = humantime::parse_duration)]
    pub timeout: Option<std::time::Duration>,
    /// CA certificate (PEM) that signed the vault's TLS certificate; use with an https:// --addr.
    #[arg(long, env = "PII_VAULT_CLIENT_CA", global = true)]
    pub ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for mTLS, instead of an API key.
    #[arg(long, env = "PII_VAULT_CLIENT_CERT", global = true, requires = "key")]
    pub cert: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "PII_VAULT_CLIENT_KEY", global = true, requires = "cert")]
    pub key: Option<std::path::PathBuf>,
    /// The name the vault's certificate must carry, when --addr names it otherwise.
    #[arg(long, global = true)]
    pub tls_server_name: Option<String>,
}

/// Adds `authorization: Bearer <api key>` to every call.
type BearerInterceptor = Box<dyn FnMut(Request<()>) -> Result<Request<()>, Status> + Send>;
pub type Authorized = InterceptedService<Channel, BearerInterceptor>;

/// How long a call may take when `--timeout` is not given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

impl ClientArgs {
    /// `--timeout`, or the default of client commands.
    pub fn call_timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_TIMEOUT)
    }
}

pub async fn connect(args: &ClientArgs) -> anyhow::Result<Channel> {
    let timeout = args.call_timeout();
    let mut endpoint = Endpoint::from_shared(args.addr.clone())
        .map_err(|error| {
            CliError::new(
                Failure::Usage,
                "USAGE",
                format!("--addr is not a valid URI: {error}"),
            )
        })?
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .timeout(timeout);
    if args.addr.starts_with("https://") || args.ca.is_some() {
        endpoint = endpoint.tls_config(tls_config(args)?)?;
    }
    endpoint.connect().await.map_err(|error| {
        CliError::new(
            Failure::Unavailable,
            "UNAVAILABLE",
            format!("cannot reach the vault at {}: {error:#}", args.addr),
        )
        .into()
    })
}

fn tls_config(args: &ClientArgs) -> anyhow::Result<ClientTlsConfig> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))
    };
    let mut config = ClientTlsConfig::new();
    if let Some(ca) = &args.ca {
        config = config.ca_certificate(Certificate::from_pem(read(ca)?));
    }
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    if let Some(name) = &args.tls_server_name {
        config = config.domain_name(name.clone());
    }
    Ok(config)
}

/// Adds the API key, if there is one; a client certificate authenticates without.
fn bearer(args: &ClientArgs) -> anyhow::Result<BearerInterceptor> {
    let header: Option<MetadataValue<_>> = match &args.api_key {
        Some(api_key) => Some(
            format!("Bearer {api_key}")
                .parse()
                .context("the API key has characters that cannot go in a header")?,
        ),
        None if args.cert.is_some() => None,
        None => {
            return Err(CliError::new(
                Failure::Usage,
                "USAGE",
                "no API key: set PII_VAULT_API_KEY, pass --api-key, or use --cert and --key",
            )
            .into())
        }
    };
    Ok(Box::new(move |mut request: Request<()>| {
        if let Some(header) = &header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }))
}

pub async fn vault_client(args: &ClientArgs) -> anyhow::Result<VaultServiceClient<Authorized>> {
    Ok(VaultServiceClient::with_interceptor(
        connect(args).await?,
        bearer(args)?,
    ))
}

pub async fn privacy_client(args: &ClientArgs) -> anyhow::Result<PrivacyServiceClient<Authorized>> {
    Ok(PrivacyServiceClient::with_interceptor(
        connect(args).await?,
        bearer(args)?,
    ))
}

/// A failed call as an error that keeps its gRPC code, so that the exit code
/// and the `--json` error can say what class of failure it was.
pub fn status_error(status: Status) -> anyhow::Error {
    let timed_out = status.code() == Code::Cancelled && status.message() == "Timeout expired";
    let code = if timed_out {
        Code::DeadlineExceeded
    } else {
        status.code()
    };
    let message = if timed_out {
        "the vault did not answer within --timeout".to_owned()
    } else {
        status.message().to_owned()
    };
    // The vault's ErrorInfo reason (docs/errors.md), when it sent one.
    let reason = status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone());
    CliError {
        failure: Failure::of(code),
        code: code_name(code),
        reason,
        message: format!("{code:?}: {message}"),
        reported: false,
    }
    .into()
}

/// The classes of failure a command ends with, each with its exit code
/// (docs/cli.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The command line cannot be run as given (clap's own errors also exit 2).
    Usage,
    /// The vault answered, and refused: permission, authentication, a bad or
    /// unknown argument, a failed precondition, a limit.
    Refused,
    /// The vault could not be reached or did not answer in time.
    Unavailable,
    /// What should be intact is not: a tampered audit log, lost data.
    Integrity,
    /// Anything else (an internal error, a local file that cannot be written).
    Other,
}

/// Exit codes, from sysexits.h where one fits.
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_INTEGRITY: u8 = 65; // EX_DATAERR
pub const EXIT_UNAVAILABLE: u8 = 69; // EX_UNAVAILABLE
pub const EXIT_REFUSED: u8 = 77; // EX_NOPERM
pub const EXIT_OTHER: u8 = 1;

impl Failure {
    pub fn of(code: Code) -> Failure {
        match code {
            Code::PermissionDenied
            | Code::Unauthenticated
            | Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::FailedPrecondition
            | Code::ResourceExhausted
            | Code::OutOfRange => Failure::Refused,
            Code::Unavailable | Code::DeadlineExceeded | Code::Aborted => Failure::Unavailable,
            Code::DataLoss => Failure::Integrity,
            _ => Failure::Other,
        }
    }

    pub fn exit_code(self) -> u8 {
        match self {
            Failure::Usage => EXIT_USAGE,
            Failure::Refused => EXIT_REFUSED,
            Failure::Unavailable => EXIT_UNAVAILABLE,
            Failure::Integrity => EXIT_INTEGRITY,
            Failure::Other => EXIT_OTHER,
        }
    }
}

/// A client command's failure, with its class and a stable code for `--json`.
#[derive(Debug)]
pub struct CliError {
    pub failure: Failure,
    /// A gRPC code name (`PERMISSION_DENIED`) or one of the CLI's own
    /// (`USAGE`, `CONFIRMATION_REQUIRED`, `INTEGRITY`, `REFUSED`).
    pub code: String,
    /// The vault's `ErrorInfo` reason (`CONSENT_MISSING`), when it sent one.
    pub reason: Option<String>,
    pub message: String,
    /// The command already printed its result (with `--json`, its document),
    /// so no error document follows it.
    pub reported: bool,
}

impl CliError {
    pub fn new(failure: Failure, code: &str, message: impl Into<String>) -> CliError {
        CliError {
            failure,
            code: code.to_owned(),
            reason: None,
            message: message.into(),
            reported: false,
        }
    }

    /// Marks the error as one whose result the command already printed.
    pub fn reported(mut self) -> CliError {
        self.reported = true;
        self
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// `PERMISSION_DENIED` for `Code::PermissionDenied`, as gRPC spells them.
pub fn code_name(code: Code) -> String {
    let name = match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    };
    name.to_owned()
}

/// The class, code and message of any error a command ended with: the
/// innermost `CliError` in its chain decides; anything else is `Other`.
pub fn classify(error: &anyhow::Error) -> Classified {
    match error.chain().find_map(|e| e.downcast_ref::<CliError>()) {
        Some(cli) => Classified {
            failure: cli.failure,
            code: cli.code.clone(),
            reason: cli.reason.clone(),
            reported: cli.reported,
        },
        None => Classified {
            failure: Failure::Other,
            code: "ERROR".to_owned(),
            reason: None,
            reported: false,
        },
    }
}

/// What `classify` found out about a command's failure.
pub struct Classified {
    pub failure: Failure,
    pub code: String,
    pub reason: Option<String>,
    pub reported: bool,
}

/// Asks before an irreversible `what`: `--yes` proceeds; otherwise a person
/// at a terminal is asked to type "yes", and a script (stdin not a terminal)
/// is refused with exit code 2.
pub fn confirm(yes: bool, what: &str) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    let refuse = |why: &str| -> anyhow::Error {
        CliError::new(
            Failure::Usage,
            "CONFIRMATION_REQUIRED",
            format!("{what} cannot be undone; {why}"),
        )
        .into()
    };
    if !std::io::stdin().is_terminal() {
        return Err(refuse("pass --yes to confirm (stdin is not a terminal)"));
    }
    eprint!("{what} cannot be undone. Type \"yes\" to go on: ");
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .context("reading the confirmation")?;
    if answer.trim() == "yes" {
        Ok(())
    } else {
        Err(refuse("not confirmed"))
    }
}

pub async fn audit_client(args: &ClientArgs) -> anyhow::Result<AuditServiceClient<Authorized>> {
    Ok(AuditServiceClient::with_interceptor(
        connect(args).await?,
        bearer(args)?,
    ))
}

pub fn kind_name(raw: i32) -> String {
    pb::FieldKind::try_from(raw)
        .map(|kind| {
            kind.as_str_name()
                .trim_start_matches("FIELD_KIND_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| raw.to_string())
}

pub fn disclosure_name(raw: i32) -> String {
    pb::Disclosure::try_from(raw)
        .map(|d| {
            d.as_str_name()
                .trim_start_matches("DISCLOSURE_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| raw.to_string())
}

pub fn erasure_state_name(raw: i32) -> String {
    pb::ErasureState::try_from(raw)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("ERASURE_STATE_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| raw.to_string())
}

/// A protobuf timestamp as RFC 3339, or "-" when absent.
pub fn when(timestamp: Option<&prost_types::Timestamp>) -> String {
    timestamp
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t.seconds).ok())
        .and_then(|at| {
            at.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "-".to_owned())
}

pub async fn key_admin_client(
    args: &ClientArgs,
) -> anyhow::Result<KeyAdminServiceClient<Authorized>> {
    Ok(KeyAdminServiceClient::with_interceptor(
        connect(args).await?,
        bearer(args)?,
    ))
}
