//! Routing and the answers of the slice that exists: `/metrics` and `/healthz`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use strata_broker::broker::Broker;

use crate::guard::HostGuard;

type Answer = Response<Full<Bytes>>;

/// Bodies of `/metrics` at least this large are gzipped when the scraper accepts it.
const GZIP_FROM_BYTES: usize = 16 * 1024;

/// Routes: path and the methods it answers.
const ROUTES: &[(&str, &[Method])] = &[("/metrics", &[Method::GET]), ("/healthz", &[Method::GET])];

pub async fn handle(
    broker: &Arc<Broker>,
    guard: &HostGuard,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Answer {
    let host = req
        .headers()
        .get(header::HOST)
        .map(|h| h.to_str().unwrap_or("\u{0}"));
    if !guard.allows(host) {
        tracing::info!(%peer, host = host.unwrap_or(""), "console request refused: Host not allowed (add it to console.allowed.hosts)");
        return error(
            StatusCode::FORBIDDEN,
            "host_not_allowed",
            "the Host header names a host this console does not serve; add it to console.allowed.hosts",
        );
    }
    let method = if req.method() == Method::HEAD {
        Method::GET
    } else {
        req.method().clone()
    };
    let path = req.uri().path().to_string();
    match (method, path.as_str()) {
        (Method::GET, "/metrics") => metrics(broker, &req).await,
        (Method::GET, "/healthz") => {
            text(StatusCode::OK, "text/plain; charset=utf-8", "ok\n".into())
        }
        (_, p) => match ROUTES.iter().find(|(route, _)| *route == p) {
            Some((_, methods)) => {
                let allow = methods
                    .iter()
                    .map(Method::as_str)
                    .collect::<Vec<_>>()
                    .join(", ");
                let mut r = error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    &format!("{p} answers {allow}"),
                );
                if let Ok(v) = HeaderValue::from_str(&allow) {
                    r.headers_mut().insert(header::ALLOW, v);
                }
                r
            }
            None => error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("no such path {p:?}; the console serves /metrics and /healthz"),
            ),
        },
    }
}

async fn metrics(broker: &Arc<Broker>, req: &Request<Incoming>) -> Answer {
    let gzip = req
        .headers()
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let b = broker.clone();
    let rendered = tokio::task::spawn_blocking(move || {
        let body = strata_broker::metrics::render(&b);
        if gzip && body.len() >= GZIP_FROM_BYTES {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            if enc.write_all(body.as_bytes()).is_ok() {
                if let Ok(zipped) = enc.finish() {
                    return (Bytes::from(zipped), true);
                }
            }
        }
        (Bytes::from(body), false)
    })
    .await;
    match rendered {
        Ok((body, zipped)) => {
            let mut r = text(StatusCode::OK, strata_metrics::CONTENT_TYPE, body);
            if zipped {
                r.headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            r.headers_mut()
                .insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "rendering /metrics failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "rendering the metrics failed; see the broker log",
            )
        }
    }
}

fn text(status: StatusCode, content_type: &'static str, body: Bytes) -> Answer {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// The console's error shape: `{"error": code, "message": what happened and what to do}`.
fn error(status: StatusCode, code: &str, message: &str) -> Answer {
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    text(status, "application/json", Bytes::from(body))
}
