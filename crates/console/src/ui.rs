//! The web console: server-rendered pages over the REST API's answers (one model, two
//! renderings), with every asset compiled into the binary and no script at all. The state of
//! a page is in its URL (filters, offsets and encodings are GET parameters), so a link can be
//! shared; navigation is plain links and forms, so it works by keyboard (`accesskey`s T, G, B
//! for the sections). Charts are inline SVG drawn here from the console's history.
//!
//! Forms that change state POST to `/ui/...` with a double-submit token: a `strata_csrf`
//! cookie (random, `SameSite=Strict; HttpOnly`) that the form echoes in `_csrf`, compared in
//! constant time, besides the cross-site checks every write passes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{json, Value};
use strata_broker::broker::Broker;

use crate::api::{self, ApiError, Query};
use crate::history::History;
use crate::{admin, api::percent_decode};

/// A rendered page: status, HTML, and headers to add.
pub struct Page {
    pub status: u16,
    pub html: String,
    pub set_cookie: Option<String>,
    pub location: Option<String>,
}

impl Page {
    fn ok(html: String) -> Self {
        Page {
            status: 200,
            html,
            set_cookie: None,
            location: None,
        }
    }

    fn redirect(to: String) -> Self {
        Page {
            status: 303,
            html: String::new(),
            set_cookie: None,
            location: Some(to),
        }
    }
}

/// The stylesheet, served at `/assets/console.css`.
pub const CSS: &str = include_str!("../assets/console.css");

/// HTML-escapes text for element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a path segment or query value (everything but RFC 3986's unreserved
/// characters).
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "–".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn human_bytes(v: &Value) -> String {
    let Some(n) = v.as_f64() else {
        return "–".into();
    };
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut n = n;
    let mut i = 0;
    while n >= 1024.0 && i < units.len() - 1 {
        n /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n:.0} B")
    } else {
        format!("{n:.1} {}", units[i])
    }
}

/// Milliseconds since the epoch as `2026-12-05 10:00:00.123 UTC`.
pub fn iso_time(ms: i64) -> String {
    if ms < 0 {
        return "–".into();
    }
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    // Civil date from days (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03} UTC",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

fn status_badge(status: &str) -> String {
    let class = match status {
        "OK" => "ok",
        "WARN" => "warn",
        _ => "err",
    };
    format!(
        "<span class=\"badge {class}\" data-status=\"{s}\">{s}</span>",
        s = esc(status)
    )
}

/// A small line chart of `points` (oldest first) as inline SVG.
pub fn sparkline(points: &[f64], width: u32, height: u32, label: &str) -> String {
    if points.is_empty() {
        return format!(
            "<span class=\"muted\" title=\"{}\">no data yet</span>",
            esc(label)
        );
    }
    let max = points.iter().cloned().fold(0.0f64, f64::max).max(1e-9);
    let n = points.len().max(2) - 1;
    let mut path = String::new();
    for (i, v) in points.iter().enumerate() {
        let x = if points.len() == 1 {
            width as f64
        } else {
            i as f64 * width as f64 / n as f64
        };
        let y = height as f64 - 1.0 - (v / max) * (height as f64 - 2.0);
        let _ = write!(path, "{}{x:.1},{y:.1}", if i == 0 { "" } else { " " });
    }
    format!(
        "<svg class=\"chart\" role=\"img\" aria-label=\"{label}\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\"><title>{label}</title><polyline fill=\"none\" stroke=\"currentColor\" stroke-width=\"1.5\" points=\"{path}\"/></svg>",
        label = esc(label)
    )
}

fn layout(title: &str, section: &str, body: &str) -> String {
    let nav = [
        ("topics", "/ui/topics", "Topics", "t"),
        ("groups", "/ui/groups", "Consumer groups", "g"),
        ("brokers", "/ui/brokers", "Brokers", "b"),
    ]
    .iter()
    .map(|(id, href, name, key)| {
        let current = if *id == section {
            " aria-current=\"page\""
        } else {
            ""
        };
        format!("<a href=\"{href}\" accesskey=\"{key}\"{current}>{name}</a>")
    })
    .collect::<Vec<_>>()
    .join(" ");
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{t} · Strata</title><link rel=\"stylesheet\" href=\"/assets/console.css\"></head>\
         <body><header><a class=\"brand\" href=\"/ui/topics\">Strata</a><nav>{nav}</nav>{user}</header><main><h1>{t}</h1>{body}</main>\
         <footer>REST API: <a href=\"/api/openapi.json\">/api/openapi.json</a> · <a href=\"/metrics\">/metrics</a></footer></body></html>",
        t = esc(title),
        user = signed_in(),
    )
}

