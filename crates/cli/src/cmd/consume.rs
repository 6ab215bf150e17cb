//! `strata consume`: print records, following new ones until interrupted.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::json;
use strata_client::consumer::ConsumerRecord;
use strata_client::{Consumer, ConsumerConfig, OffsetReset, Seek};

use super::Common;

/// Print records from a topic, following new ones until interrupted (Ctrl-C)
///
/// Format placeholders: {topic} {partition} {offset} {timestamp} {key} {value} {headers};
/// \t and \n are tab and newline. With --output json each record is one JSON line.
///
/// Examples:
///   strata consume orders --from-beginning
///   strata consume orders --group billing                   (commits offsets; resumes there)
///   strata consume orders --partition 0 --offset 42 --max-messages 10
///   strata consume orders --format '{partition}:{offset} {key}={value} [{headers}]'
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct ConsumeArgs {
    /// Topic to read.
    topic: String,
    /// Read as a member of this consumer group (partitions are shared, offsets committed).
    #[arg(long, short = 'g')]
    group: Option<String>,
    /// Start at the earliest offset (when the group has no committed offset).
    #[arg(long)]
    from_beginning: bool,
    /// Start offset: a number, earliest or latest (not with --group).
    #[arg(long, conflicts_with = "group")]
    offset: Option<String>,
    /// Read only these partitions (not with --group); repeatable.
    #[arg(long, short = 'p', conflicts_with = "group")]
    partition: Vec<i32>,
    /// Stop after this many records.
    #[arg(long, short = 'n')]
    max_messages: Option<u64>,
    /// Stop when no record arrives for this many milliseconds.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Output template for each record.
    #[arg(long, default_value = "{value}")]
    format: String,
}

pub async fn run(common: &Common, a: ConsumeArgs) -> anyhow::Result<()> {
    let start = match a.offset.as_deref() {
        None => None,
        Some("earliest") => Some(Seek::Earliest),
        Some("latest") => Some(Seek::Latest),
        Some(n) => Some(Seek::Offset(
            n.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                anyhow::anyhow!("--offset expects a number, earliest or latest, got {n:?}")
            })?,
        )),
    };
    let template = Template::parse(&a.format)?;
    let client = common.connect().await?;
    let topic = client.fresh_topic(&a.topic).await?;
    for p in &a.partition {
        if !topic.partitions.iter().any(|x| x.id == *p) {
            anyhow::bail!(
                "partition {p} does not exist: topic {} has partitions 0 to {}",
                a.topic,
                topic.partitions.len() as i32 - 1
            );
        }
    }
    let config = ConsumerConfig {
        group_id: a.group.clone(),
        auto_offset_reset: if a.from_beginning {
            OffsetReset::Earliest
        } else {
            OffsetReset::Latest
        },
        // Offsets of printed records are committed (every second, on rebalance and on exit),
        // not those merely fetched.
        auto_offset_store: false,
        auto_commit_interval: Duration::from_secs(1),
        ..Default::default()
    };
    let mut consumer = Consumer::new(client, config);
    if a.group.is_some() {
        consumer.subscribe(std::slice::from_ref(&a.topic))?;
    } else {
        let partitions: Vec<i32> = if a.partition.is_empty() {
            topic.partitions.iter().map(|p| p.id).collect()
        } else {
            a.partition.clone()
        };
        let tps: Vec<(String, i32)> = partitions.iter().map(|p| (a.topic.clone(), *p)).collect();
        consumer.assign(&tps);
        for tp in tps {
            let seek = start.unwrap_or(if a.from_beginning {
                Seek::Earliest
            } else {
                Seek::Latest
            });
            consumer.seek(tp, seek);
        }
    }
    let mut printed = 0u64;
    let mut last_record = Instant::now();
    let stdout = std::io::stdout();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let result: anyhow::Result<()> = async {
        loop {
            if a.max_messages.is_some_and(|m| printed >= m) {
                break;
            }
            if a.timeout_ms
                .is_some_and(|t| last_record.elapsed() >= Duration::from_millis(t))
            {
                break;
            }
            let records = tokio::select! {
                r = consumer.poll(Duration::from_millis(200)) => r?,
                _ = &mut interrupted => break,
            };
            // The idle timer starts once partitions are assigned (joining a group takes a while).
            if !records.is_empty() || consumer.assignment().is_empty() {
                last_record = Instant::now();
            }
            let mut out = stdout.lock();
            for r in records {
                if a.max_messages.is_some_and(|m| printed >= m) {
                    break;
                }
                if common.json() {
                    writeln!(out, "{}", record_json(&r))?;
                } else {
                    writeln!(out, "{}", template.render(&r))?;
                }
                printed += 1;
                consumer.store_offset((r.topic.clone(), r.partition), r.offset + 1);
            }
            out.flush()?;
            drop(out);
        }
        Ok(())
    }
    .await;
    // Commits the stored offsets and leaves the group.
    consumer.close().await?;
    if !common.json() {
        eprintln!("consumed {printed} records");
    }
    result
}

