//! A TCP forwarder from loopback in the caller's namespace to an address inside a lab
//! namespace, so that tests and `kubectl` on the host reach the lab's API server without the
//! host joining the lab's LAN.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Result;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::netns::NetNs;

pub struct Forwarder {
    local: SocketAddr,
    task: JoinHandle<()>,
}

impl Forwarder {
    pub async fn start(ns: &NetNs, target: SocketAddr) -> Result<Forwarder> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let local = listener.local_addr()?;
        let ns = Arc::new(ns.clone());
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let ns = ns.clone();
                tokio::spawn(async move {
                    // The outbound socket is created inside the namespace, then used from here.
                    let outbound = tokio::task::spawn_blocking(move || {
                        ns.enter(|| std::net::TcpStream::connect(target))
                    })
                    .await;
                    let Ok(Ok(Ok(outbound))) = outbound else {
                        return;
                    };
                    if outbound.set_nonblocking(true).is_err() {
                        return;
                    }
                    let (Ok(mut outbound), mut inbound) = (TcpStream::from_std(outbound), inbound)
                    else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
        });
        Ok(Forwarder { local, task })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}