/// "Signed in as" with a logout button, when the request carries a login.
fn signed_in() -> String {
    let (principal, _) = crate::session::caller();
    if principal.name == "ANONYMOUS" {
        return String::new();
    }
    format!(
        "<form method=\"post\" action=\"/ui/logout\" class=\"inline user\" id=\"logout\"><span>Signed in as {}</span> <button type=\"submit\">Log out</button></form>",
        esc(&principal.name)
    )
}

fn error_box(e: &ApiError) -> String {
    format!(
        "<p class=\"error\" role=\"alert\" id=\"error\">{}{}</p>",
        esc(&e.message),
        e.kafka_error
            .map(|k| format!(" ({})", esc(&format!("{k:?}"))))
            .unwrap_or_default()
    )
}

/// An error as a whole page, with the status the API gives it.
pub fn error_page(e: &ApiError) -> Page {
    Page {
        status: e.status,
        html: layout("Error", "", &error_box(e)),
        set_cookie: None,
        location: None,
    }
}

fn csrf_field(token: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"_csrf\" value=\"{}\">",
        esc(token)
    )
}

/// The request's CSRF token: the cookie's, or a new one to set.
pub fn csrf_token(cookie_header: Option<&str>) -> (String, Option<String>) {
    if let Some(token) = crate::session::cookie(cookie_header, "strata_csrf") {
        if token.len() == 32 && token.chars().all(|c| c.is_ascii_hexdigit()) {
            return (token, None);
        }
    }
    let token: String = (0..16)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    let cookie = format!("strata_csrf={token}; Path=/; HttpOnly; SameSite=Strict");
    (token, Some(cookie))
}

/// Whether a form's `_csrf` matches the cookie (constant time).
pub fn csrf_matches(cookie_header: Option<&str>, form: &BTreeMap<String, String>) -> bool {
    let (Some(cookie), Some(field)) = (
        crate::session::cookie(cookie_header, "strata_csrf"),
        form.get("_csrf"),
    ) else {
        return false;
    };
    if cookie.len() != field.len() || cookie.len() != 32 {
        return false;
    }
    cookie
        .bytes()
        .zip(field.bytes())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// A urlencoded form body.
pub fn parse_form(body: &[u8]) -> Result<BTreeMap<String, String>, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad("invalid_form", "the form is not UTF-8"))?;
    let mut out = BTreeMap::new();
    for part in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let k = percent_decode(k, true)
            .ok_or_else(|| ApiError::bad("invalid_form", "bad form encoding"))?;
        let v = percent_decode(v, true)
            .ok_or_else(|| ApiError::bad("invalid_form", "bad form encoding"))?;
        out.insert(k, v);
    }
    Ok(out)
}

fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|part| {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            Some((percent_decode(k, true)?, percent_decode(v, true)?))
        })
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

// ---- pages -------------------------------------------------------------------------------

pub fn topics_page(
    broker: &Broker,
    history: &History,
    raw_query: Option<&str>,
    token: &str,
) -> Page {
    let pairs = query_pairs(raw_query);
    let needle = pairs
        .iter()
        .find(|(k, _)| k == "q")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let internal = pairs.iter().any(|(k, v)| k == "internal" && v == "true");
    let mut q = vec![
        ("q".to_string(), needle.clone()),
        ("page_size".into(), "1000".into()),
    ];
    if internal {
        q.push(("internal".into(), "true".into()));
    }
    let list = match api::topics(broker, Query::from_pairs(q)) {
        Ok(a) => a.body,
        Err(e) => return error_page(&e),
    };
    let mut rows = String::new();
    for t in list["topics"].as_array().into_iter().flatten() {
        let name = text(&t["name"]);
        let rates = history.topic_rates(&name);
        let _ = write!(
            rows,
            "<tr><td><a href=\"/ui/topics/{}\">{}</a></td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            enc(&name),
            esc(&name),
            text(&t["partitions"]),
            text(&t["replication_factor"]),
            text(&t["messages"]),
            human_bytes(&t["size_bytes"]),
            sparkline(&rates, 120, 24, &format!("records in per second, {name}")),
        );
    }
    let body = format!(
        "<form method=\"get\" action=\"/ui/topics\" class=\"inline\" role=\"search\"><label>Filter <input name=\"q\" value=\"{q}\" maxlength=\"249\"></label> <label><input type=\"checkbox\" name=\"internal\" value=\"true\"{checked}> internal topics</label> <button>Filter</button></form>\
         <table id=\"topics\"><thead><tr><th>Topic</th><th>Partitions</th><th>Replication</th><th>Messages</th><th>Size</th><th>Produce rate</th></tr></thead><tbody>{rows}</tbody></table>\
         <p class=\"muted\">{total} topic(s).</p>\
         <h2>Create a topic</h2><form method=\"post\" action=\"/ui/topics\" id=\"create-topic\">{csrf}\
         <label>Name <input name=\"name\" required maxlength=\"249\" pattern=\"[a-zA-Z0-9._-]+\"></label> \
         <label>Partitions <input name=\"partitions\" type=\"number\" min=\"1\" value=\"1\"></label> \
         <label>Configs <textarea name=\"configs\" rows=\"2\" placeholder=\"retention.ms=86400000\"></textarea></label> \
         <button type=\"submit\">Create</button></form>",
        q = esc(&needle),
        checked = if internal { " checked" } else { "" },
        total = text(&list["total"]),
        csrf = csrf_field(token),
    );
    Page::ok(layout("Topics", "topics", &body))
}

