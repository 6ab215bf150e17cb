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

use crate::guard::{self, HostGuard};
use crate::history::History;
use crate::session::{self, Sessions};
use crate::ui;
use crate::{admin, api};
use strata_broker::auth::Principal;

type Answer = Response<Full<Bytes>>;

/// Bodies of `/metrics` at least this large are gzipped when the scraper accepts it.
const GZIP_FROM_BYTES: usize = 16 * 1024;

/// Every route: its path pattern (`{name}` segments are parameters) and the methods it
/// answers. Used for 405 answers with `Allow` and by the OpenAPI conformance test.
pub const ROUTES: &[(&str, &[Method])] = &[
    ("/", &[Method::GET]),
    ("/assets/console.css", &[Method::GET]),
    ("/ui/topics", &[Method::GET, Method::POST]),
    ("/ui/topics/{topic}", &[Method::GET]),
    ("/ui/topics/{topic}/messages", &[Method::POST]),
    ("/ui/topics/{topic}/configs", &[Method::POST]),
    ("/ui/topics/{topic}/delete", &[Method::GET, Method::POST]),
    ("/ui/groups", &[Method::GET]),
    ("/ui/groups/{group}", &[Method::GET]),
    ("/ui/brokers", &[Method::GET]),
    ("/ui/login", &[Method::GET, Method::POST]),
    ("/ui/logout", &[Method::POST]),
    ("/metrics", &[Method::GET]),
    ("/healthz", &[Method::GET]),
    ("/api/openapi.json", &[Method::GET]),
    ("/api/v1/cluster", &[Method::GET]),
    ("/api/v1/brokers", &[Method::GET]),
    ("/api/v1/brokers/{id}", &[Method::GET]),
    ("/api/v1/brokers/{id}/configs", &[Method::GET]),
    ("/api/v1/topics", &[Method::GET, Method::POST]),
    ("/api/v1/topics/{topic}", &[Method::GET, Method::DELETE]),
    (
        "/api/v1/topics/{topic}/configs",
        &[Method::GET, Method::PATCH],
    ),
    (
        "/api/v1/topics/{topic}/partitions",
        &[Method::GET, Method::POST],
    ),
    (
        "/api/v1/topics/{topic}/partitions/{partition}",
        &[Method::GET],
    ),
    (
        "/api/v1/topics/{topic}/partitions/{partition}/messages/{offset}",
        &[Method::GET],
    ),
    (
        "/api/v1/topics/{topic}/messages",
        &[Method::GET, Method::POST],
    ),
    ("/api/v1/groups", &[Method::GET]),
    ("/api/v1/groups/{group}", &[Method::GET]),
    ("/api/v1/groups/{group}/lag", &[Method::GET]),
    ("/api/v1/lag", &[Method::GET]),
];

/// The OpenAPI document describing the REST API.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// What every request is checked against.
pub struct Settings {
    pub guard: HostGuard,
    /// Largest request body (`console.request.max.bytes`).
    pub max_body: usize,
    /// What the pages' charts draw.
    pub history: Arc<History>,
    /// Console logins, when the broker uses SASL (`None`: no login, every request anonymous).
    pub sessions: Option<Arc<Sessions>>,
}

pub async fn handle(
    broker: &Arc<Broker>,
    settings: &Settings,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Answer {
    let guard = &settings.guard;
    let (parts, body) = req.into_parts();
    let host = parts
        .headers
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
    let method = if parts.method == Method::HEAD {
        Method::GET
    } else {
        parts.method.clone()
    };
    let path = parts.uri.path().to_string();
    let Some(segments) = path
        .split('/')
        .skip(1)
        .map(|s| api::percent_decode(s, false))
        .collect::<Option<Vec<String>>>()
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            "the path is not valid percent-encoded UTF-8",
        );
    };
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let query = match api::Query::parse(parts.uri.query()) {
        Ok(q) => q,
        Err(e) => return api_answer(Err(e)),
    };
    // Unknown paths and methods are answered before any body is read or checked.
    match route_of(&segs) {
        Some((_, methods)) if methods.contains(&method) => {}
        _ => return not_routed(&method, &segs),
    }
    // With SASL on the broker, a login: a session or HTTP Basic credentials; the request then
    // acts as that user (`session::CALLER`), so ACLs apply.
    let principal = match &settings.sessions {
        None => Principal::anonymous(),
        Some(sessions) => match session::authenticate(broker, sessions, &parts.headers) {
            Some(user) => Principal::user(user),
            None if matches!(
                segs.as_slice(),
                ["healthz"] | ["assets", _] | ["ui", "login"]
            ) =>
            {
                Principal::anonymous()
            }
            None => return unauthenticated(&segs, &parts.uri),
        },
    };
    session::CALLER
        .scope(
            (principal, peer),
            dispatch(broker, settings, peer, method, segs, query, parts, body),
        )
        .await
}

