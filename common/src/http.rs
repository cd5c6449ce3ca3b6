//! The small HTTP endpoint every ferrolb binary serves: `/metrics` (Prometheus text),
//! `/healthz` (every loop that must turn does: [`crate::health`]) and `/readyz` (it is ready
//! for its job).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::registry::Registry;

use crate::health::Liveness;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;

/// Whether the process is ready; flipped by the binary, read by `/readyz`.
#[derive(Debug, Default, Clone)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Extra plain-text pages a binary serves beside the standard three: a path and what renders
/// it (the speaker's `/election`).
pub type Pages = Vec<(&'static str, Arc<dyn Fn() -> String + Send + Sync>)>;

/// Binds `addr` and serves until the task is dropped. hyper speaks HTTP/1 (keep-alive,
/// requests split across reads, any header size within its limits); each connection is
/// bounded in how long it may take to send its request.
pub async fn serve(
    addr: SocketAddr,
    registry: Arc<Registry>,
    ready: Readiness,
    live: Liveness,
    pages: Pages,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = bind(addr)?;
    let pages = Arc::new(pages);
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    Ok(tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let (registry, ready, live) = (registry.clone(), ready.clone(), live.clone());
            let pages = pages.clone();
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let path = request.uri().path();
                let (status, content_type, body) = match pages.iter().find(|(p, _)| *p == path) {
                    Some((_, render)) => (StatusCode::OK, "text/plain", render()),
                    None => respond(path, &registry, &ready, &live),
                };
                let response = Response::builder()
                    .status(status)
                    .header(hyper::header::CONTENT_TYPE, content_type)
                    .body(Full::new(Bytes::from(body)));
                async move { response }
            });
            tokio::spawn(async move {
                let mut http = hyper::server::conn::http1::Builder::new();
                http.timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(5));
                let served = http.serve_connection(hyper_util::rt::TokioIo::new(conn), service);
                if let Err(error) = served.await {
                    tracing::debug!(%error, "metrics connection ended");
                }
            });
        }
    }))
}

/// EAFNOSUPPORT on Linux: the kernel was booted without IPv6.
const NO_IPV6: i32 = 97;

/// Binds `addr`. The unspecified IPv6 address serves both families whatever
/// `net.ipv6.bindv6only` says: the kubelet probes a pod over the family of its pod IP (IPv6
/// alone in an IPv6-only cluster, IPv4 first in a dual-stack one). On a kernel without IPv6 it
/// falls back to `0.0.0.0` on the same port.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let any_v6 = matches!(addr, SocketAddr::V6(a) if a.ip().is_unspecified());
    let socket = if any_v6 {
        match socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None) {
            Ok(socket) => {
                socket.set_only_v6(false)?;
                Some(socket)
            }
            Err(e) if e.raw_os_error() == Some(NO_IPV6) => {
                tracing::warn!(%addr, "this kernel has no IPv6: serving on IPv4 alone");
                None
            }
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    let (socket, addr) = match socket {
        Some(socket) => (socket, addr),
        None => {
            let addr = if any_v6 {
                SocketAddr::from(([0, 0, 0, 0], addr.port()))
            } else {
                addr
            };
            let domain = socket2::Domain::for_address(addr);
            (
                socket2::Socket::new(domain, socket2::Type::STREAM, None)?,
                addr,
            )
        }
    };
    // A restarted process must not wait for the old one's connections to time out.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    TcpListener::from_std(socket.into())
}

fn respond(
    path: &str,
    registry: &Registry,
    ready: &Readiness,
    live: &Liveness,
) -> (StatusCode, &'static str, String) {
    match path {
        "/metrics" => {
            let mut text = String::new();
            match prometheus_client::encoding::text::encode(&mut text, registry) {
                Ok(()) => (
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    text,
                ),
                Err(e) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("{e}\n"),
                ),
            }
        }
        "/healthz" => match live.stale().as_slice() {
            [] => (StatusCode::OK, "text/plain", "ok\n".into()),
            stale => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                stale
                    .iter()
                    .map(|(name, age)| format!("{name}: no progress for {age:.1?}\n"))
                    .collect(),
            ),
        },
        "/readyz" if ready.get() => (StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not ready\n".into(),
        ),
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// `[::]:port` answers over IPv4 and IPv6 alike, even where the system makes IPv6
    /// sockets IPv6-only by default: a namespace with `net.ipv6.bindv6only=1`.
    #[test]
    #[ignore = "lab test: needs root; the test command runs it (FERROLB_LAB=1, --include-ignored)"]
    fn the_unspecified_ipv6_address_serves_both_families() {
        lab::require_lab!();
        let ns = lab::netns::Scratch::new("bind").unwrap();
        ns.sysctl("net.ipv6.bindv6only", "1").unwrap();
        ns.enter(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let listener = bind("[::]:0".parse().unwrap()).unwrap();
                let port = listener.local_addr().unwrap().port();
                for peer in ["127.0.0.1", "::1"] {
                    let target = SocketAddr::new(peer.parse().unwrap(), port);
                    // The backlog completes the handshake; accept only once it has.
                    tokio::net::TcpStream::connect(target)
                        .await
                        .unwrap_or_else(|e| panic!("connecting to {target}: {e}"));
                    listener.accept().await.unwrap();
                }
            })
        })
        .unwrap();
    }

    #[tokio::test]
    async fn serves_metrics_health_and_readiness() {
        let mut registry = Registry::default();
        let counter: Counter = Counter::default();
        registry.register("ferrolb_test_things", "Things counted", counter.clone());
        counter.inc_by(3);
        let ready = Readiness::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let live = Liveness::default();
        // A window far above the few milliseconds a request takes: a busy machine (the test
        // command compiles beside it) once took over 50 ms between registering and the first
        // check, and the loop was reported stuck.
        let window = std::time::Duration::from_millis(1000);
        let heart = live.register("loop", window);
        let pages: Pages = vec![("/extra", Arc::new(|| "an extra page\n".to_string()))];
        let _server = serve(addr, Arc::new(registry), ready.clone(), live, pages)
            .await
            .unwrap();

        let get = |path: &'static str| async move {
            let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
            let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            conn.write_all(request.as_bytes()).await.unwrap();
            let mut reply = String::new();
            conn.read_to_string(&mut reply).await.unwrap();
            reply
        };
        assert!(
            get("/metrics")
                .await
                .contains("ferrolb_test_things_total 3")
        );
        heart.beat();
        assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get("/readyz").await.starts_with("HTTP/1.1 503"));
        ready.set(true);
        assert!(get("/readyz").await.starts_with("HTTP/1.1 200"));
        assert!(get("/nope").await.starts_with("HTTP/1.1 404"));
        assert!(get("/extra").await.ends_with("an extra page\n"));
        tokio::time::sleep(window + std::time::Duration::from_millis(200)).await;
        let stuck = get("/healthz").await;
        assert!(
            stuck.starts_with("HTTP/1.1 503") && stuck.contains("loop: no progress for"),
            "{stuck}"
        );
        heart.beat();
        assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));

        // A request that arrives in pieces is one request (the first server answered the
        // first read: "/rea", not found).
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /rea").await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        conn.write_all(b"dyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut reply = String::new();
        conn.read_to_string(&mut reply).await.unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }
}
