//! `strata perf produce|consume`: throughput and latency tests, like Kafka's perf tools.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use serde_json::json;
use strata_client::producer::DeliveryFuture;
use strata_client::{
    Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig, ProducerRecord, Seek,
};

use super::produce::ProducerOpts;
use super::table::Table;
use super::{print_json, Common};

#[derive(clap::Subcommand, Debug)]
pub enum PerfCommand {
    /// Produce fixed-size records as fast as allowed; report throughput and ack latency
    ///
    /// Examples:
    ///   strata perf produce --topic bench --num-records 1000000 --record-size 100
    ///   strata perf produce --topic bench --duration-secs 30 --throughput 50000 --producers 4
    ///   strata perf produce --topic bench --num-records 100000 --acks 1 --compression lz4 --json
    #[command(verbatim_doc_comment)]
    Produce(ProduceArgs),
    /// Read records; report throughput and end-to-end latency (now minus record timestamp)
    ///
    /// Examples:
    ///   strata perf consume --topic bench --num-records 1000000
    ///   strata perf consume --topic bench --duration-secs 10 --group perf
    #[command(verbatim_doc_comment)]
    Consume(ConsumeArgs),
    /// Produce at a fixed rate while consuming; report end-to-end latency (send to receive)
    ///
    /// Each record carries its send time in microseconds in its first 8 bytes; the consumer
    /// (all partitions, from the end) records receive time minus send time.
    ///
    /// Examples:
    ///   strata perf e2e --topic lat --throughput 10000 --duration-secs 30
    ///   strata perf e2e --topic lat --throughput 50000 --num-records 500000 --linger-ms 0 --json
    #[command(verbatim_doc_comment)]
    E2e(E2eArgs),
}

#[derive(clap::Args, Debug)]
pub struct E2eArgs {
    #[arg(long, short = 't')]
    topic: String,
    #[command(flatten)]
    run: RunOpts,
    /// Value size in bytes (at least 8: the send time).
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// Records per second to send (latency is measured below saturation).
    #[arg(long)]
    throughput: u64,
    /// Give up when no record arrives for this many milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    #[command(flatten)]
    producer: ProducerOpts,
}