/// Without a login: pages send the browser to the login form, the rest answer 401 with an
/// HTTP Basic challenge.
fn unauthenticated(segs: &[&str], uri: &hyper::Uri) -> Answer {
    if segs.first() == Some(&"ui") || segs == [""] {
        let next = uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/ui/topics");
        let mut r = text(
            StatusCode::SEE_OTHER,
            "text/html; charset=utf-8",
            Bytes::new(),
        );
        if let Ok(v) = HeaderValue::from_str(&format!("/ui/login?next={}", ui::enc(next))) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        return r;
    }
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "login_required",
        "the broker uses SASL: log in at /ui/login, or send a SASL user's credentials with HTTP Basic authentication",
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"strata console\", charset=\"UTF-8\""),
    );
    r
}

#[allow(clippy::too_many_arguments)]
async fn dispatch(
    broker: &Arc<Broker>,
    settings: &Settings,
    peer: SocketAddr,
    method: Method,
    segs: Vec<&str>,
    query: api::Query,
    parts: hyper::http::request::Parts,
    body: Incoming,
) -> Answer {
    if segs.first() == Some(&"ui") || segs == [""] {
        return ui_route(broker, settings, peer, &method, &segs, &parts, body).await;
    }
    let writes = matches!(
        method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    let body = if writes {
        if let Err(e) = guard::check_write(&parts.headers, &method) {
            return api_answer(Err(e));
        }
        match read_body(body, settings.max_body).await {
            Ok(b) => b,
            Err(e) => return api_answer(Err(e)),
        }
    } else {
        Bytes::new()
    };
    let b = broker;
    let result = match (&method, segs.as_slice()) {
        (&Method::GET, ["metrics"]) => {
            return metrics(broker, &settings.history, &parts.headers).await
        }
        (&Method::GET, ["healthz"]) => {
            return text(StatusCode::OK, "text/plain; charset=utf-8", "ok\n".into())
        }
        (&Method::GET, ["assets", "console.css"]) => {
            let mut r = text(
                StatusCode::OK,
                "text/css; charset=utf-8",
                Bytes::from_static(ui::CSS.as_bytes()),
            );
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            );
            return r;
        }
        (&Method::GET, ["api", "openapi.json"]) => {
            return text(
                StatusCode::OK,
                "application/json",
                Bytes::from_static(OPENAPI.as_bytes()),
            )
        }
        (&Method::GET, ["api", "v1", "cluster"]) => api::cluster(b, query),
        (&Method::GET, ["api", "v1", "brokers"]) => api::brokers(b, query),
        (&Method::GET, ["api", "v1", "brokers", id]) => api::one_broker(b, id, query),
        (&Method::GET, ["api", "v1", "brokers", id, "configs"]) => {
            api::broker_configs(b, peer, id, query).await
        }
        (&Method::GET, ["api", "v1", "topics"]) => api::topics(b, query),
        (&Method::POST, ["api", "v1", "topics"]) => match query.finish() {
            Ok(()) => admin::create_topic(b, peer, &body).await,
            Err(e) => Err(e),
        },
        (&Method::GET, ["api", "v1", "topics", t]) => api::topic(b, t, query),
        (&Method::DELETE, ["api", "v1", "topics", t]) => {
            admin::delete_topic(b, peer, t, query).await
        }
        (&Method::PATCH, ["api", "v1", "topics", t, "configs"]) => {
            admin::alter_topic_configs(b, peer, t, query, &body).await
        }
        (&Method::POST, ["api", "v1", "topics", t, "partitions"]) => {
            admin::add_partitions(b, peer, t, query, &body).await
        }
        (&Method::POST, ["api", "v1", "topics", t, "messages"]) => {
            admin::produce(b, peer, t, query, &body).await
        }
        (&Method::GET, ["api", "v1", "topics", t, "configs"]) => {
            api::topic_configs(b, peer, t, query).await
        }
        (&Method::GET, ["api", "v1", "topics", t, "partitions"]) => {
            api::partitions(b, t, None, query)
        }
        (&Method::GET, ["api", "v1", "topics", t, "partitions", p]) => {
            api::partitions(b, t, Some(p), query)
        }
        (&Method::GET, ["api", "v1", "topics", t, "partitions", p, "messages", o]) => {
            api::one_message(b, t, p, o, query).await
        }
        (&Method::GET, ["api", "v1", "topics", t, "messages"]) => api::messages(b, t, query).await,
        (&Method::GET, ["api", "v1", "groups"]) => api::groups(b, query),
        (&Method::GET, ["api", "v1", "groups", g]) => api::group(b, g, query),
        (&Method::GET, ["api", "v1", "groups", g, "lag"]) => {
            api::group_lag(b, &settings.history, g, query)
        }
        (&Method::GET, ["api", "v1", "lag"]) => api::lag(b, query),
        _ => return not_routed(&method, &segs),
    };
    api_answer(result)
}

