//! The small HTTP endpoint every ferrolb binary serves: `/metrics` (Prometheus text),
//! `/healthz` (every loop that must turn does: [`crate::health`]) and `/readyz` (it is ready
//! for its job).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::registry::Registry;

use crate::health::Liveness;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// Binds `addr` and serves until the task is dropped.
pub async fn serve(
    addr: SocketAddr,
    registry: Arc<Registry>,
    ready: Readiness,
    live: Liveness,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    Ok(tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let (registry, ready, live) = (registry.clone(), ready.clone(), live.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                let n = match tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    conn.read(&mut buf),
                )
                .await
                {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
                let request = String::from_utf8_lossy(&buf[..n]);
                let path = request.split_whitespace().nth(1).unwrap_or("/");
                let (status, content_type, body) = respond(path, &registry, &ready, &live);
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(body.as_bytes()).await;
            });
        }
    }))
}

fn respond(
    path: &str,
    registry: &Registry,
    ready: &Readiness,
    live: &Liveness,
) -> (&'static str, &'static str, String) {
    match path {
        "/metrics" => {
            let mut text = String::new();
            match prometheus_client::encoding::text::encode(&mut text, registry) {
                Ok(()) => (
                    "200 OK",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    text,
                ),
                Err(e) => ("500 Internal Server Error", "text/plain", format!("{e}\n")),
            }
        }
        "/healthz" => match live.stale().as_slice() {
            [] => ("200 OK", "text/plain", "ok\n".into()),
            stale => (
                "503 Service Unavailable",
                "text/plain",
                stale
                    .iter()
                    .map(|(name, age)| format!("{name}: no progress for {age:.1?}\n"))
                    .collect(),
            ),
        },
        "/readyz" if ready.get() => ("200 OK", "text/plain", "ok\n".into()),
        "/readyz" => (
            "503 Service Unavailable",
            "text/plain",
            "not ready\n".into(),
        ),
        _ => ("404 Not Found", "text/plain", "not found\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

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
        let heart = live.register("loop", std::time::Duration::from_millis(50));
        let _server = serve(addr, Arc::new(registry), ready.clone(), live)
            .await
            .unwrap();

        let get = |path: &'static str| async move {
            let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
            conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut reply = String::new();
            conn.read_to_string(&mut reply).await.unwrap();
            reply
        };
        assert!(
            get("/metrics")
                .await
                .contains("ferrolb_test_things_total 3")
        );
        assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get("/readyz").await.starts_with("HTTP/1.1 503"));
        ready.set(true);
        assert!(get("/readyz").await.starts_with("HTTP/1.1 200"));
        assert!(get("/nope").await.starts_with("HTTP/1.1 404"));
        tokio::time::sleep(std::time::Duration::from_millis(80)).await;
        let stuck = get("/healthz").await;
        assert!(
            stuck.starts_with("HTTP/1.1 503") && stuck.contains("loop: no progress for"),
            "{stuck}"
        );
        heart.beat();
        assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
    }
}