/// How much to run, and how to report it.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("amount").required(true).args(["num_records", "duration_secs"])))]
pub struct RunOpts {
    /// Records in total (over all producers), then stop.
    #[arg(long, short = 'n')]
    num_records: Option<u64>,
    /// Run for this many seconds instead.
    #[arg(long)]
    duration_secs: Option<u64>,
    /// Print the report as JSON (same as --output json).
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct ProduceArgs {
    #[arg(long, short = 't')]
    topic: String,
    #[command(flatten)]
    run: RunOpts,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    /// Cap in records per second over all producers (-1: no cap).
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    throughput: i64,
    /// Producers sending in parallel.
    #[arg(long, default_value_t = 1)]
    producers: usize,
    #[command(flatten)]
    producer: ProducerOpts,
}

#[derive(clap::Args, Debug)]
pub struct ConsumeArgs {
    #[arg(long, short = 't')]
    topic: String,
    #[command(flatten)]
    run: RunOpts,
    /// Read as a member of this group (default: every partition from the beginning).
    #[arg(long, short = 'g')]
    group: Option<String>,
    /// Give up when no record arrives for this many milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
}

pub async fn run(common: &Common, command: PerfCommand) -> anyhow::Result<()> {
    match command {
        PerfCommand::Produce(a) => produce(common, a).await,
        PerfCommand::Consume(a) => consume(common, a).await,
        PerfCommand::E2e(a) => e2e(common, a).await,
    }
}

fn histogram() -> Histogram<u64> {
    // Microseconds from 1 µs to 1 hour, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// A report of one run.
struct Report {
    records: u64,
    bytes: u64,
    errors: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
    latency_name: &'static str,
    /// The client settings the run used, printed with the figures.
    settings: Option<serde_json::Value>,
}

impl Report {
    fn new(latency_name: &'static str) -> Self {
        Report {
            records: 0,
            bytes: 0,
            errors: 0,
            elapsed: Duration::ZERO,
            latency: histogram(),
            latency_name,
            settings: None,
        }
    }

    fn print(&self, as_json: bool) {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let ms = |us: u64| us as f64 / 1000.0;
        let q = |p: f64| ms(self.latency.value_at_quantile(p));
        let (avg, max) = if self.latency.is_empty() {
            (0.0, 0.0)
        } else {
            (self.latency.mean() / 1000.0, ms(self.latency.max()))
        };
        let rate = self.records as f64 / secs;
        let mb = self.bytes as f64 / (1024.0 * 1024.0) / secs;
        if as_json {
            print_json(&json!({
                "records": self.records,
                "errors": self.errors,
                "bytes": self.bytes,
                "elapsed_secs": secs,
                "records_per_sec": rate,
                "mb_per_sec": mb,
                "latency": self.latency_name,
                "settings": self.settings,
                "latency_ms": {
                    "avg": avg, "p50": q(0.50), "p95": q(0.95), "p99": q(0.99),
                    "p99_9": q(0.999), "max": max,
                },
            }));
            return;
        }
        let mut t = Table::new(&[
            "RECORDS",
            "ERRORS",
            "RECORDS/S",
            "MB/S",
            "AVG-MS",
            "P50-MS",
            "P95-MS",
            "P99-MS",
            "P99.9-MS",
            "MAX-MS",
        ]);
        let f = |v: f64| format!("{v:.2}");
        t.row(vec![
            self.records.to_string(),
            self.errors.to_string(),
            format!("{rate:.1}"),
            f(mb),
            f(avg),
            f(q(0.50)),
            f(q(0.95)),
            f(q(0.99)),
            f(q(0.999)),
            f(max),
        ]);
        println!("{} in {:.2} s ({})", self.records, secs, self.latency_name);
        if let Some(serde_json::Value::Object(settings)) = &self.settings {
            let list: Vec<String> = settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("settings: {}", list.join(" ").replace('"', ""));
        }
        t.print();
    }
}

/// The producer settings of `strata perf produce` where no option says otherwise: batches
/// of 1 MiB (as big as a broker takes by default, like librdkafka's batch.size) and larger
/// requests than the library's defaults, so that the run measures the broker and
/// not the client's request rate.
fn perf_defaults() -> ProducerConfig {
    ProducerConfig {
        batch_size: 1024 * 1024,
        max_request_size: 8 * 1024 * 1024,
        ..ProducerConfig::default()
    }
}

async fn produce(common: &Common, a: ProduceArgs) -> anyhow::Result<()> {
    if a.producers == 0 {
        anyhow::bail!("--producers must be at least 1");
    }
    let config = a.producer.config_over(perf_defaults())?;
    let client = common.connect().await?;
    super::topic_for_producing(&client, &a.topic).await?;
    let value = Bytes::from(
        (0..a.record_size)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    );
    let started = Instant::now();
    let deadline = a
        .run
        .duration_secs
        .map(|s| started + Duration::from_secs(s));
    let acked = Arc::new(AtomicU64::new(0));
    let progress = (!(a.run.json || common.json())).then(|| {
        tokio::spawn(progress(
            acked.clone(),
            a.run.num_records,
            a.run.duration_secs.map(Duration::from_secs),
        ))
    });
    let mut tasks = Vec::new();
    for i in 0..a.producers as u64 {
        let share = a
            .run
            .num_records
            .map(|n| n / a.producers as u64 + u64::from(i < n % a.producers as u64));
        let rate = (a.throughput > 0).then(|| a.throughput as f64 / a.producers as f64);
        let producer = Producer::new(client.clone(), config.clone());
        let topic = a.topic.clone();
        let value = value.clone();
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            // Deliveries complete in order per producer; a collector times each one.
            // Handed over in chunks (one channel message per 256 records; one each when
            // rate-capped, so the collector sees each record at once).
            type Sent = Vec<(Instant, DeliveryFuture)>;
            let chunk = if rate.is_some() { 1 } else { 256 };
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Sent>(100_000 / chunk);
            let collector = tokio::spawn(async move {
                let mut latency = histogram();
                let (mut ok, mut errors) = (0u64, 0u64);
                let mut first_error = None;
                // The clock is read after every wait and every 64 records, not per record:
                // the records of a batch are acknowledged together.
                let mut now = Instant::now();
                let mut since = 0u32;
                loop {
                    let sent_chunk = match rx.try_recv() {
                        Ok(next) => next,
                        Err(_) => match rx.recv().await {
                            Some(next) => {
                                since = 64;
                                next
                            }
                            None => break,
                        },
                    };
                    for (sent, delivery) in sent_chunk {
                        let mut delivery = std::pin::pin!(delivery);
                        let ready = std::future::poll_fn(|cx| {
                            std::task::Poll::Ready(delivery.as_mut().poll(cx))
                        })
                        .await;
                        let result = match ready {
                            std::task::Poll::Ready(r) => r,
                            std::task::Poll::Pending => {
                                since = 64;
                                delivery.await
                            }
                        };
                        since += 1;
                        if since >= 64 {
                            now = Instant::now();
                            since = 0;
                        }
                        match result {
                            Ok(_) => {
                                ok += 1;
                                acked.fetch_add(1, Ordering::Relaxed);
                                let us = now.saturating_duration_since(sent).as_micros() as u64;
                                latency.saturating_record(us.max(1));
                            }
                            Err(e) => {
                                errors += 1;
                                first_error.get_or_insert(e);
                            }
                        }
                    }
                }
                (ok, errors, latency, first_error)
            });
            let mut n = 0u64;
            let mut batch: Sent = Vec::with_capacity(chunk);
            let begin = Instant::now();
            loop {
                if share.is_some_and(|s| n >= s) || deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                if let Some(rate) = rate {
                    let due = begin + Duration::from_secs_f64(n as f64 / rate);
                    if due > Instant::now() {
                        tokio::time::sleep_until(due.into()).await;
                    }
                }
                let mut record = ProducerRecord::new(&topic, None, None);
                record.value = Some(value.clone());
                let sent = Instant::now();
                let delivery = producer.send(record).await?;
                batch.push((sent, delivery));
                if batch.len() >= chunk {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(chunk));
                    if tx.send(full).await.is_err() {
                        break;
                    }
                }
                n += 1;
            }
            if !batch.is_empty() {
                let _ = tx.send(batch).await;
            }
            producer.flush().await;
            drop(tx);
            anyhow::Ok(collector.await?)
        }));
    }
    let mut report = Report::new("ack latency");
    let mut first_error = None;
    for t in tasks {
        let (ok, errors, latency, error) = t.await??;
        if let Some(e) = error {
            first_error.get_or_insert(e);
        }
        report.records += ok;
        report.errors += errors;
        report.latency.add(&latency).expect("same histogram bounds");
    }
    if let Some(p) = progress {
        p.abort();
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            eprintln!();
        }
    }
    report.elapsed = started.elapsed();
    report.bytes = report.records * a.record_size as u64;
    report.settings = Some(json!({
        "acks": config.acks,
        "batch_size": config.batch_size,
        "linger_ms": config.linger.as_millis() as u64,
        "max_in_flight": config.max_in_flight,
        "max_request_size": config.max_request_size,
        "compression": format!("{:?}", config.compression).to_lowercase(),
        "producers": a.producers,
    }));
    report.print(a.run.json || common.json());
    if report.errors > 0 {
        let e = first_error.map(|e| e.to_string()).unwrap_or_default();
        anyhow::bail!("{} records were not acknowledged: {e}", report.errors);
    }
    Ok(())
}