fn text(b: &Option<bytes::Bytes>) -> String {
    match b {
        Some(b) => String::from_utf8_lossy(b).into_owned(),
        None => "null".into(),
    }
}

fn record_json(r: &ConsumerRecord) -> serde_json::Value {
    let opt =
        |b: &Option<bytes::Bytes>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
    json!({
        "topic": r.topic,
        "partition": r.partition,
        "offset": r.offset,
        "timestamp": r.timestamp,
        "key": opt(&r.key),
        "value": opt(&r.value),
        "headers": r.headers.iter().map(|(k, v)| json!([k, opt(v)])).collect::<Vec<_>>(),
    })
}

enum Piece {
    Text(String),
    Field(Field),
}

#[derive(Clone, Copy)]
enum Field {
    Topic,
    Partition,
    Offset,
    Timestamp,
    Key,
    Value,
    Headers,
}

/// A parsed `--format` template.
struct Template(Vec<Piece>);

impl Template {
    fn parse(s: &str) -> anyhow::Result<Template> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('t') => text.push('\t'),
                    Some('n') => text.push('\n'),
                    Some('\\') => text.push('\\'),
                    Some(o) => {
                        text.push('\\');
                        text.push(o);
                    }
                    None => text.push('\\'),
                },
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => anyhow::bail!("--format has an unclosed {{ in {s:?}"),
                        }
                    }
                    let field = match name.as_str() {
                        "topic" => Field::Topic,
                        "partition" => Field::Partition,
                        "offset" => Field::Offset,
                        "timestamp" => Field::Timestamp,
                        "key" => Field::Key,
                        "value" => Field::Value,
                        "headers" => Field::Headers,
                        other => anyhow::bail!(
                            "--format has an unknown placeholder {{{other}}}; use {{topic}}, {{partition}}, {{offset}}, {{timestamp}}, {{key}}, {{value}} or {{headers}}"
                        ),
                    };
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                    pieces.push(Piece::Field(field));
                }
                c => text.push(c),
            }
        }
        pieces.push(Piece::Text(text));
        Ok(Template(pieces))
    }

    fn render(&self, r: &ConsumerRecord) -> String {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Field(f) => out.push_str(&match f {
                    Field::Topic => r.topic.clone(),
                    Field::Partition => r.partition.to_string(),
                    Field::Offset => r.offset.to_string(),
                    Field::Timestamp => r.timestamp.to_string(),
                    Field::Key => text(&r.key),
                    Field::Value => text(&r.value),
                    Field::Headers => r
                        .headers
                        .iter()
                        .map(|(k, v)| format!("{k}={}", text(v)))
                        .collect::<Vec<_>>()
                        .join(","),
                }),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_renders_fields_and_escapes() {
        let t = Template::parse("{partition}:{offset}\\t{key}={value} [{headers}]").unwrap();
        let r = ConsumerRecord {
            topic: "t".into(),
            partition: 1,
            offset: 7,
            timestamp: 5,
            log_append_time: false,
            key: None,
            value: Some(bytes::Bytes::from_static(b"v")),
            headers: vec![("h".into(), Some(bytes::Bytes::from_static(b"x")))],
        };
        assert_eq!(t.render(&r), "1:7\tnull=v [h=x]");
        assert!(Template::parse("{nope}").is_err());
        assert!(Template::parse("{value").is_err());
    }
}
