//! A TLS-terminating proxy in front of the local PostgreSQL, so that the
//! vault's TLS to PostgreSQL is tested without touching the server's own
//! configuration: it answers PostgreSQL's SSLRequest with `S`, completes the
//! handshake with a certificate for 127.0.0.1 from a test CA of its own, and
//! forwards the decrypted stream to the server, which sees a plain client.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// PostgreSQL's SSLRequest: length 8, then the code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

pub struct PgTlsProxy {
    pub addr: SocketAddr,
    /// The CA (PEM) that signed the proxy's certificate.
    pub ca_pem: String,
    /// TLS sessions completed so far.
    sessions: Arc<AtomicUsize>,
    accepting: JoinHandle<()>,
}

/// A self-signed CA (PEM) for tests.
pub fn test_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

impl PgTlsProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> PgTlsProxy {
        let ca = test_ca("pg-tls-proxy test CA");
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sessions = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&sessions);
        let accepting = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let session = forward(client, acceptor.clone(), upstream, Arc::clone(&counted));
                tokio::spawn(session);
            }
        });
        PgTlsProxy {
            addr,
            ca_pem: ca.pem(),
            sessions,
            accepting,
        }
    }

    /// A URL of `database` through the proxy.
    pub fn url(&self, database: &str, sslmode: &str) -> String {
        self.url_naming("127.0.0.1", database, sslmode)
    }

    /// A URL of `database` through the proxy that names it `host` (which its
    /// certificate, made for 127.0.0.1, may not hold).
    pub fn url_naming(&self, host: &str, database: &str, sslmode: &str) -> String {
        format!(
            "host={host} hostaddr=127.0.0.1 port={} user=postgres dbname={database} \
             sslmode={sslmode}",
            self.addr.port()
        )
    }

    pub fn tls_sessions(&self) -> usize {
        self.sessions.load(Ordering::SeqCst)
    }
}

impl Drop for PgTlsProxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

async fn forward(
    mut client: TcpStream,
    acceptor: TlsAcceptor,
    upstream: SocketAddr,
    sessions: Arc<AtomicUsize>,
) {
    let mut request = [0u8; 8];
    if client.read_exact(&mut request).await.is_err() || request != SSL_REQUEST {
        return; // this proxy speaks TLS only
    }
    if client.write_all(b"S").await.is_err() {
        return;
    }
    let Ok(mut tls) = acceptor.accept(client).await else {
        return; // the client refused the certificate
    };
    sessions.fetch_add(1, Ordering::SeqCst);
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
}
