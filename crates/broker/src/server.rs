//! Listeners and the accept loop, and clean shutdown.
//!
//! Shutdown order (SIGTERM or Ctrl-C): stop accepting, tell connections to stop reading new
//! requests, let in-flight requests finish (bounded wait), fsync every partition, return.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::broker::{Broker, StartError};
use crate::config::Listener;
use crate::tls::ListenerTls;

/// How long shutdown waits for in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Bound sockets, ready to serve, with the TLS state of the SSL listeners.
pub struct BoundListeners {
    sockets: Vec<(TcpListener, String)>,
    tls: BTreeMap<String, Arc<ListenerTls>>,
}

impl BoundListeners {
    /// Binds every configured listener. `localhost` binds both loopback addresses (clients
    /// often resolve it to `::1` first); the IPv6 one is optional. `tls` holds each SSL
    /// listener's loaded certificates (`crate::tls::load_listeners`).
    pub async fn bind(
        listeners: &[Listener],
        tls: BTreeMap<String, Arc<ListenerTls>>,
    ) -> Result<Self, StartError> {
        let mut sockets = Vec::new();
        for l in listeners {
            let mut port = l.port;
            for (host, required) in bind_hosts(&l.host) {
                let addr = socket_address(host, port);
                match TcpListener::bind(&addr).await {
                    Ok(socket) => {
                        if port == 0 {
                            // Port 0 picks a free port; bind the other loopback on the same one.
                            port = socket.local_addr().map(|a| a.port()).unwrap_or(0);
                        }
                        sockets.push((socket, l.name.clone()));
                    }
                    Err(source) if required => return Err(StartError::Listen { addr, source }),
                    Err(error) => {
                        tracing::debug!(%addr, %error, "optional listener address not bound")
                    }
                }
            }
        }
        Ok(BoundListeners { sockets, tls })
    }

    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.sockets
            .iter()
            .filter_map(|(s, _)| s.local_addr().ok())
            .collect()
    }
}

/// Serves the metadata quorum's internal requests on the controller listeners in `bound`
/// (`strata_quorum::raft::rpc`): the other voters' Raft messages, and metadata operations
/// forwarded to this node's controller once the broker sets them. As in Kafka, a
/// controller listener serves no client request: a connection that sends one is closed.
pub fn serve_controller_listeners(
    bound: BoundListeners,
    quorum: &strata_quorum::raft::node::MetadataQuorum,
) -> Arc<strata_quorum::raft::rpc::InternalServices> {
    let services = Arc::new(strata_quorum::raft::rpc::InternalServices {
        raft: quorum.raft.clone(),
        node_id: quorum.node_id,
        machine: quorum.machine.clone(),
        observers: quorum.observers.clone(),
        ops: Default::default(),
    });
    for (socket, name) in bound.sockets {
        if let Ok(addr) = socket.local_addr() {
            tracing::info!(listener = %name, %addr, "listening (controller listener: the metadata quorum's internal requests, no client requests)");
        }
        let services = services.clone();
        tokio::spawn(async move {
            loop {
                let (stream, peer) = accept(&socket).await;
                tracing::debug!(%peer, listener = %name, "controller connection");
                tokio::spawn(strata_quorum::raft::rpc::serve_connection(
                    stream,
                    services.clone(),
                ));
            }
        });
    }
    services
}

/// The addresses a listener host binds, each with whether it must succeed: `localhost` is
/// both loopbacks (clients often resolve it to `::1` first; that one is optional), an empty
/// host every IPv4 interface.
pub fn bind_hosts(host: &str) -> Vec<(&str, bool)> {
    if host == "localhost" {
        vec![("127.0.0.1", true), ("::1", false)]
    } else if host.is_empty() {
        vec![("0.0.0.0", true)]
    } else {
        vec![(host, true)]
    }
}

