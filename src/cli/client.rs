//! What every client command shares: connecting to a vault (plain or TLS, with
//! an API key or a client certificate), and turning statuses and enum numbers
//! into words.

use anyhow::Context;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};

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
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
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

pub async fn connect(args: &ClientArgs) -> anyhow::Result<Channel> {
    let mut endpoint = Endpoint::from_shared(args.addr.clone())
        .context("--addr is not a valid URI")?
        .connect_timeout(std::time::Duration::from_secs(5));
    if args.addr.starts_with("https://") || args.ca.is_some() {
        endpoint = endpoint.tls_config(tls_config(args)?)?;
    }
    endpoint
        .connect()
        .await
        .with_context(|| format!("cannot reach the vault at {}", args.addr))
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
        None => anyhow::bail!(
            "no API key: set PII_VAULT_API_KEY, pass --api-key, or use --cert and --key"
        ),
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

pub fn status_error(status: Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
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
