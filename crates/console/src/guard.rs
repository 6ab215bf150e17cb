//! Checks every request passes before it is routed.
//!
//! The `Host` allow-list stops DNS rebinding: a hostile web page that makes its own name
//! resolve to 127.0.0.1 would otherwise read the console as a same-origin page. Browsers
//! always send the name they resolved, so a request is served only when `Host` is an IP
//! literal, `localhost`, the `console.listener` host, or a name in `console.allowed.hosts`.

use std::net::IpAddr;

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

#[cfg(test)]
mod tests {
    use super::*;

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