/// Shows progress on stderr while records are acknowledged: on a terminal, a bar redrawn in
/// place 5 times a second (by records when `total` is known, else by `duration`); otherwise
/// (logs, pipes) a line every 5 seconds.
async fn progress(acked: Arc<AtomicU64>, total: Option<u64>, duration: Option<Duration>) {
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let every = if tty {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(5)
    };
    let started = Instant::now();
    let (mut last, mut last_at) = (0u64, Instant::now());
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let now = acked.load(Ordering::Relaxed);
        let rate = (now - last) as f64 / last_at.elapsed().as_secs_f64().max(1e-9);
        (last, last_at) = (now, Instant::now());
        if !tty {
            eprintln!("{now} records acknowledged, {rate:.1} records/s");
            continue;
        }
        let done = match (total, duration) {
            (Some(t), _) if t > 0 => now as f64 / t as f64,
            (_, Some(d)) => started.elapsed().as_secs_f64() / d.as_secs_f64().max(1e-9),
            _ => 0.0,
        }
        .clamp(0.0, 1.0);
        eprint!("\r{} {now} records, {rate:.0} records/s   ", bar(done, 30));
    }
}

/// `[#########.....] 45%` for a fraction done.
fn bar(done: f64, width: usize) -> String {
    let filled = ((done * width as f64).round() as usize).min(width);
    format!(
        "[{}{}] {:>3.0}%",
        "#".repeat(filled),
        ".".repeat(width - filled),
        done * 100.0
    )
}

async fn consume(common: &Common, a: ConsumeArgs) -> anyhow::Result<()> {
    let client = common.connect().await?;
    let topic = client.fresh_topic(&a.topic).await?;
    let mut consumer = Consumer::new(
        client,
        ConsumerConfig {
            group_id: a.group.clone(),
            auto_offset_reset: OffsetReset::Earliest,
            ..Default::default()
        },
    );
    if a.group.is_some() {
        consumer.subscribe(std::slice::from_ref(&a.topic))?;
    } else {
        assign_all(
            &mut consumer,
            &a.topic,
            topic.partitions.iter().map(|p| p.id),
            Seek::Earliest,
        );
    }
    let started = Instant::now();
    let deadline = a
        .run
        .duration_secs
        .map(|s| started + Duration::from_secs(s));
    let mut report = Report::new("end-to-end latency");
    let mut last = Instant::now();
    loop {
        if a.run.num_records.is_some_and(|n| report.records >= n)
            || deadline.is_some_and(|d| Instant::now() >= d)
        {
            break;
        }
        if last.elapsed() >= Duration::from_millis(a.timeout_ms) {
            eprintln!(
                "no record for {} ms; stopping after {} records",
                a.timeout_ms, report.records
            );
            break;
        }
        let records = consumer.poll(Duration::from_millis(100)).await?;
        if records.is_empty() && consumer.assignment().is_empty() {
            last = Instant::now();
        }
        let now = strata_client::producer::now_ms();
        if !records.is_empty() {
            last = Instant::now();
        }
        for r in records {
            report.records += 1;
            report.bytes += (r.value.as_ref().map_or(0, |v| v.len())
                + r.key.as_ref().map_or(0, |k| k.len())) as u64;
            let us = (now - r.timestamp).max(0) as u64 * 1000;
            report.latency.saturating_record(us.max(1));
        }
    }
    report.elapsed = started.elapsed();
    consumer.close().await?;
    report.print(a.run.json || common.json());
    Ok(())
}