/// The topic page: partitions, message browser (its state in the URL), produce form,
/// configs and deletion.
pub async fn topic_page(
    broker: &Arc<Broker>,
    history: &History,
    name: &str,
    raw_query: Option<&str>,
    token: &str,
    notice: Option<String>,
) -> Page {
    let detail = match api::topic(broker, name, Query::empty()) {
        Ok(a) => a.body,
        Err(e) => return error_page(&e),
    };
    let pairs = query_pairs(raw_query);
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let browse_keys = [
        "partition",
        "from",
        "offset",
        "timestamp",
        "limit",
        "filter",
        "encoding",
    ];
    let mut browse: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, _)| browse_keys.contains(&k.as_str()))
        .cloned()
        .collect();
    if get("from").as_deref() != Some("offset") {
        browse.retain(|(k, _)| k != "offset");
    }
    if get("from").as_deref() != Some("timestamp") {
        browse.retain(|(k, _)| k != "timestamp");
    }
    let page = api::messages(broker, name, Query::from_pairs(browse.clone())).await;

    let mut parts = String::new();
    for p in detail["partition_details"].as_array().into_iter().flatten() {
        let _ = write!(
            parts,
            "<tr><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            text(&p["partition"]),
            text(&p["leader"]),
            esc(&p["replicas"].to_string()),
            esc(&p["isr"].to_string()),
            text(&p["log_start_offset"]),
            text(&p["high_watermark"]),
            text(&p["messages"]),
            human_bytes(&p["size_bytes"]),
        );
    }
    let sel = |k: &str, v: &str, default: bool| {
        let chosen = get(k).map_or(default, |c| c == v);
        if chosen {
            " selected"
        } else {
            ""
        }
    };
    let from = get("from").unwrap_or_else(|| "newest".into());
    let browse_form = format!(
        "<form method=\"get\" action=\"/ui/topics/{t}\" id=\"browse\" class=\"inline\">\
         <label>Partition <input name=\"partition\" value=\"{partition}\" size=\"4\" aria-describedby=\"partition-help\"></label><span id=\"partition-help\" class=\"muted\"> (number or all)</span> \
         <label>From <select name=\"from\"><option value=\"newest\"{s1}>newest</option><option value=\"oldest\"{s2}>oldest</option><option value=\"offset\"{s3}>offset</option><option value=\"timestamp\"{s4}>time</option></select></label> \
         <label>Offset <input name=\"offset\" type=\"number\" min=\"0\" value=\"{offset}\" size=\"8\"></label> \
         <label>Time <input name=\"timestamp\" value=\"{timestamp}\" placeholder=\"2026-12-05T10:00:00Z\" size=\"20\"></label> \
         <label>Limit <input name=\"limit\" type=\"number\" min=\"1\" max=\"500\" value=\"{limit}\" size=\"4\"></label> \
         <label>Contains <input name=\"filter\" value=\"{filter}\" maxlength=\"1024\"></label> \
         <label>Show as <select name=\"encoding\"><option value=\"auto\"{e1}>auto</option><option value=\"utf8\"{e2}>text</option><option value=\"hex\"{e3}>hex</option><option value=\"base64\"{e4}>base64</option></select></label> \
         <button type=\"submit\">Read</button></form>",
        t = enc(name),
        partition = esc(&get("partition").unwrap_or_else(|| "0".into())),
        s1 = sel("from", "newest", true),
        s2 = sel("from", "oldest", false),
        s3 = sel("from", "offset", false),
        s4 = sel("from", "timestamp", false),
        offset = esc(&get("offset").unwrap_or_default()),
        timestamp = esc(&get("timestamp").unwrap_or_default()),
        limit = esc(&get("limit").unwrap_or_else(|| "50".into())),
        filter = esc(&get("filter").unwrap_or_default()),
        e1 = sel("encoding", "auto", true),
        e2 = sel("encoding", "utf8", false),
        e3 = sel("encoding", "hex", false),
        e4 = sel("encoding", "base64", false),
    );
    let messages_html = match page {
        Err(e) => error_box(&e),
        Ok(a) => render_messages(name, &a.body, &browse, &from),
    };
    let configs = detail["configs"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("<tr><td>{}</td><td>{}</td></tr>", esc(k), esc(&text(v))))
                .collect::<String>()
        })
        .unwrap_or_default();
    let rates = history.topic_rates(name);
    let notice = notice
        .map(|n| {
            format!(
                "<p class=\"notice\" role=\"status\" id=\"notice\">{}</p>",
                esc(&n)
            )
        })
        .unwrap_or_default();
    let body = format!(
        "{notice}<p>{partitions} partition(s), {messages} message(s), {size}. Produce rate: {spark}</p>\
         <h2>Partitions</h2><table id=\"partitions\"><thead><tr><th>Partition</th><th>Leader</th><th>Replicas</th><th>ISR</th><th>Start offset</th><th>End offset</th><th>Messages</th><th>Size</th></tr></thead><tbody>{parts}</tbody></table>\
         <h2>Messages</h2>{browse_form}{messages_html}\
         <h2>Produce a message</h2><form method=\"post\" action=\"/ui/topics/{t}/messages\" id=\"produce\">{csrf}\
         <label>Partition <input name=\"partition\" type=\"number\" min=\"0\" placeholder=\"by key\" size=\"6\"></label> \
         <label>Key <input name=\"key\"></label> \
         <label>Value <textarea name=\"value\" rows=\"3\"></textarea></label> \
         <label>Headers <textarea name=\"headers\" rows=\"2\" placeholder=\"name=value, one per line\"></textarea></label> \
         <button type=\"submit\">Produce</button></form>\
         <h2>Configuration overrides</h2><table id=\"configs\"><tbody>{configs}</tbody></table>\
         <form method=\"post\" action=\"/ui/topics/{t}/configs\" class=\"inline\" id=\"alter-config\">{csrf}<label>Name <input name=\"name\" required></label> <label>Value <input name=\"value\" placeholder=\"empty: back to the default\"></label> <button type=\"submit\">Set</button></form>\
         <h2>Delete</h2><p><a href=\"/ui/topics/{t}/delete\" id=\"delete-link\">Delete this topic…</a></p>",
        partitions = text(&detail["partitions"]),
        messages = text(&detail["messages"]),
        size = human_bytes(&detail["size_bytes"]),
        spark = sparkline(&rates, 160, 24, &format!("records in per second, {name}")),
        t = enc(name),
        csrf = csrf_field(token),
    );
    Page::ok(layout(&format!("Topic {name}"), "topics", &body))
}