/// The next connection; a failed accept (out of file descriptors, say) is logged and retried
/// after a pause rather than ending the listener.
pub async fn accept(socket: &TcpListener) -> (tokio::net::TcpStream, SocketAddr) {
    loop {
        match socket.accept().await {
            Ok(c) => return c,
            Err(error) => {
                let addr = socket.local_addr().ok();
                tracing::warn!(%error, ?addr, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// `host:port`, with an IPv6 host in brackets.
pub fn socket_address(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Serves until `shutdown` resolves, then shuts down cleanly.
pub async fn serve(
    broker: Arc<Broker>,
    listeners: BoundListeners,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut accept_tasks = JoinSet::new();
    let connections = Arc::new(tokio::sync::Mutex::new(JoinSet::new()));
    if !listeners.tls.is_empty() {
        let interval = broker
            .config
            .parsed::<u64>(crate::config::SSL_RELOAD_INTERVAL_MS)
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis);
        let watched = listeners.tls.values().cloned().collect();
        accept_tasks.spawn(crate::tls::watch_certificates(watched, interval));
    }
    for (socket, name) in listeners.sockets {
        let broker = broker.clone();
        let stop_rx = stop_rx.clone();
        let connections = connections.clone();
        let tls = listeners.tls.get(&name).cloned();
        let listener_metrics = broker.metrics.listener(&name);
        if let Ok(addr) = socket.local_addr() {
            if tls.is_some() {
                tracing::info!(listener = %name, %addr, "listening (TLS)");
            } else {
                tracing::info!(listener = %name, %addr, "listening");
            }
        }
        accept_tasks.spawn(async move {
            loop {
                let (stream, peer) = accept(&socket).await;
                // max.connections / max.connections.per.ip: over a limit, the connection is
                // closed at once, as Kafka does.
                let permit = match broker.connection_limits.acquire(peer.ip()) {
                    Ok(permit) => permit,
                    Err(refused) => {
                        tracing::info!(%peer, reason = %refused, "refusing a connection");
                        drop(stream);
                        continue;
                    }
                };
                let gauge = crate::metrics::ConnectionGauge::open(listener_metrics.clone());
                let served = crate::connection::serve(
                    broker.clone(),
                    stream,
                    peer,
                    name.clone(),
                    tls.clone(),
                    stop_rx.clone(),
                    permit,
                );
                let task = async move {
                    served.await;
                    drop(gauge);
                };
                let mut set = connections.lock().await;
                // Reap finished connections so the set stays bounded by live ones.
                while set.try_join_next().is_some() {}
                set.spawn(task);
            }
        });
    }
    shutdown.await;
    // Client listeners keep answering while leaderships move away.
    broker.controlled_shutdown().await;
    tracing::info!("shutting down: no longer accepting connections");
    accept_tasks.shutdown().await;
    let _ = stop_tx.send(true);
    let mut set = std::mem::take(&mut *connections.lock().await);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while set.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("in-flight requests did not finish in time; closing their connections");
        set.shutdown().await;
    }
    let b = broker.clone();
    let _ = tokio::task::spawn_blocking(move || b.flush_all()).await;
    broker.stop_metadata_quorum().await;
    tracing::info!("shutdown complete");
}

/// `socket.send.buffer.bytes` / `socket.receive.buffer.bytes`, when set to something other
/// than -1 (the OS default). Unset, the OS's automatic buffer sizing is kept (Kafka's
/// defaults of 100 KiB would switch it off).
pub fn apply_socket_buffers(stream: &tokio::net::TcpStream, config: &crate::config::BrokerConfig) {
    use std::os::fd::AsRawFd;
    for (key, option) in [
        ("socket.send.buffer.bytes", libc::SO_SNDBUF),
        ("socket.receive.buffer.bytes", libc::SO_RCVBUF),
    ] {
        let Some(bytes) = config
            .set
            .get(key)
            .and_then(|v| v.trim().parse::<i32>().ok())
        else {
            continue;
        };
        if bytes < 0 {
            continue;
        }
        let value: libc::c_int = bytes;
        // Safety: the fd belongs to `stream`, which outlives the call; the option value is a
        // c_int whose size is passed along.
        let rc = unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                std::ptr::addr_of!(value).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            tracing::debug!(key, bytes, error = %std::io::Error::last_os_error(), "cannot set socket buffer size");
        }
    }
}
