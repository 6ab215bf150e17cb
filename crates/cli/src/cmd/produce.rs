//! `strata produce`: records from stdin or a file, one per line.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use strata_client::producer::parse_compression;
use strata_client::{Producer, ProducerConfig, ProducerRecord};

use super::{key_value, print_json, Common};

/// Produce records, one per input line
///
/// Examples:
///   echo hello | strata produce orders
///   strata produce orders --key-separator : < keyed.txt        (lines like user1:hello)
///   strata produce orders --file data.txt --header source=import --acks 1 --compression zstd
///   strata produce orders --partition 2
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct ProduceArgs {
    /// Topic to write to; a missing one is created when the broker allows auto-creation.
    topic: String,
    /// Read lines from this file instead of stdin.
    #[arg(long, short = 'f')]
    file: Option<PathBuf>,
    /// Split each line at the first SEP into key and value (no key without this option).
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// A header added to every record, KEY=VALUE; repeatable.
    #[arg(long = "header", short = 'H', value_name = "KEY=VALUE")]
    headers: Vec<String>,
    /// Write every record to this partition (default: by key, or spread when keyless).
    #[arg(long, short = 'p')]
    partition: Option<i32>,
    #[command(flatten)]
    producer: ProducerOpts,
}

/// Producer settings shared by `produce` and `perf produce`.
#[derive(clap::Args, Debug)]
pub struct ProducerOpts {
    /// Acknowledgements: all (-1), 1 or 0.
    #[arg(long, default_value = "all", value_parser = parse_acks)]
    acks: i16,
    /// Compression: none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    compression: String,
    /// How long a batch waits for more records, in milliseconds [default: 5].
    #[arg(long)]
    linger_ms: Option<u64>,
    /// Bytes per partition batch [default: 16384; strata perf: 1048576].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Produce requests in flight per broker connection [default: 5].
    #[arg(long)]
    max_in_flight: Option<usize>,
}

impl ProducerOpts {
    /// The settings given, the rest from `defaults`.
    pub fn config_over(&self, defaults: ProducerConfig) -> anyhow::Result<ProducerConfig> {
        if self.max_in_flight == Some(0) {
            anyhow::bail!("--max-in-flight must be at least 1");
        }
        Ok(ProducerConfig {
            acks: self.acks,
            linger: self
                .linger_ms
                .map_or(defaults.linger, Duration::from_millis),
            batch_size: self.batch_size.unwrap_or(defaults.batch_size),
            max_in_flight: self.max_in_flight.unwrap_or(defaults.max_in_flight),
            compression: parse_compression(&self.compression)?,
            ..defaults
        })
    }

    pub fn config(&self) -> anyhow::Result<ProducerConfig> {
        self.config_over(ProducerConfig::default())
    }
}

fn parse_acks(s: &str) -> Result<i16, String> {
    match s {
        "all" | "-1" => Ok(-1),
        "1" => Ok(1),
        "0" => Ok(0),
        _ => Err(format!("{s:?} is not an acks setting; use all, 1 or 0")),
    }
}

pub async fn run(common: &Common, a: ProduceArgs) -> anyhow::Result<()> {
    let config = a.producer.config()?;
    let headers: Vec<(String, Option<Bytes>)> = a
        .headers
        .iter()
        .map(|h| key_value(h, "--header").map(|(k, v)| (k, Some(Bytes::from(v)))))
        .collect::<anyhow::Result<_>>()?;
    if matches!(a.key_separator.as_deref(), Some("")) {
        anyhow::bail!("--key-separator must not be empty");
    }
    let input: Box<dyn BufRead + Send> = match &a.file {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?,
        )),
        None => Box::new(std::io::BufReader::new(std::io::stdin())),
    };
    let client = common.connect().await?;
    // Create a missing topic now (or fail early, with a clear message, if the broker will not).
    let topic = super::topic_for_producing(&client, &a.topic).await?;
    if let Some(p) = a.partition {
        if !topic.partitions.iter().any(|x| x.id == p) {
            anyhow::bail!(
                "partition {p} does not exist: topic {} has partitions 0 to {}",
                a.topic,
                topic.partitions.len() as i32 - 1
            );
        }
    }
    let producer = Producer::new(client, config);
    // Lines are read on a blocking thread and handed over in order.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<String>>(1024);
    std::thread::spawn(move || {
        for line in input.lines() {
            let failed = line.is_err();
            if tx.blocking_send(line).is_err() || failed {
                break;
            }
        }
    });
    let mut deliveries = Vec::new();
    let mut line_no = 0usize;
    while let Some(line) = rx.recv().await {
        let line = line.map_err(|e| anyhow::anyhow!("cannot read input: {e}"))?;
        line_no += 1;
        let (key, value) = match &a.key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(k.as_bytes()), v.as_bytes()),
                None => anyhow::bail!(
                    "line {line_no} has no key separator {sep:?}; write KEY{sep}VALUE lines or leave out --key-separator"
                ),
            },
            None => (None, line.as_bytes()),
        };
        let mut record = ProducerRecord::new(&a.topic, key, Some(value));
        record.partition = a.partition;
        record.headers = headers.clone();
        deliveries.push(producer.send(record).await?);
    }
    producer.flush().await;
    let mut per_partition: BTreeMap<i32, u64> = BTreeMap::new();
    let mut first_error = None;
    let mut failed = 0u64;
    for d in deliveries {
        match d.await {
            Ok(m) => *per_partition.entry(m.partition).or_default() += 1,
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let sent: u64 = per_partition.values().sum();
    if common.json() {
        print_json(&json!({
            "topic": a.topic,
            "records": sent,
            "failed": failed,
            "partitions": per_partition,
        }));
    } else {
        eprintln!("produced {sent} records to {}", a.topic);
    }
    match first_error {
        Some(e) => anyhow::bail!("{failed} records were not written: {e}"),
        None => Ok(()),
    }
}