fn render_messages(topic: &str, page: &Value, browse: &[(String, String)], from: &str) -> String {
    let mut rows = String::new();
    for m in page["messages"].as_array().into_iter().flatten() {
        let value = &m["value"];
        let headers: Vec<String> = m["headers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|h| format!("{}={}", text(&h["key"]), value_text(&h["value"])))
            .collect();
        let _ = write!(
            rows,
            "<tr data-offset=\"{offset}\" data-partition=\"{p}\"><td class=\"num\">{p}</td><td class=\"num\"><a href=\"/api/v1/topics/{t}/partitions/{p}/messages/{offset}\">{offset}</a></td><td><time>{ts}</time></td><td class=\"key\">{key}</td><td class=\"value\"><pre data-encoding=\"{venc}\">{value}</pre>{cut}</td><td>{headers}</td></tr>",
            p = text(&m["partition"]),
            offset = text(&m["offset"]),
            t = enc(topic),
            ts = esc(&iso_time(m["timestamp"].as_i64().unwrap_or(-1))),
            key = esc(&value_text(&m["key"])),
            venc = esc(&text(&value["encoding"])),
            value = esc(&value_text(value)),
            cut = if value["truncated"].as_bool() == Some(true) {
                format!("<span class=\"muted\">(cut; {} bytes)</span>", text(&value["size"]))
            } else {
                String::new()
            },
            headers = esc(&headers.join(", ")),
        );
    }
    let count = page["messages"].as_array().map_or(0, Vec::len);
    let stop = text(&page["stop"]);
    let mut more = String::new();
    if let Some(next) = page["next_offset"].as_i64() {
        if stop != "end" || from != "newest" {
            let mut q: Vec<(String, String)> = browse
                .iter()
                .filter(|(k, _)| !["from", "offset", "timestamp"].contains(&k.as_str()))
                .cloned()
                .collect();
            q.push(("from".into(), "offset".into()));
            q.push(("offset".into(), next.to_string()));
            let qs: Vec<String> = q
                .iter()
                .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
                .collect();
            let _ = write!(
                more,
                " <a href=\"/ui/topics/{}?{}\" id=\"next-page\">Continue from offset {next}</a>",
                enc(topic),
                esc(&qs.join("&"))
            );
        }
    }
    format!(
        "<p class=\"muted\" id=\"page-info\">{count} message(s); stopped at: {stop}; scanned {scanned}.{more}</p>\
         <table id=\"messages\"><thead><tr><th>Partition</th><th>Offset</th><th>Timestamp</th><th>Key</th><th>Value</th><th>Headers</th></tr></thead><tbody>{rows}</tbody></table>",
        stop = esc(&stop),
        scanned = human_bytes(&page["scanned_bytes"]),
    )
}

fn seconds_text(v: &Value) -> String {
    v.as_f64()
        .map(|s| format!("{s:.1} s"))
        .unwrap_or_else(|| "–".into())
}

fn value_text(v: &Value) -> String {
    if v.is_null() {
        "null".into()
    } else {
        text(&v["data"])
    }
}

pub fn delete_page(broker: &Broker, name: &str, token: &str) -> Page {
    if let Err(e) = api::topic(broker, name, Query::empty()) {
        return error_page(&e);
    }
    let body = format!(
        "<p>Deleting <strong>{n}</strong> removes all its messages and cannot be undone. Type the topic's name to confirm.</p>\
         <form method=\"post\" action=\"/ui/topics/{t}/delete\" id=\"delete\">{csrf}<label>Topic name <input name=\"confirm\" required autocomplete=\"off\"></label> <button type=\"submit\" class=\"danger\">Delete {n}</button> <a href=\"/ui/topics/{t}\">Cancel</a></form>",
        n = esc(name),
        t = enc(name),
        csrf = csrf_field(token),
    );
    Page::ok(layout(&format!("Delete {name}?"), "topics", &body))
}

pub fn groups_page(broker: &Broker, raw_query: Option<&str>) -> Page {
    let pairs = query_pairs(raw_query);
    let needle = pairs
        .iter()
        .find(|(k, _)| k == "q")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let list = match api::groups(
        broker,
        Query::from_pairs(vec![
            ("q".into(), needle.clone()),
            ("page_size".into(), "1000".into()),
        ]),
    ) {
        Ok(a) => a.body,
        Err(e) => return error_page(&e),
    };
    let mut rows = String::new();
    for g in list["groups"].as_array().into_iter().flatten() {
        let name = text(&g["group"]);
        let _ = write!(
            rows,
            "<tr><td><a href=\"/ui/groups/{}\">{}</a></td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td></tr>",
            enc(&name),
            esc(&name),
            esc(&text(&g["state"])),
            esc(&text(&g["protocol"])),
            text(&g["members"]),
            status_badge(&text(&g["status"])),
            text(&g["total_lag"]),
        );
    }
    let body = format!(
        "<form method=\"get\" action=\"/ui/groups\" class=\"inline\" role=\"search\"><label>Filter <input name=\"q\" value=\"{q}\"></label> <button>Filter</button></form>\
         <table id=\"groups\"><thead><tr><th>Group</th><th>State</th><th>Protocol</th><th>Members</th><th>Lag status</th><th>Total lag</th></tr></thead><tbody>{rows}</tbody></table>",
        q = esc(&needle),
    );
    Page::ok(layout("Consumer groups", "groups", &body))
}

pub fn group_page(broker: &Broker, history: &History, name: &str) -> Page {
    let detail = match api::group(broker, name, Query::empty()) {
        Ok(a) => a.body,
        Err(e) => return error_page(&e),
    };
    let lag = api::group_lag(broker, history, name, Query::empty())
        .map(|a| a.body)
        .unwrap_or(Value::Null);
    let mut members = String::new();
    for m in detail["member_details"].as_array().into_iter().flatten() {
        let assignment: Vec<String> = m["assignment"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|tp| format!("{}-{}", text(&tp["topic"]), text(&tp["partition"])))
            .collect();
        let _ = write!(
            members,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&text(&m["member_id"])),
            esc(&text(&m["client_id"])),
            esc(&text(&m["host"])),
            esc(&assignment.join(", ")),
        );
    }
    let mut statuses: BTreeMap<(String, i64), (String, Value, Value)> = BTreeMap::new();
    for p in lag["partitions"].as_array().into_iter().flatten() {
        statuses.insert(
            (text(&p["topic"]), p["partition"].as_i64().unwrap_or(-1)),
            (
                text(&p["status"]),
                p["complete"].clone(),
                p["lag_seconds"].clone(),
            ),
        );
    }
    let mut offsets = String::new();
    for o in detail["offsets"].as_array().into_iter().flatten() {
        let key = (text(&o["topic"]), o["partition"].as_i64().unwrap_or(-1));
        let (status, complete, seconds) =
            statuses
                .get(&key)
                .cloned()
                .unwrap_or(("–".into(), Value::Null, Value::Null));
        let _ = write!(
            offsets,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num lag\">{}</td><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            esc(&key.0),
            key.1,
            text(&o["committed_offset"]),
            text(&o["end_offset"]),
            text(&o["lag"]),
            seconds_text(&seconds),
            if status == "–" { status } else { status_badge(&status) },
            complete.as_f64().map(|c| format!("{:.0}%", c * 100.0)).unwrap_or_else(|| "–".into()),
            esc(&text(&o["owner"])),
        );
    }
    let trend = history.group_lag(name);
    let status = text(&detail["status"]);
    let body = format!(
        "<dl class=\"facts\"><dt>State</dt><dd id=\"group-state\">{state}</dd><dt>Protocol</dt><dd>{protocol} ({ptype})</dd><dt>Generation / epoch</dt><dd>{generation}</dd><dt>Assignor</dt><dd>{assignor}</dd><dt>Lag status</dt><dd id=\"group-status\">{badge}</dd><dt>Total lag</dt><dd id=\"total-lag\">{total}</dd><dt>Largest time lag</dt><dd id=\"max-lag-seconds\">{seconds}</dd></dl>\
         <h2>Lag trend</h2>{chart}\
         <h2>Partitions</h2><table id=\"offsets\"><thead><tr><th>Topic</th><th>Partition</th><th>Committed</th><th>End offset</th><th>Lag</th><th>Time lag</th><th>Status</th><th>Window</th><th>Owner</th></tr></thead><tbody>{offsets}</tbody></table>\
         <p class=\"muted\">Status is judged over each partition's recent commits, as Burrow does: OK, WARN (moving but falling behind), STOP (no recent commits), STALL (not moving), REWIND (went back). Window: how full the commit window is. JSON: <a href=\"/api/v1/groups/{g}/lag\">/api/v1/groups/{ge}/lag</a>.</p>\
         <h2>Members</h2><table id=\"members\"><thead><tr><th>Member</th><th>Client id</th><th>Host</th><th>Assignment</th></tr></thead><tbody>{members}</tbody></table>",
        state = esc(&text(&detail["state"])),
        protocol = esc(&text(&detail["protocol"])),
        ptype = esc(&text(&detail["protocol_type"])),
        generation = text(&detail["generation"]),
        assignor = esc(&text(&detail["assignor"])),
        badge = status_badge(&status),
        total = text(&detail["total_lag"]),
        seconds = seconds_text(&lag["max_lag_seconds"]),
        chart = sparkline(&trend, 480, 80, &format!("total lag of {name} over time")),
        g = enc(name),
        ge = esc(name),
    );
    Page::ok(layout(&format!("Group {name}"), "groups", &body))
}