/// Assigns every partition of `topic` to `consumer`, positioned by `seek`.
fn assign_all(
    consumer: &mut Consumer,
    topic: &str,
    partitions: impl Iterator<Item = i32>,
    seek: Seek,
) {
    let tps: Vec<(String, i32)> = partitions.map(|p| (topic.to_string(), p)).collect();
    consumer.assign(&tps);
    for tp in tps {
        consumer.seek(tp, seek);
    }
}

fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

async fn e2e(common: &Common, a: E2eArgs) -> anyhow::Result<()> {
    if a.record_size < 8 {
        anyhow::bail!("--record-size must be at least 8 (the send time)");
    }
    if a.throughput == 0 {
        anyhow::bail!("--throughput must be at least 1 record per second");
    }
    let total = match (a.run.num_records, a.run.duration_secs) {
        (Some(n), _) => n,
        (None, Some(secs)) => a.throughput.saturating_mul(secs),
        (None, None) => unreachable!("clap requires one of them"),
    };
    let config = a.producer.config_over(perf_defaults())?;
    let client = common.connect().await?;
    let topic = client.fresh_topic(&a.topic).await?;
    let mut consumer = Consumer::new(
        client.clone(),
        ConsumerConfig {
            auto_offset_reset: OffsetReset::Latest,
            ..Default::default()
        },
    );
    assign_all(
        &mut consumer,
        &a.topic,
        topic.partitions.iter().map(|p| p.id),
        Seek::Latest,
    );
    // Resolve the end offsets before the first record is sent.
    consumer.poll(Duration::from_millis(200)).await?;

    let producer = Producer::new(client, config.clone());
    let topic_name = a.topic.clone();
    let padding = Bytes::from(vec![b'x'; a.record_size - 8]);
    let rate = a.throughput as f64;
    let sender = tokio::spawn(async move {
        let begin = Instant::now();
        for n in 0..total {
            let due = begin + Duration::from_secs_f64(n as f64 / rate);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
            let mut value = Vec::with_capacity(8 + padding.len());
            value.extend_from_slice(&now_micros().to_be_bytes());
            value.extend_from_slice(&padding);
            let mut record = ProducerRecord::new(&topic_name, None, None);
            record.value = Some(Bytes::from(value));
            drop(producer.send(record).await?);
        }
        producer.flush().await;
        anyhow::Ok(())
    });

    let started = Instant::now();
    let mut report = Report::new("end-to-end latency (send to receive)");
    report.settings = Some(json!({
        "throughput": a.throughput,
        "linger_ms": config.linger.as_millis() as u64,
        "batch_size": config.batch_size,
        "acks": config.acks,
    }));
    let mut last = Instant::now();
    while report.records < total {
        if last.elapsed() >= Duration::from_millis(a.timeout_ms) {
            eprintln!(
                "no record for {} ms; stopping after {} of {total} records",
                a.timeout_ms, report.records
            );
            break;
        }
        let records = consumer.poll(Duration::from_millis(100)).await?;
        if records.is_empty() {
            continue;
        }
        last = Instant::now();
        let now = now_micros();
        for r in records {
            let Some(value) = r.value.as_ref().filter(|v| v.len() >= 8) else {
                continue; // not one of ours
            };
            let sent = u64::from_be_bytes(value[..8].try_into().expect("8 bytes"));
            report.records += 1;
            report.bytes += value.len() as u64;
            report
                .latency
                .saturating_record(now.saturating_sub(sent).max(1));
        }
    }
    report.elapsed = started.elapsed();
    sender.await??;
    consumer.close().await?;
    report.errors = total.saturating_sub(report.records);
    report.print(a.run.json || common.json());
    if report.errors > 0 {
        anyhow::bail!("{} of {total} records were not received", report.errors);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn progress_bar() {
        assert_eq!(super::bar(0.0, 4), "[....]   0%");
        assert_eq!(super::bar(0.5, 4), "[##..]  50%");
        assert_eq!(super::bar(1.0, 4), "[####] 100%");
    }
}
