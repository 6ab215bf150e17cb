//! Checks every request passes before it is routed.
//!
//! The `Host` allow-list stops DNS rebinding: a hostile web page that makes its own name
//! resolve to 127.0.0.1 would otherwise read the console as a same-origin page. Browsers
//! always send the name they resolved, so a request is served only when `Host` is an IP
//! literal, `localhost`, the `console.listener` host, or a name in `console.allowed.hosts`.

use std::net::IpAddr;

use crate::api::ApiError;

#[derive(Debug)]
pub struct HostGuard {
    listener_host: String,
    allowed: Vec<String>,
}

impl HostGuard {
    pub fn new(listener_host: &str, allowed: Vec<String>) -> Self {
        HostGuard {
            listener_host: listener_host.to_ascii_lowercase(),
            allowed,
        }
    }

    /// Whether a request with this `Host` header may be served. No header (HTTP/1.0 tools)
    /// is allowed: a browser always sends one.
    pub fn allows(&self, host_header: Option<&str>) -> bool {
        let Some(header) = host_header else {
            return true;
        };
        let header = header.trim();
        // IPv6 literal: "[::1]:8080" or "[::1]".
        if let Some(rest) = header.strip_prefix('[') {
            return rest
                .split_once(']')
                .is_some_and(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().is_ok());
        }
        let name = match header.rsplit_once(':') {
            Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
            Some(_) => return false,
            None => header,
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        name.parse::<IpAddr>().is_ok()
            || name == "localhost"
            || (!name.is_empty() && name == self.listener_host)
            || self.allowed.contains(&name)
    }
}

/// Cross-site request forgery: a state-changing request is refused (403 `csrf`) when the
/// browser says it comes from another site (`Origin` not this console, `Sec-Fetch-Site` other
/// than `same-origin` or `none`), and a body must be declared JSON (415 otherwise), which a
/// cross-site page cannot send without a CORS preflight the console never answers. curl and
/// the CLI send neither header and pass.
pub fn check_write(headers: &hyper::HeaderMap, method: &hyper::Method) -> Result<(), ApiError> {
    check_same_site(headers)?;
    if *method != hyper::Method::DELETE && !content_type_is(headers, "application/json") {
        return Err(ApiError::new(
            415,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        ));
    }
    Ok(())
}

/// Whether the declared body type is `mime` (parameters ignored).
pub fn content_type_is(headers: &hyper::HeaderMap, mime: &str) -> bool {
    headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(mime))
}

/// Refuses a request the browser marks as coming from another site.
pub fn check_same_site(headers: &hyper::HeaderMap) -> Result<(), ApiError> {
    use hyper::header;
    let csrf = |why: &str| ApiError::new(403, "csrf", format!("cross-site request refused: {why}"));
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("");
        if site != "same-origin" && site != "none" {
            return Err(csrf(&format!("Sec-Fetch-Site is {site:?}")));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let same = ["http://", "https://"]
            .iter()
            .any(|scheme| origin.strip_prefix(scheme) == Some(host));
        if !same {
            return Err(csrf(&format!("Origin {origin:?} is not this console")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_need_json_and_the_same_origin() {
        use hyper::header::{HeaderValue, CONTENT_TYPE, HOST, ORIGIN};
        use hyper::{HeaderMap, Method};
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert_eq!(check_write(&h, &Method::POST).unwrap_err().status, 415);
        assert!(
            check_write(&h, &Method::DELETE).is_ok(),
            "curl: no Origin, no body"
        );
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert!(check_write(&h, &Method::POST).is_ok());
        h.insert(ORIGIN, HeaderValue::from_static("http://127.0.0.1:8080"));
        assert!(check_write(&h, &Method::POST).is_ok(), "same origin");
        h.insert(ORIGIN, HeaderValue::from_static("http://evil.test"));
        assert_eq!(check_write(&h, &Method::POST).unwrap_err().code, "csrf");
        h.remove(ORIGIN);
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert_eq!(check_write(&h, &Method::DELETE).unwrap_err().code, "csrf");
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(check_write(&h, &Method::POST).is_ok());
    }

    #[test]
    fn host_allow_list() {
        let g = HostGuard::new("broker1.internal", vec!["console.example.com".into()]);
        for ok in [
            None,
            Some("127.0.0.1:8080"),
            Some("10.1.2.3"),
            Some("[::1]:8080"),
            Some("[fe80::1]"),
            Some("localhost:8080"),
            Some("LOCALHOST"),
            Some("localhost.:80"),
            Some("broker1.internal:8080"),
            Some("Console.Example.com"),
        ] {
            assert!(g.allows(ok), "{ok:?} should pass");
        }
        for bad in [
            Some("evil.example:8080"),
            Some("attacker.test"),
            Some(""),
            Some("[not-an-ip]:80"),
            Some("localhost:80x"),
            Some("127.0.0.1.evil.test"),
        ] {
            assert!(!g.allows(bad), "{bad:?} should be refused");
        }
        // An all-interfaces listener has no name of its own to accept.
        assert!(!HostGuard::new("", vec![]).allows(Some("x:1")));
    }
}