pub async fn brokers_page(broker: &Arc<Broker>, peer: SocketAddr) -> Page {
    let cluster = match api::cluster(broker, Query::empty()) {
        Ok(a) => a.body,
        Err(e) => return error_page(&e),
    };
    let mut rows = String::new();
    for b in cluster["brokers"].as_array().into_iter().flatten() {
        let listeners: Vec<String> = b["listeners"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| {
                format!(
                    "{}://{}:{}",
                    text(&l["name"]),
                    text(&l["host"]),
                    text(&l["port"])
                )
            })
            .collect();
        let _ = write!(
            rows,
            "<tr><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            text(&b["id"]),
            esc(&listeners.join(", ")),
            esc(&text(&b["rack"])),
            if b["is_controller"].as_bool() == Some(true) {
                "controller"
            } else {
                ""
            },
        );
    }
    let id = text(&cluster["controller_id"]);
    let configs = api::broker_configs(broker, peer, &id, Query::empty())
        .await
        .map(|a| a.body)
        .unwrap_or(json!([]));
    let mut config_rows = String::new();
    for c in configs.as_array().into_iter().flatten() {
        let _ = write!(
            config_rows,
            "<tr><td>{}</td><td>{}</td><td class=\"muted\">{}</td></tr>",
            esc(&text(&c["name"])),
            esc(&text(&c["value"])),
            esc(&text(&c["source"])),
        );
    }
    let body = format!(
        "<p>Cluster <code id=\"cluster-id\">{cid}</code>, {topics} topic(s). A single node is a cluster of one: it is the controller.</p>\
         <table id=\"brokers\"><thead><tr><th>Id</th><th>Listeners</th><th>Rack</th><th>Role</th></tr></thead><tbody>{rows}</tbody></table>\
         <h2>Configuration of broker {id}</h2><table id=\"broker-configs\"><thead><tr><th>Name</th><th>Value</th><th>Source</th></tr></thead><tbody>{config_rows}</tbody></table>",
        cid = esc(&text(&cluster["cluster_id"])),
        topics = text(&cluster["topics"]),
        id = esc(&id),
    );
    Page::ok(layout("Brokers", "brokers", &body))
}