/// The route a path matches (`{name}` segments match any non-empty segment).
fn route_of(segs: &[&str]) -> Option<&'static (&'static str, &'static [Method])> {
    ROUTES.iter().find(|(pattern, _)| {
        let parts: Vec<&str> = pattern.split('/').skip(1).collect();
        parts.len() == segs.len()
            && parts
                .iter()
                .zip(segs)
                .all(|(p, s)| (p.starts_with('{') && !s.is_empty()) || p == s)
    })
}

/// 405 with `Allow` for a known route, else 404.
fn not_routed(method: &Method, segs: &[&str]) -> Answer {
    match route_of(segs) {
        Some((pattern, methods)) => {
            let allow = methods
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            let mut r = error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                &format!("{pattern} answers {allow}, not {method}"),
            );
            if let Ok(v) = HeaderValue::from_str(&allow) {
                r.headers_mut().insert(header::ALLOW, v);
            }
            r
        }
        None => error(
            StatusCode::NOT_FOUND,
            "no_such_route",
            &format!(
                "no such path /{}; the API is described at /api/openapi.json",
                segs.join("/")
            ),
        ),
    }
}

fn api_answer(result: api::ApiResult) -> Answer {
    let (status, body, location) = match result {
        Ok(a) => (a.status, a.body, a.location),
        Err(e) => (e.status, e.to_json(), None),
    };
    let bytes = if status == 204 {
        Bytes::new()
    } else {
        Bytes::from(body.to_string())
    };
    let mut r = text(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        "application/json",
        bytes,
    );
    if let Some(v) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// The web console's pages and form posts.
async fn ui_route(
    broker: &Arc<Broker>,
    settings: &Settings,
    peer: SocketAddr,
    method: &Method,
    segs: &[&str],
    parts: &hyper::http::request::Parts,
    body: Incoming,
) -> Answer {
    let cookies = parts
        .headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok());
    let (token, set_cookie) = ui::csrf_token(cookies);
    let query = parts.uri.query();
    let history = &settings.history;
    let page = if *method == Method::POST {
        let form = async {
            guard::check_same_site(&parts.headers)?;
            if !guard::content_type_is(&parts.headers, "application/x-www-form-urlencoded") {
                return Err(api::ApiError::new(
                    415,
                    "unsupported_media_type",
                    "console forms are sent as application/x-www-form-urlencoded",
                ));
            }
            let form = ui::parse_form(&read_body(body, settings.max_body).await?)?;
            if !ui::csrf_matches(cookies, &form) {
                return Err(api::ApiError::new(
                    403,
                    "csrf",
                    "the form's token does not match this browser's; reload the page and send it again",
                ));
            }
            Ok(form)
        }
        .await;
        match form {
            Err(e) => ui::error_page(&e),
            Ok(form) => match segs {
                ["ui", "login"] => ui::login(broker, settings.sessions.as_deref(), &form),
                ["ui", "logout"] => ui::logout(settings.sessions.as_deref(), cookies),
                ["ui", "topics"] => ui::create_topic(broker, peer, &form).await,
                ["ui", "topics", t, "messages"] => ui::produce(broker, peer, t, &form).await,
                ["ui", "topics", t, "configs"] => ui::alter_config(broker, peer, t, &form).await,
                ["ui", "topics", t, "delete"] => ui::delete_topic(broker, peer, t, &form).await,
                _ => return not_routed(method, segs),
            },
        }
    } else {
        match segs {
            [""] => ui::Page {
                status: 303,
                html: String::new(),
                set_cookie: None,
                location: Some("/ui/topics".into()),
            },
            ["ui", "topics"] => ui::topics_page(broker, history, query, &token),
            ["ui", "topics", t] => {
                let notice = ui::notice(query);
                ui::topic_page(broker, history, t, query, &token, notice).await
            }
            ["ui", "topics", t, "delete"] => ui::delete_page(broker, t, &token),
            ["ui", "groups"] => ui::groups_page(broker, query),
            ["ui", "groups", g] => ui::group_page(broker, history, g),
            ["ui", "brokers"] => ui::brokers_page(broker, peer).await,
            ["ui", "login"] => ui::login_page(query, &token, None),
            _ => return not_routed(method, segs),
        }
    };
    let mut r = text(
        StatusCode::from_u16(page.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        "text/html; charset=utf-8",
        Bytes::from(page.html),
    );
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if let Some(v) = page.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        h.insert(header::LOCATION, v);
    }
    for cookie in set_cookie.into_iter().chain(page.set_cookie) {
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            h.append(header::SET_COOKIE, v);
        }
    }
    r
}

