//! The operator's HTTP servers: the operations port (`/metrics`, `/healthz`: the process
//! serves, `/readyz`: the API server has answered at least once) and the JWKS port
//! (`jwks_http`). A port may be reachable by anything in the cluster (the JWKS port by anyone
//! on the Internet), so a client cannot hold memory or a core: request heads are small and must arrive
//! in time, connections are capped and live a bounded time, and accept errors back off.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::metrics::Metrics;

/// What a server answers. Bodies are never read: no endpoint takes one.
pub trait Respond: Send + Sync + 'static {
    /// What the server serves, for its log line.
    const SERVES: &'static str;
    fn respond(&self, req: &Request<Incoming>) -> Response<Full<Bytes>>;
}

/// The operations endpoints.
#[derive(Clone)]
pub struct Endpoints {
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
}

impl Respond for Endpoints {
    const SERVES: &'static str = "/metrics, /healthz and /readyz";
    fn respond(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        respond(self, req)
    }
}

impl Respond for crate::jwks_http::Catalog {
    const SERVES: &'static str = "the JWKS of sets that ask for HTTP";
    fn respond(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        crate::jwks_http::Catalog::respond(self, req)
    }
}

/// What one client may hold. Prometheus and the kubelet send a request of a few hundred bytes
/// at once, on a handful of connections.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections held at once; a new one beyond this closes the oldest.
    pub max_connections: usize,
    /// A request head must arrive within this of the connection opening, or going idle.
    pub header_read_timeout: Duration,
    /// The longest a connection lives; then it finishes its response and closes.
    pub connection_lifetime: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 64,
            header_read_timeout: Duration::from_secs(5),
            connection_lifetime: Duration::from_secs(30),
        }
    }
}

impl Limits {
    /// For the JWKS port: many verifiers (and load balancers) hold connections open.
    pub fn public() -> Self {
        Limits {
            max_connections: 256,
            ..Limits::default()
        }
    }
}

/// hyper's smallest read buffer, and the largest request head accepted (431 beyond it).
const MAX_HEAD_BYTES: usize = 8192;
const MAX_HEADERS: usize = 32;
/// After its lifetime, a connection's in-flight response gets this long to finish.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
const FIRST_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Binds `addr` (port 0 picks a free port) and serves until the process ends.
pub async fn serve<R: Respond>(
    addr: SocketAddr,
    endpoints: Arc<R>,
    limits: Limits,
) -> std::io::Result<SocketAddr> {
    let mut listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    info!(address = %bound, ?limits, "serving {}", R::SERVES);
    let open = Arc::new(Open::new(limits.max_connections));
    let builder = connection_builder(&limits);
    tokio::spawn(async move {
        loop {
            let stream = next_connection(&mut listener).await;
            let (held, evicted) = open.admit();
            let conn = Connection {
                builder: builder.clone(),
                endpoints: endpoints.clone(),
                lifetime: limits.connection_lifetime,
                _held: held,
            };
            tokio::spawn(conn.run(stream, evicted));
        }
    });
    Ok(bound)
}

fn connection_builder(limits: &Limits) -> http1::Builder {
    let mut builder = http1::Builder::new();
    // hyper starts the header timer whenever it waits for a head, idle keep-alive included:
    // it is the idle timeout too.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS);
    builder
}

struct Connection<R> {
    builder: http1::Builder,
    endpoints: Arc<R>,
    lifetime: Duration,
    /// Its place among the open connections, given up when it ends.
    _held: Held,
}

impl<R: Respond> Connection<R> {
    /// Serves `stream` until the client is done, the connection is evicted (dropped at once)
    /// or it outlives its lifetime (then it may finish its response, briefly).
    async fn run(self, stream: TcpStream, evicted: oneshot::Receiver<()>) {
        let endpoints = self.endpoints;
        let service = hyper::service::service_fn(move |req| {
            let response = endpoints.respond(&req);
            async move { Ok::<_, Infallible>(response) }
        });
        let conn = self.builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = evicted => return,
            () = tokio::time::sleep(self.lifetime) => conn.as_mut().graceful_shutdown(),
        }
        let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
    }
}

/// Where connections come from: a TcpListener, or in tests one that fails on demand.
trait Accept {
    type Conn;
    fn accept(&mut self) -> impl Future<Output = std::io::Result<Self::Conn>> + Send;
}

impl Accept for TcpListener {
    type Conn = TcpStream;
    async fn accept(&mut self) -> std::io::Result<TcpStream> {
        TcpListener::accept(self).await.map(|(stream, _)| stream)
    }
}

/// The next connection. Out of file descriptors (EMFILE) or memory, accept fails at once and
/// again: retrying at once would spin a core, so failures wait, longer each time.
async fn next_connection<A: Accept>(listener: &mut A) -> A::Conn {
    let mut delay = FIRST_ACCEPT_BACKOFF;
    loop {
        match listener.accept().await {
            Ok(conn) => return conn,
            Err(e) => {
                warn!(error = %e, retry_in = ?delay, "accepting an HTTP connection");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_ACCEPT_BACKOFF);
            }
        }
    }
}

/// The connections held open, oldest first. Beyond the cap the oldest is closed rather than
/// the newest refused: a client that sends its request at once (a probe, a scrape) is never
/// the oldest for long, so slow clients cannot lock the probes out and get the pod restarted.
struct Open {
    cap: usize,
    next: AtomicU64,
    /// Dropping a connection's sender closes it.
    held: Mutex<BTreeMap<u64, oneshot::Sender<()>>>,
}

/// A connection's place among the open ones, given up when dropped.
struct Held {
    open: Arc<Open>,
    id: u64,
}

impl Open {
    fn new(cap: usize) -> Self {
        Open {
            cap: cap.max(1),
            next: AtomicU64::new(0),
            held: Mutex::new(BTreeMap::new()),
        }
    }

    fn admit(self: &Arc<Self>) -> (Held, oneshot::Receiver<()>) {
        let (close, closed) = oneshot::channel();
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.insert(id, close);
        while held.len() > self.cap {
            held.pop_first();
        }
        let open = self.clone();
        (Held { open, id }, closed)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = self
            .open
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        held.remove(&self.id);
    }
}

/// The response to a request. Bodies are never read: no endpoint takes one.
fn respond(endpoints: &Endpoints, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        response.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("GET, HEAD"),
        );
        return response;
    }
    match req.uri().path() {
        "/metrics" => {
            let body = endpoints.metrics.render(jiff::Timestamp::now());
            let mut response = text(StatusCode::OK, body);
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if endpoints.ready.load(Ordering::Relaxed) => text(StatusCode::OK, "ok\n"),
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the Kubernetes API server has not answered, or the JWKS watches have not listed, yet\n",
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    /// A listener whose first `failures` accepts fail as when the process is out of descriptors.
    struct OutOfDescriptors {
        failures: usize,
        attempts: Vec<Instant>,
    }

    impl Accept for OutOfDescriptors {
        type Conn = ();
        fn accept(&mut self) -> impl Future<Output = std::io::Result<()>> + Send {
            self.attempts.push(Instant::now());
            let emfile = std::io::Error::from_raw_os_error(24);
            let failed = self.attempts.len() <= self.failures;
            std::future::ready(if failed { Err(emfile) } else { Ok(()) })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn accept_errors_wait_longer_each_time_up_to_a_second_instead_of_spinning() {
        let mut listener = OutOfDescriptors {
            failures: 10,
            attempts: Vec::new(),
        };
        next_connection(&mut listener).await;
        let waits: Vec<u128> = listener
            .attempts
            .windows(2)
            .map(|w| (w[1] - w[0]).as_millis())
            .collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
    }
}
