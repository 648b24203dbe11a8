//! What keeps idle or greedy clients from taking a listener: at most
//! `max_connections` open (the listener waits while they are), at most
//! `max_per_source` from one address (more are closed at once), and a
//! deadline by which a new connection must have sent its first request, TLS
//! handshake and HTTP/2 preface included, or be closed. Without the deadline,
//! anyone reaching the port could hold every connection by sending nothing.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};
use tower::util::MapRequestLayer;

use super::tls::ServerTls;

/// How long the accept loop waits after a failure that is not one
/// connection's (out of file descriptors, say) before it tries again.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// The most often one kind of connection warning is logged.
const WARNING_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    /// Per IPv4 address, or per IPv6 /64 (one host's usual allocation).
    pub max_per_source: usize,
    /// From accept to the first request's headers.
    pub first_request_timeout: Duration,
}

/// Counts an accept loop as running until it ends (however it ends).
struct AcceptLoopRunning(Arc<Shared>);

impl Drop for AcceptLoopRunning {
    fn drop(&mut self) {
        self.0.accepting.send_modify(|running| *running -= 1);
    }
}

/// The connections of one listener.
#[derive(Clone)]
pub struct Connections {
    shared: Arc<Shared>,
}

struct Shared {
    limits: ConnectionLimits,
    permits: Arc<Semaphore>,
    /// Accept loops still running, each holding its listener open.
    accepting: tokio::sync::watch::Sender<usize>,
    /// How many entries `state.awaiting_request` has, read without the lock
    /// so that requests on established connections never take it.
    awaiting: AtomicUsize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    open_per_source: HashMap<IpAddr, usize>,
    /// Connections that have sent no request yet, by (local, remote) address:
    /// the only thing of a connection a request carries (tonic's connect info).
    awaiting_request: HashMap<(SocketAddr, SocketAddr), Arc<AtomicBool>>,
}

