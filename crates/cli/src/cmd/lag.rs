//! `strata groups lag`: each group's lag status as the broker judges it over its recent
//! commits (Burrow's rules, no thresholds), read from the broker's console REST API
//! (`/api/v1/lag`, `/api/v1/groups/{group}/lag`): the commit windows live in the broker, so
//! the CLI asks for the evaluation rather than computing it.

use std::time::Duration;

use serde_json::Value;
use strata_client::admin::ResourceType;
use strata_client::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use strata_console::percent_encode;

use super::groups::LagArgs;
use super::table::Table;
use super::{print_json, Common};

/// The exit status when `--fail-on` is met.
const FAIL_EXIT: i32 = 3;

pub async fn run(common: &Common, client: &Client, args: LagArgs) -> anyhow::Result<()> {
    let base = match &args.console {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => discover(client).await?,
    };
    let timeout = Duration::from_millis(common.request_timeout_ms);
    let mut statuses = Vec::new();
    if args.groups.is_empty() {
        let all = get_json(&format!("{base}/api/v1/lag"), timeout).await?.1;
        let rows = all.as_array().cloned().unwrap_or_default();
        statuses.extend(rows.iter().map(|r| text(&r["status"])));
        if common.json() {
            print_json(&all);
        } else {
            let mut table = Table::new(&["GROUP", "STATUS", "TOTAL-LAG", "PARTITIONS", "COMPLETE"]);
            for r in &rows {
                table.row(vec![
                    text(&r["group"]),
                    text(&r["status"]),
                    text(&r["totallag"]),
                    text(&r["partition_count"]),
                    complete(&r["complete"]),
                ]);
            }
            table.print();
        }
    } else {
        let mut answers = Vec::new();
        for (i, group) in args.groups.iter().enumerate() {
            let url = format!("{base}/api/v1/groups/{}/lag", percent_encode(group));
            let (status, body) = get_json(&url, timeout).await?;
            let answer = if status == 404 {
                serde_json::json!({"group": group, "status": "NOTFOUND", "partitions": []})
            } else {
                body
            };
            statuses.push(text(&answer["status"]));
            if !common.json() {
                if i > 0 {
                    println!();
                }
                print_group(&answer);
            }
            answers.push(answer);
        }
        if common.json() {
            print_json(&Value::Array(answers));
        }
    }
    if let Some(threshold) = &args.fail_on {
        if statuses.iter().any(|s| reaches(s, threshold)) {
            std::process::exit(FAIL_EXIT);
        }
    }
    Ok(())
}

/// Whether a group status is at least `threshold` (WARN or ERR); a group that does not exist
/// counts as an error.
fn reaches(status: &str, threshold: &str) -> bool {
    let rank = |s: &str| match s {
        "OK" => 0,
        "WARN" => 1,
        _ => 2,
    };
    rank(status) >= rank(threshold)
}

fn print_group(answer: &Value) {
    println!(
        "Group: {}  Status: {}  Total lag: {}",
        text(&answer["group"]),
        text(&answer["status"]),
        text(&answer["totallag"])
    );
    let mut table = Table::new(&[
        "TOPIC",
        "PARTITION",
        "STATUS",
        "LAG",
        "COMMITTED",
        "END",
        "OWNER",
        "COMPLETE",
    ]);
    for p in answer["partitions"].as_array().into_iter().flatten() {
        table.row(vec![
            text(&p["topic"]),
            text(&p["partition"]),
            text(&p["status"]),
            text(&p["current_lag"]),
            text(&p["committed_offset"]),
            text(&p["end_offset"]),
            text(&p["client_id"]),
            complete(&p["complete"]),
        ]);
    }
    table.print();
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn complete(v: &Value) -> String {
    v.as_f64()
        .map(|f| format!("{:.0}%", f * 100.0))
        .unwrap_or_else(|| "-".into())
}

/// The console's URL from the broker's `console.enable` and `console.listener` configs; a
/// wildcard host means the broker's own address.
async fn discover(client: &Client) -> anyhow::Result<String> {
    let cluster = client.describe_cluster().await?;
    let broker = cluster
        .brokers
        .first()
        .ok_or_else(|| anyhow::anyhow!("the cluster lists no brokers"))?;
    let keys = ["console.enable".to_string(), "console.listener".to_string()];
    let configs = client
        .describe_configs(ResourceType::Broker, &broker.id.to_string(), Some(&keys))
        .await?;
    let value = |k: &str| {
        configs
            .iter()
            .find(|c| c.name == k)
            .and_then(|c| c.value.clone())
    };
    if value("console.enable").as_deref() == Some("false") {
        anyhow::bail!("broker {} runs without a console (console.enable=false); lag is evaluated by the console", broker.id);
    }
    let listener = value("console.listener").unwrap_or_else(|| "127.0.0.1:8080".into());
    let (host, port) = listener
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("cannot read console.listener={listener:?}"))?;
    if port == "0" {
        anyhow::bail!("broker {}'s console listens on a port picked at start-up (console.listener={listener}); pass --console with the URL from its start-up line", broker.id);
    }
    let host = match host.trim_matches(['[', ']']) {
        "" | "0.0.0.0" | "::" => broker.host.clone(),
        h => h.to_string(),
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    Ok(format!("http://{host}:{port}"))
}

/// A GET over HTTP/1.1 (`Connection: close`): status and JSON body.
async fn get_json(url: &str, timeout: Duration) -> anyhow::Result<(u16, Value)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("{url}: only http:// console URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(authority).await?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: application/json\r\nConnection: close\r\nUser-Agent: strata-cli\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| anyhow::anyhow!("{url}: no answer within {} ms", timeout.as_millis()))?
        .map_err(|e| {
            anyhow::anyhow!("{url}: {e} (is the broker's console reachable? see --console)")
        })?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("{url}: not an HTTP response"))?;
    let head = String::from_utf8_lossy(&response[..split]);
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("{url}: not an HTTP response"))?;
    let body: Value = serde_json::from_slice(&response[split + 4..])
        .map_err(|e| anyhow::anyhow!("{url}: answered {status} without JSON: {e}"))?;
    if status != 200 && status != 404 {
        anyhow::bail!("{url}: {status} {}", body["message"].as_str().unwrap_or(""));
    }
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        assert!(reaches("ERR", "WARN"));
        assert!(reaches("WARN", "WARN"));
        assert!(!reaches("OK", "WARN"));
        assert!(!reaches("WARN", "ERR"));
        assert!(reaches("NOTFOUND", "ERR"));
    }
}