// ---- form posts --------------------------------------------------------------------------

fn lines_to_map(text: &str) -> serde_json::Map<String, Value> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), Value::String(v.trim().to_string())))
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

/// A form field's text (absent: empty).
fn field<'a>(form: &'a BTreeMap<String, String>, name: &str) -> &'a str {
    form.get(name).map(String::as_str).unwrap_or("")
}

/// A form's answer: to `next` after the write, or the write's error.
fn after(result: api::ApiResult, next: impl FnOnce(&api::ApiAnswer) -> String) -> Page {
    match result {
        Ok(answer) => Page::redirect(next(&answer)),
        Err(e) => error_page(&e),
    }
}

/// An optional number field of a form (empty: absent).
fn form_number(form: &BTreeMap<String, String>, field: &str) -> Result<Option<i64>, ApiError> {
    match form.get(field).filter(|v| !v.trim().is_empty()) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad("invalid_field", format!("{field} must be a number"))),
    }
}

pub async fn create_topic(
    broker: &Arc<Broker>,
    peer: SocketAddr,
    form: &BTreeMap<String, String>,
) -> Page {
    let name = form.get("name").cloned().unwrap_or_default();
    let mut body = json!({"name": name});
    match form_number(form, "partitions") {
        Ok(Some(n)) => body["partitions"] = json!(n),
        Ok(None) => {}
        Err(e) => return error_page(&e),
    }
    let configs = lines_to_map(field(form, "configs"));
    if !configs.is_empty() {
        body["configs"] = Value::Object(configs);
    }
    after(
        admin::create_topic(broker, peer, body.to_string().as_bytes()).await,
        |_| format!("/ui/topics/{}?created=1", enc(&name)),
    )
}

