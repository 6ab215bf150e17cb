//! The broker's HTTP listener: `/metrics` for Prometheus, `/healthz`, and (as it grows) the
//! web console and its REST API.
//!
//! It runs on the broker's tokio runtime beside the Kafka listeners: one accept task per bound
//! address, one task per connection (HTTP/1.1 through hyper, keep-alive, a 10 s limit on
//! reading request headers), at most `console.max.connections` connections at once. Work that
//! touches logs or walks every partition (rendering `/metrics`) runs on the blocking pool.
//! Every request passes [`guard`] first (the `Host` allow-list against DNS rebinding).
//!
//! Configuration: `console.enable` (default true), `console.listener` (default
//! `127.0.0.1:8080`; port 0 picks a free port), `console.allowed.hosts`,
//! `console.max.connections`. An explicitly set address that cannot be bound stops start-up
//! like a Kafka listener; the default address failing (a second broker on the machine) only
//! warns, and the broker runs without a console.

mod admin;
mod api;
mod guard;
mod history;
mod messages;
pub mod routes;
mod session;
mod ui;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use strata_broker::broker::{Broker, StartError};
use strata_broker::config::BrokerConfig;
use strata_broker::server::{accept, bind_hosts, socket_address};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use guard::HostGuard;
use routes::Settings;
pub use ui::enc as percent_encode;

const DEFAULT_LISTENER: &str = "127.0.0.1:8080";

/// The console's sockets, bound before the broker starts serving.
pub struct BoundConsole {
    sockets: Vec<TcpListener>,
    settings: Arc<Settings>,
    max_connections: usize,
    history_interval: Duration,
}

impl BoundConsole {
    /// The console's base URL (first bound address), as the start-up line announces it.
    pub fn url(&self) -> Option<String> {
        let addr = self.sockets.first()?.local_addr().ok()?;
        Some(format!("http://{}/", display_addr(addr)))
    }

    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.sockets
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }

    /// Starts serving; the console stops when the handle is dropped or shut down.
    pub fn serve(self, broker: Arc<Broker>) -> ConsoleHandle {
        let mut tasks = JoinSet::new();
        let slots = Arc::new(Semaphore::new(self.max_connections));
        tasks.spawn(
            self.settings
                .history
                .clone()
                .run(broker.clone(), self.history_interval),
        );
        for socket in self.sockets {
            tasks.spawn(accept_loop(
                socket,
                broker.clone(),
                self.settings.clone(),
                slots.clone(),
            ));
        }
        ConsoleHandle { tasks }
    }
}

/// The running console.
pub struct ConsoleHandle {
    tasks: JoinSet<()>,
}

impl ConsoleHandle {
    /// Stops accepting and closes open connections.
    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
    }
}

fn display_addr(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
        SocketAddr::V4(v4) => v4.to_string(),
    }
}

/// Binds `console.listener` unless `console.enable=false` (then `Ok(None)`).
pub async fn bind(config: &BrokerConfig) -> Result<Option<BoundConsole>, StartError> {
    if !config.parsed::<bool>("console.enable").unwrap_or(true) {
        return Ok(None);
    }
    let explicit = config.set.contains_key("console.listener");
    let listener = config
        .value("console.listener")
        .unwrap_or_else(|| DEFAULT_LISTENER.to_string());
    let (host, port) = parse_host_port(&listener).ok_or_else(|| {
        StartError::Config(format!(
            "console.listener={listener:?} is not host:port (for example 127.0.0.1:8080)"
        ))
    })?;
    let allowed: Vec<String> = config
        .value("console.allowed.hosts")
        .unwrap_or_default()
        .split(',')
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    let settings = Arc::new(Settings {
        guard: HostGuard::new(&host, allowed),
        max_body: config
            .parsed::<usize>("console.request.max.bytes")
            .unwrap_or(2 << 20)
            .max(1),
        history: Arc::new(history::History::default()),
        sessions: login_required(config).then(|| Arc::new(session::Sessions::default())),
    });
    let history_interval = Duration::from_millis(
        config
            .parsed::<u64>("console.history.interval.ms")
            .unwrap_or(10_000)
            .max(100),
    );
    let mut sockets = Vec::new();
    let mut port = port;
    for (h, required) in bind_hosts(&host) {
        let addr = socket_address(h, port);
        match TcpListener::bind(&addr).await {
            Ok(socket) => {
                if port == 0 {
                    port = socket.local_addr().map(|a| a.port()).unwrap_or(0);
                }
                sockets.push(socket);
            }
            Err(source) if required && explicit => {
                return Err(StartError::Listen { addr, source });
            }
            Err(error) if required => {
                tracing::warn!(%addr, %error, "the console's default address cannot be bound; serving without a console (set console.listener to another host:port, or console.enable=false)");
                return Ok(None);
            }
            Err(error) => {
                tracing::debug!(%addr, %error, "optional console address not bound")
            }
        }
    }
    let loopback_only = sockets
        .iter()
        .filter_map(|s| s.local_addr().ok())
        .all(|a| a.ip().is_loopback());
    if !loopback_only && !login_required(config) {
        tracing::warn!(listener = %listener, "the console listens beyond loopback without a login: anyone who reaches it can read every topic and group");
    }
    let max_connections = config
        .parsed::<usize>("console.max.connections")
        .unwrap_or(64)
        .max(1);
    Ok(Some(BoundConsole {
        sockets,
        settings,
        max_connections,
        history_interval,
    }))
}

/// Whether the console asks for a login: when a Kafka listener uses SASL, or
/// `console.auth.required=true`.
fn login_required(config: &BrokerConfig) -> bool {
    !config.sasl.is_empty()
        || config
            .parsed::<bool>("console.auth.required")
            .unwrap_or(false)
}

/// `host:port`, `[v6]:port` or `:port` (all interfaces).
fn parse_host_port(s: &str) -> Option<(String, u16)> {
    let s = s.trim();
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once("]:")?;
        (h.to_string(), p)
    } else {
        let (h, p) = s.rsplit_once(':')?;
        if h.contains(':') {
            return None;
        }
        (h.to_string(), p)
    };
    Some((host.to_ascii_lowercase(), port.parse().ok()?))
}

async fn accept_loop(
    socket: TcpListener,
    broker: Arc<Broker>,
    settings: Arc<Settings>,
    slots: Arc<Semaphore>,
) {
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = accept(&socket).await;
        while connections.try_join_next().is_some() {}
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "refusing a console connection: console.max.connections reached");
            drop(stream);
            continue;
        };
        let broker = broker.clone();
        let settings = settings.clone();
        connections.spawn(async move {
            let _slot = slot;
            let service = service_fn(move |req| {
                let broker = broker.clone();
                let settings = settings.clone();
                async move {
                    Ok::<_, Infallible>(routes::handle(&broker, &settings, peer, req).await)
                }
            });
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .max_buf_size(64 * 1024)
                .keep_alive(true);
            if let Err(error) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, %error, "console connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_addresses() {
        assert_eq!(
            parse_host_port("127.0.0.1:8080"),
            Some(("127.0.0.1".into(), 8080))
        );
        assert_eq!(parse_host_port("[::1]:0"), Some(("::1".into(), 0)));
        assert_eq!(parse_host_port(":9000"), Some(("".into(), 9000)));
        assert_eq!(
            parse_host_port("LocalHost:1"),
            Some(("localhost".into(), 1))
        );
        assert_eq!(parse_host_port("8080"), None);
        assert_eq!(parse_host_port("::1:80"), None);
        assert_eq!(parse_host_port("h:99999"), None);
    }
}