impl Connections {
    pub fn new(limits: ConnectionLimits) -> Connections {
        Connections {
            shared: Arc::new(Shared {
                limits,
                permits: Arc::new(Semaphore::new(limits.max_connections)),
                accepting: tokio::sync::watch::Sender::new(0),
                awaiting: AtomicUsize::new(0),
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// Accepts connections from `listener` within the limits, until the
    /// stream is dropped (then the listener closes).
    pub fn incoming(&self, listener: TcpListener) -> ReceiverStream<io::Result<LimitedStream>> {
        let (accepted, incoming) = mpsc::channel(16);
        self.shared.accepting.send_modify(|running| *running += 1);
        let accepting = AcceptLoopRunning(Arc::clone(&self.shared));
        let connections = self.clone();
        tokio::spawn(async move {
            connections.accept_loop(listener, accepted).await;
            drop(accepting);
        });
        ReceiverStream::new(incoming)
    }

    /// Waits until every listener handed to `incoming` is closed: its stream
    /// dropped, and its accept loop ended. A listener that serves only while
    /// the vault opens must be closed before the vault binds its port.
    pub async fn listeners_closed(&self) {
        let mut accepting = self.shared.accepting.subscribe();
        let _ = accepting.wait_for(|running| *running == 0).await;
    }

    /// Like `incoming`, with TLS: each connection's handshake runs on its own
    /// (within the first-request deadline, holding its slot) with the TLS
    /// configuration in force when it was accepted.
    pub fn incoming_tls(
        &self,
        listener: TcpListener,
        tls: Arc<ServerTls>,
    ) -> ReceiverStream<io::Result<TlsStream<LimitedStream>>> {
        let (handshaken, incoming) = mpsc::channel(16);
        let accepted = self.incoming(listener);
        tokio::spawn(handshake_each(accepted, tls, handshaken));
        ReceiverStream::new(incoming)
    }

    async fn accept_loop(
        self,
        listener: TcpListener,
        accepted: mpsc::Sender<io::Result<LimitedStream>>,
    ) {
        let mut failures = Throttle::default();
        let mut refusals = Throttle::default();
        loop {
            let permit = tokio::select! {
                _ = accepted.closed() => return,
                permit = Arc::clone(&self.shared.permits).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            let accepted_now = tokio::select! {
                _ = accepted.closed() => return,
                accepted_now = listener.accept() => accepted_now,
            };
            let (stream, remote_addr) = match accepted_now {
                Ok(connection) => connection,
                Err(error) if is_one_connections_failure(&error) => continue,
                Err(error) => {
                    // EMFILE, ENFILE, ENOBUFS...: accepting again at once would
                    // fail again at once, spinning a core.
                    if let Some(suppressed) = failures.ready(Instant::now()) {
                        tracing::warn!(
                            %error,
                            suppressed,
                            pause_ms = ACCEPT_PAUSE.as_millis() as u64,
                            "accepting connections failed (out of file descriptors?); pausing"
                        );
                    }
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                    continue;
                }
            };
            let Some(connection) = self.admit(stream, remote_addr, permit) else {
                // Never the address: it is the client's personal data.
                if let Some(suppressed) = refusals.ready(Instant::now()) {
                    tracing::warn!(
                        max_per_source = self.shared.limits.max_per_source,
                        suppressed,
                        "closed a new connection: its source address has the most open \
                         connections allowed (--max-connections-per-ip)"
                    );
                }
                continue;
            };
            if accepted.send(Ok(connection)).await.is_err() {
                return; // the server stopped
            }
        }
    }

    /// The connection within its limits, or `None` (dropped, so closed) when
    /// its source already has `max_per_source` open.
    fn admit(
        &self,
        stream: TcpStream,
        remote_addr: SocketAddr,
        permit: OwnedSemaphorePermit,
    ) -> Option<LimitedStream> {
        let source = source_of(remote_addr.ip());
        let local_addr = stream.local_addr().ok()?;
        let key = (local_addr, remote_addr);
        let served = Arc::new(AtomicBool::new(false));
        {
            let mut state = self.shared.lock();
            let open = state.open_per_source.entry(source).or_insert(0);
            if *open >= self.shared.limits.max_per_source {
                return None;
            }
            *open += 1;
            if state
                .awaiting_request
                .insert(key, Arc::clone(&served))
                .is_none()
            {
                self.shared.awaiting.fetch_add(1, Ordering::Relaxed);
            }
        }
        let _ = stream.set_nodelay(true);
        Some(LimitedStream {
            _slot: Slot {
                shared: Arc::clone(&self.shared),
                source,
                key,
                served: Arc::clone(&served),
                _permit: permit,
            },
            deadline: Some(Box::pin(tokio::time::sleep(
                self.shared.limits.first_request_timeout,
            ))),
            served,
            stream,
        })
    }

    /// The layer that tells these connections of every request, so that a
    /// connection that has sent one is no longer closed at its deadline.
    pub fn first_request_layer(
        &self,
    ) -> MapRequestLayer<impl FnMut(http::Request<Body>) -> http::Request<Body> + Clone> {
        let connections = self.clone();
        MapRequestLayer::new(move |request: http::Request<Body>| {
            connections.request_arrived(&request);
            request
        })
    }

    /// Its connection has now sent a request: its deadline no longer applies.
    fn request_arrived<B>(&self, request: &http::Request<B>) {
        if self.shared.awaiting.load(Ordering::Relaxed) == 0 {
            return;
        }
        let extensions = request.extensions();
        let tcp = extensions.get::<TcpConnectInfo>().or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .map(TlsConnectInfo::get_ref)
        });
        let Some(key) = tcp.and_then(|tcp| Some((tcp.local_addr?, tcp.remote_addr?))) else {
            return;
        };
        let mut state = self.shared.lock();
        if let Some(served) = state.awaiting_request.remove(&key) {
            self.shared.awaiting.fetch_sub(1, Ordering::Relaxed);
            served.store(true, Ordering::Relaxed);
        }
    }
}

/// Hands each accepted connection to a handshake of its own, until the
/// server stops (then `accepted` is dropped, which closes the listener).
async fn handshake_each(
    mut accepted: ReceiverStream<io::Result<LimitedStream>>,
    tls: Arc<ServerTls>,
    handshaken: mpsc::Sender<io::Result<TlsStream<LimitedStream>>>,
) {
    loop {
        let connection = tokio::select! {
            _ = handshaken.closed() => return,
            next = accepted.next() => match next {
                Some(Ok(connection)) => connection,
                Some(Err(_)) => continue,
                None => return,
            },
        };
        let acceptor = tls.acceptor();
        let handshaken = handshaken.clone();
        tokio::spawn(async move {
            match acceptor.accept(connection).await {
                Ok(stream) => {
                    let _ = handshaken.send(Ok(stream)).await;
                }
                // The client's failure (or a scanner's), or the deadline.
                Err(error) => tracing::debug!(%error, "TLS handshake failed"),
            }
        });
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is counters and flags, consistent after any panic.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Whose connections (and refusals) count together: an IPv4 address, or an
/// IPv6 /64.
pub(super) fn source_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(prefix.into())
        }
        v4 => v4,
    }
}

/// Failures that end one connection before it was accepted, not the listener.
fn is_one_connections_failure(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// Lets a warning through at most once per `WARNING_INTERVAL`, counting the
/// ones it held back, so a flood cannot flood the logs too.
#[derive(Default)]
struct Throttle {
    next: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// How many were held back since the last one let through, when this one
    /// may go through.
    fn ready(&mut self, now: Instant) -> Option<u64> {
        if self.next.is_some_and(|next| now < next) {
            self.suppressed += 1;
            return None;
        }
        self.next = Some(now + WARNING_INTERVAL);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// A connection's share of its listener's limits, given back when it closes.
struct Slot {
    shared: Arc<Shared>,
    source: IpAddr,
    key: (SocketAddr, SocketAddr),
    served: Arc<AtomicBool>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        if let Some(open) = state.open_per_source.get_mut(&self.source) {
            *open -= 1;
            if *open == 0 {
                state.open_per_source.remove(&self.source);
            }
        }
        // Only this connection's entry: a new one may reuse the addresses.
        let ours = state
            .awaiting_request
            .get(&self.key)
            .is_some_and(|served| Arc::ptr_eq(served, &self.served));
        if ours {
            state.awaiting_request.remove(&self.key);
            self.shared.awaiting.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// An accepted connection: it holds its slot until it closes, and fails its
/// reads once its deadline passes without a request (which closes it).
pub struct LimitedStream {
    // Declared first so it is dropped first, while the socket is still open.
    _slot: Slot,
    deadline: Option<Pin<Box<Sleep>>>,
    served: Arc<AtomicBool>,
    stream: TcpStream,
}

impl LimitedStream {
    /// The client's address.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.stream.peer_addr().ok()
    }
}

impl Connected for LimitedStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(deadline) = &mut this.deadline {
            if this.served.load(Ordering::Relaxed) {
                this.deadline = None;
            } else if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request within the handshake timeout",
                )));
            }
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_count_per_64_and_mapped_ipv4_as_ipv4() {
        let host = |text: &str| source_of(text.parse().expect("test address"));
        assert_eq!(host("2001:db8:1:2:aaaa::1"), host("2001:db8:1:2:bbbb::2"));
        assert_ne!(host("2001:db8:1:2::1"), host("2001:db8:1:3::1"));
        assert_eq!(host("::ffff:192.0.2.7"), host("192.0.2.7"));
        assert_ne!(host("192.0.2.7"), host("192.0.2.8"));
    }

    #[test]
    fn a_throttled_warning_goes_through_once_per_interval_with_the_count_held_back() {
        let mut throttle = Throttle::default();
        let start = Instant::now();
        assert_eq!(throttle.ready(start), Some(0));
        assert_eq!(throttle.ready(start + Duration::from_secs(1)), None);
        assert_eq!(throttle.ready(start + Duration::from_secs(2)), None);
        assert_eq!(throttle.ready(start + WARNING_INTERVAL), Some(2));
        assert_eq!(throttle.ready(start + WARNING_INTERVAL), None);
    }

    #[test]
    fn only_failures_of_one_connection_are_retried_at_once() {
        let kind = |kind| io::Error::from(kind);
        assert!(is_one_connections_failure(&kind(
            io::ErrorKind::ConnectionAborted
        )));
        let too_many_open_files = io::Error::from_raw_os_error(24);
        assert!(!is_one_connections_failure(&too_many_open_files));
        let too_many_in_system = io::Error::from_raw_os_error(23);
        assert!(!is_one_connections_failure(&too_many_in_system));
    }
}
