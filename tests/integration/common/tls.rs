//! A test certificate authority and a vault serving mutual TLS with it, for
//! the tests of how callers are identified by their certificates.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pii_vault::app::{self, VaultOptions};
use pii_vault::server::{RunningServer, ServerOptions, TlsFiles};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

pub struct Pki {
    pub ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Pki {
            ca: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// A certificate and its key (PEM) for `CN=<common_name>,O=Example`, with
    /// DNS or URI names.
    pub fn issue(&self, common_name: &str, dns: &[&str], uris: &[&str]) -> (String, String) {
        self.issue_with_subject(
            &[
                (DnType::CommonName, common_name),
                (DnType::OrganizationName, "Example"),
            ],
            dns,
            uris,
        )
    }

    /// A certificate and its key (PEM) whose subject has exactly these
    /// attributes, one per RDN, in this order.
    pub fn issue_with_subject(
        &self,
        subject: &[(DnType, &str)],
        dns: &[&str],
        uris: &[&str],
    ) -> (String, String) {
        let mut params =
            CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (attribute, value) in subject {
            params.distinguished_name.push(attribute.clone(), *value);
        }
        for uri in uris {
            params
                .subject_alt_names
                .push(SanType::URI((*uri).try_into().unwrap()));
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

pub fn write_private(path: &Path, contents: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.to_path_buf()
}

/// A vault serving mutual TLS: the server's certificate (for `localhost`)
/// and every client's come from `pki`.
pub struct TlsVault {
    pub server: Option<RunningServer>,
    pub pki: Pki,
    pub ca_pem: String,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl TlsVault {
    pub async fn spawn(policy: &str) -> TlsVault {
        TlsVault::spawn_with(policy, |options| options).await
    }

    /// `spawn`, with server options changed by `adjust` (limits, say).
    pub async fn spawn_with(
        policy: &str,
        adjust: impl FnOnce(ServerOptions) -> ServerOptions,
    ) -> TlsVault {
        let dir = tempfile::tempdir().unwrap();
        let paths = super::prepare_dir(dir.path(), policy);
        let pki = Pki::new("vault test CA");
        let (server_cert, server_key) = pki.issue("vault", &["localhost"], &[]);
        let tls = TlsFiles {
            cert: write_private(&dir.path().join("tls.crt"), &server_cert),
            key: write_private(&dir.path().join("tls.key"), &server_key),
            client_ca: Some(write_private(&dir.path().join("ca.crt"), &pki.ca.pem())),
        };
        let vault = app::open_vault(&paths, &VaultOptions::default())
            .await
            .unwrap();
        let options = adjust(ServerOptions {
            tls: Some(tls),
            ..ServerOptions::plain("127.0.0.1:0".parse().unwrap())
        });
        let server = pii_vault::server::start(Arc::new(vault), options)
            .await
            .unwrap();
        TlsVault {
            addr: server.local_addr,
            server: Some(server),
            ca_pem: pki.ca.pem(),
            pki,
            dir,
        }
    }

    /// A connected channel presenting `identity` (certificate, key), if any.
    pub async fn channel(
        &self,
        identity: Option<(String, String)>,
    ) -> Result<Channel, tonic::transport::Error> {
        self.channel_to(self.addr, identity).await
    }

    /// `channel`, to another of the server's addresses (its health listener).
    pub async fn channel_to(
        &self,
        addr: SocketAddr,
        identity: Option<(String, String)>,
    ) -> Result<Channel, tonic::transport::Error> {
        channel_to(addr, &self.ca_pem, identity).await
    }

    /// A connection that has finished its TLS handshake, presenting
    /// `identity` and offering HTTP/2, and has sent nothing over it yet.
    pub async fn tls_handshake(
        &self,
        identity: (String, String),
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        use tokio_rustls::rustls::pki_types::ServerName;

        let config = client_config(&self.ca_pem, &identity);
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        tokio_rustls::TlsConnector::from(config)
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap()
    }

    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.unwrap();
        }
    }
}

/// A channel to `addr` over TLS, trusting the CA of `ca_pem` for the name
/// localhost and presenting `identity` (certificate, key), if any.
pub async fn channel_to(
    addr: SocketAddr,
    ca_pem: &str,
    identity: Option<(String, String)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

/// A rustls client configuration trusting the CA of `ca_pem`, presenting
/// `identity` (certificate chain, key) and offering HTTP/2 only: for tests
/// that look at the handshake itself.
pub fn client_config(
    ca_pem: &str,
    identity: &(String, String),
) -> Arc<tokio_rustls::rustls::ClientConfig> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let chain = CertificateDer::pem_slice_iter(identity.0.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(identity.1.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}
