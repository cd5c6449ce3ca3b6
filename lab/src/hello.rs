//! The hello page of hosts outside the cluster (the backends of selectorless Services): a tiny
//! HTTP server in a namespace that answers `Hello from <name>` and the client it saw. The
//! lab's pods are real pods (agnhost) on the same port.

use std::io::{Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::netns::NetNs;

pub const POD_PORT: u16 = 8080;

/// The answer of `name` to a client seen as `peer`; the probe reads both back from it (the
/// peer shows whether kube-proxy kept the client's source address).
pub fn greeting(name: &str, peer: SocketAddr) -> String {
    format!("Hello from {name}\nclient {}\n", peer.ip())
}

pub struct HelloServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HelloServer {
    /// Serves on port 8080 of every address of `ns`, both families.
    pub fn start(ns: &NetNs, name: &str) -> Result<HelloServer> {
        let listener = ns.enter(|| {
            // A v6 socket without IPV6_V6ONLY (Linux default) also accepts IPv4.
            TcpListener::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, POD_PORT)))
        })??;
        listener
            .set_nonblocking(true)
            .context("nonblocking listener")?;
        let stop = Arc::new(AtomicBool::new(false));
        let name = name.to_string();
        let thread = std::thread::Builder::new().name(format!("pod-{name}")).spawn({
            let stop = stop.clone();
            move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((mut conn, peer)) => {
                            let body = greeting(&name, canonical(peer));
                            let _ = conn.set_nonblocking(false);
                            let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
                            let mut buf = [0u8; 1024];
                            let _ = conn.read(&mut buf);
                            let reply = format!(
                                "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = conn.write_all(reply.as_bytes());
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            }
        })?;
        Ok(HelloServer {
            stop,
            thread: Some(thread),
        })
    }
}

/// An IPv4 peer as seen by a dual-stack socket is `::ffff:a.b.c.d`; show it as `a.b.c.d`.
fn canonical(peer: SocketAddr) -> SocketAddr {
    match peer {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => peer,
        },
        v4 => v4,
    }
}

impl Drop for HelloServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