pub async fn produce(
    broker: &Arc<Broker>,
    peer: SocketAddr,
    topic: &str,
    form: &BTreeMap<String, String>,
) -> Page {
    let mut body = serde_json::Map::new();
    match form_number(form, "partition") {
        Ok(Some(n)) => {
            body.insert("partition".into(), json!(n));
        }
        Ok(None) => {}
        Err(e) => return error_page(&e),
    }
    if let Some(k) = form.get("key").filter(|k| !k.is_empty()) {
        body.insert("key".into(), json!(k));
    }
    body.insert(
        "value".into(),
        json!(form.get("value").cloned().unwrap_or_default()),
    );
    let headers: Vec<Value> = lines_to_map(field(form, "headers"))
        .into_iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect();
    if !headers.is_empty() {
        body.insert("headers".into(), Value::Array(headers));
    }
    let body = Value::Object(body).to_string();
    after(
        admin::produce(broker, peer, topic, Query::empty(), body.as_bytes()).await,
        |a| {
            format!(
                "/ui/topics/{}?partition={}&from=offset&offset={}&produced={}",
                enc(topic),
                a.body["partition"],
                a.body["offset"],
                a.body["offset"]
            )
        },
    )
}

pub async fn alter_config(
    broker: &Arc<Broker>,
    peer: SocketAddr,
    topic: &str,
    form: &BTreeMap<String, String>,
) -> Page {
    let name = form.get("name").cloned().unwrap_or_default();
    let value = form.get("value").cloned().unwrap_or_default();
    let body = if value.is_empty() {
        json!({"delete": [name]})
    } else {
        json!({"set": {name: value}})
    };
    let body = body.to_string();
    after(
        admin::alter_topic_configs(broker, peer, topic, Query::empty(), body.as_bytes()).await,
        |_| format!("/ui/topics/{}", enc(topic)),
    )
}

pub async fn delete_topic(
    broker: &Arc<Broker>,
    peer: SocketAddr,
    topic: &str,
    form: &BTreeMap<String, String>,
) -> Page {
    if form.get("confirm").map(String::as_str) != Some(topic) {
        return error_page(&ApiError::bad(
            "not_confirmed",
            format!("type the topic's name ({topic}) to confirm its deletion"),
        ));
    }
    after(
        admin::delete_topic(broker, peer, topic, Query::empty()).await,
        |_| "/ui/topics?deleted=1".into(),
    )
}

/// The notice a page shows after a redirect from a form.
pub fn notice(raw_query: Option<&str>) -> Option<String> {
    let pairs = query_pairs(raw_query);
    if let Some((_, offset)) = pairs.iter().find(|(k, _)| k == "produced") {
        return Some(format!("Produced the message at offset {offset}."));
    }
    if pairs.iter().any(|(k, _)| k == "created") {
        return Some("Topic created.".into());
    }
    None
}