/// The body, at most `max` bytes (413 beyond, before any work).
async fn read_body(body: Incoming, max: usize) -> Result<Bytes, api::ApiError> {
    use http_body_util::BodyExt as _;
    match http_body_util::Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(api::ApiError::new(
                413,
                "body_too_large",
                format!("the body exceeds console.request.max.bytes ({max} bytes)"),
            ))
        }
        Err(e) => Err(api::ApiError::bad(
            "invalid_body",
            format!("cannot read the body: {e}"),
        )),
    }
}

/// The console's own families, after the broker's: time lag from the history's samples.
fn render_time_lags(history: &History) -> String {
    use strata_metrics::{Exposition, Kind};
    let lags = history.time_lags();
    let mut e = Exposition::new();
    e.family(
        "strata_consumergroup_lag_seconds",
        Kind::Gauge,
        "How far behind the newest record a group's partition is, in seconds (sampled every console.history.interval.ms).",
    );
    let mut max: std::collections::BTreeMap<&str, f64> = std::collections::BTreeMap::new();
    for ((group, topic, partition), seconds) in &lags {
        let p = partition.to_string();
        e.sample(
            &[
                ("consumergroup", group),
                ("topic", topic),
                ("partition", &p),
            ],
            *seconds,
        );
        let m = max.entry(group).or_insert(0.0);
        *m = m.max(*seconds);
    }
    e.family(
        "strata_consumergroup_max_lag_seconds",
        Kind::Gauge,
        "The largest time lag among a group's partitions, in seconds.",
    );
    for (group, seconds) in max {
        e.sample(&[("consumergroup", group)], seconds);
    }
    e.finish()
}

async fn metrics(
    broker: &Arc<Broker>,
    history: &Arc<History>,
    headers: &hyper::HeaderMap,
) -> Answer {
    let gzip = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let b = broker.clone();
    let history = history.clone();
    let rendered = tokio::task::spawn_blocking(move || {
        let mut body = strata_broker::metrics::render(&b);
        body.push_str(&render_time_lags(&history));
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