// ---- login -------------------------------------------------------------------------------

/// Where a login goes next: a console page, never another site.
fn next_page(raw: Option<&str>) -> String {
    match raw {
        Some(n) if n.starts_with("/ui/") && !n.starts_with("/ui/login") && !n.contains("//") => {
            n.to_string()
        }
        _ => "/ui/topics".into(),
    }
}

pub fn login_page(raw_query: Option<&str>, token: &str, failed: Option<&str>) -> Page {
    let next = query_pairs(raw_query)
        .into_iter()
        .find(|(k, _)| k == "next")
        .map(|(_, v)| v);
    let message = failed
        .map(|m| {
            format!(
                "<p class=\"error\" role=\"alert\" id=\"error\">{}</p>",
                esc(m)
            )
        })
        .unwrap_or_default();
    let body = format!(
        "{message}<p>The broker uses SASL: log in with a user of its Kafka listeners (PLAIN or SCRAM). What you may see and change follows that user's ACLs.</p>\
         <form method=\"post\" action=\"/ui/login\" id=\"login\">{csrf}<input type=\"hidden\" name=\"next\" value=\"{next}\">\
         <label>User <input name=\"user\" required autocomplete=\"username\" autofocus></label> \
         <label>Password <input name=\"password\" type=\"password\" required autocomplete=\"current-password\"></label> \
         <button type=\"submit\">Log in</button></form>",
        csrf = csrf_field(token),
        next = esc(&next_page(next.as_deref())),
    );
    let status = if failed.is_some() { 401 } else { 200 };
    Page {
        status,
        html: layout("Log in", "", &body),
        set_cookie: None,
        location: None,
    }
}

pub fn login(
    broker: &Broker,
    sessions: Option<&crate::session::Sessions>,
    form: &BTreeMap<String, String>,
) -> Page {
    let Some(sessions) = sessions else {
        return Page::redirect("/ui/topics".into());
    };
    let user = form.get("user").cloned().unwrap_or_default();
    let password = form.get("password").cloned().unwrap_or_default();
    if user.is_empty() || !strata_broker::sasl::password_is_valid(broker, &user, &password) {
        tracing::info!(user = %user, "console login refused: wrong user or password");
        let token = form.get("_csrf").cloned().unwrap_or_default();
        return login_page(None, &token, Some("Wrong user or password."));
    }
    let id = sessions.open(&user);
    tracing::info!(user = %user, "console login");
    let mut page = Page::redirect(next_page(form.get("next").map(String::as_str)));
    page.set_cookie = Some(format!(
        "strata_session={id}; Path=/; HttpOnly; SameSite=Strict"
    ));
    page
}

pub fn logout(sessions: Option<&crate::session::Sessions>, cookies: Option<&str>) -> Page {
    if let (Some(sessions), Some(id)) =
        (sessions, crate::session::cookie(cookies, "strata_session"))
    {
        sessions.close(&id);
    }
    let mut page = Page::redirect("/ui/login".into());
    page.set_cookie = Some("strata_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0".into());
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_attributes() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(enc("a b/ü"), "a%20b%2F%C3%BC");
    }

    #[test]
    fn times_render_in_utc() {
        assert_eq!(iso_time(0), "1970-01-01 00:00:00.000 UTC");
        assert_eq!(iso_time(951_827_415_123), "2000-02-29 12:30:15.123 UTC");
        assert_eq!(iso_time(-1), "–");
    }

    #[test]
    fn csrf_tokens_are_double_submitted() {
        let (token, cookie) = csrf_token(None);
        let cookie = cookie.expect("a new token is set");
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
        let header = format!("other=1; strata_csrf={token}");
        assert_eq!(csrf_token(Some(&header)), (token.clone(), None));
        let mut form = BTreeMap::new();
        form.insert("_csrf".to_string(), token.clone());
        assert!(csrf_matches(Some(&header), &form));
        form.insert("_csrf".to_string(), "0".repeat(32));
        assert!(!csrf_matches(Some(&header), &form));
        assert!(!csrf_matches(None, &form));
    }

    #[test]
    fn sparklines_scale_into_their_box() {
        let svg = sparkline(&[0.0, 5.0, 10.0], 100, 20, "x<y");
        assert!(
            svg.contains("points=\"0.0,19.0 50.0,10.0 100.0,1.0\""),
            "{svg}"
        );
        assert!(svg.contains("aria-label=\"x&lt;y\""));
        assert!(sparkline(&[], 10, 10, "n").contains("no data yet"));
    }
}
