//! The client subcommands (`strata topics|produce|consume|groups|configs|cluster`) run as
//! subprocesses against a real broker; their tables are compared with expected text (unstable
//! columns normalised) and their `--output json` parsed.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use support::TestBroker;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `strata ARGS` against `port` with `stdin`, killed after 30 s.
fn strata_at(port: u16, args: &[&str], stdin: &str) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .env("STRATA_BOOTSTRAP_SERVER", format!("127.0.0.1:{port}"))
        .env_remove("STRATA_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start strata");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).expect("write stdin");
    drop(input);
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(out) => out.expect("strata output"),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("strata {args:?} did not finish within 30 s");
        }
    };
    let run = Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    assert!(
        !run.stderr.contains("panicked"),
        "strata {args:?} panicked:\n{}",
        run.stderr
    );
    run
}

fn strata(b: &TestBroker, args: &[&str]) -> Run {
    strata_at(b.port, args, "")
}

/// Runs a command that must succeed and returns its stdout.
fn ok(b: &TestBroker, args: &[&str]) -> String {
    ok_in(b, args, "")
}

fn ok_in(b: &TestBroker, args: &[&str], stdin: &str) -> String {
    let r = strata_at(b.port, args, stdin);
    assert_eq!(
        r.code, 0,
        "strata {args:?} failed:\n{}{}",
        r.stdout, r.stderr
    );
    r.stdout
}

/// Runs a command that must fail with exit code 1 and returns its stderr.
fn fails(b: &TestBroker, args: &[&str]) -> String {
    let r = strata(b, args);
    assert_eq!(
        r.code, 1,
        "strata {args:?} should fail:\n{}{}",
        r.stdout, r.stderr
    );
    assert!(r.stderr.starts_with("error: "), "{}", r.stderr);
    r.stderr
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

/// Replaces the value after each `label` (up to two spaces or the line's end) with `<label>`.
fn normalise(text: &str, labels: &[&str]) -> String {
    let mut out = text.to_string();
    for label in labels {
        while let Some(start) = out.find(&format!("{label} ")) {
            let from = start + label.len() + 1;
            let end = out[from..]
                .find(['\n', ' '])
                .map_or(out.len(), |i| from + i);
            out.replace_range(start..end, &format!("<{}>", label.trim_end_matches(':')));
        }
    }
    out
}

/// A field of partition 0 in `groups describe GROUP --output json`.
fn group_field(b: &TestBroker, group: &str, field: &str) -> Value {
    json(&ok(b, &["groups", "describe", group, "-o", "json"]))[0]["partitions"][0][field].clone()
}

/// `groups reset-offsets GROUP --topic TOPIC ARGS --execute`.
fn reset(b: &TestBroker, group: &str, topic: &str, args: &[&str]) -> String {
    let mut all = vec!["groups", "reset-offsets", group, "--topic", topic];
    all.extend_from_slice(args);
    all.push("--execute");
    ok(b, &all)
}

fn broker() -> TestBroker {
    TestBroker::start(&["group.initial.rebalance.delay.ms=0", "num.partitions=1"])
}

#[test]
fn topics_create_list_describe_alter_delete() {
    let b = broker();
    assert_eq!(
        ok(
            &b,
            &[
                "topics",
                "create",
                "orders",
                "--partitions",
                "3",
                "--config",
                "retention.ms=3600000"
            ]
        ),
        "created topic orders\n"
    );
    ok(&b, &["topics", "create", "audit"]);
    assert_eq!(
        ok(&b, &["topics", "list"]),
        "TOPIC   PARTITIONS  REPLICATION-FACTOR\n\
         audit   1           1\n\
         orders  3           1\n"
    );
    ok_in(&b, &["produce", "orders", "--partition", "1"], "one\ntwo\n");
    let describe = ok(&b, &["topics", "describe", "orders"]);
    let lines: Vec<&str> = describe.lines().collect();
    assert_eq!(
        normalise(lines[0], &["Id:"]),
        "Topic: orders  <Id>  Partitions: 3  Replication: 1  Configs: retention.ms=3600000"
    );
    // The size column depends on the batch encoding: check it is there, then blank it.
    let size = lines[3]
        .split_whitespace()
        .last()
        .expect("size")
        .parse::<u64>()
        .expect("size");
    assert!(size > 0, "{describe}");
    assert_eq!(
        lines[1..].join("\n").replace(&format!(" {size}"), " N"),
        "PARTITION  LEADER  REPLICAS  ISR  LOG-START  LOG-END  SIZE\n\
         0          1       1         1    0          0        0\n\
         1          1       1         1    0          2        N\n\
         2          1       1         1    0          0        0"
    );
    let described = json(&ok(
        &b,
        &["topics", "describe", "orders", "--output", "json"],
    ));
    let p1 = &described[0]["partitions"][1];
    assert_eq!(p1["log_end_offset"], 2);
    assert_eq!(p1["log_start_offset"], 0);
    assert_eq!(p1["size_bytes"], size);
    assert_eq!(p1["leader"], 1);
    assert_eq!(described[0]["configs"]["retention.ms"], "3600000");

    assert_eq!(
        ok(
            &b,
            &[
                "topics",
                "alter",
                "orders",
                "--partitions",
                "4",
                "--delete-config",
                "retention.ms"
            ]
        ),
        "altered topic orders: partitions 3 -> 4, deleted retention.ms\n"
    );
    let listed = json(&ok(&b, &["topics", "list", "-o", "json"]));
    assert_eq!(listed[1]["name"], "orders");
    assert_eq!(listed[1]["partitions"], 4);

    // Errors say what went wrong and what to do.
    let e = fails(&b, &["topics", "create", "orders"]);
    assert!(
        e.contains("already exists") && e.contains("--if-not-exists"),
        "{e}"
    );
    ok(&b, &["topics", "create", "orders", "--if-not-exists"]);
    let e = fails(&b, &["topics", "describe", "nope"]);
    assert!(
        e.contains("\"nope\"") && e.contains("does not exist") && e.contains("strata topics list"),
        "{e}"
    );
    let e = fails(&b, &["topics", "alter", "orders", "--partitions", "2"]);
    assert!(e.contains("can only raise"), "{e}");

    assert_eq!(
        ok(&b, &["topics", "delete", "orders", "audit"]),
        "deleted topic orders\ndeleted topic audit\n"
    );
    assert_eq!(
        ok(&b, &["topics", "list"]),
        "TOPIC  PARTITIONS  REPLICATION-FACTOR\n"
    );
    fails(&b, &["topics", "delete", "orders"]);
    ok(&b, &["topics", "delete", "orders", "--if-exists"]);
}

#[test]
fn produce_and_consume() {
    let b = broker();
    ok(&b, &["topics", "create", "events", "--partitions", "1"]);
    let produced = ok_in(
        &b,
        &[
            "produce",
            "events",
            "--key-separator",
            ":",
            "--header",
            "src=test",
            "--compression",
            "zstd",
            "-o",
            "json",
        ],
        "k1:v1\nk2:v2\nk3:v3\n",
    );
    assert_eq!(json(&produced)["records"], 3);
    ok_in(&b, &["produce", "events", "--acks", "1"], "plain\n");
    assert_eq!(
        ok(
            &b,
            &[
                "consume",
                "events",
                "--from-beginning",
                "--max-messages",
                "4",
                "--format",
                "{partition}:{offset} {key}={value} [{headers}]"
            ]
        ),
        "0:0 k1=v1 [src=test]\n0:1 k2=v2 [src=test]\n0:2 k3=v3 [src=test]\n0:3 null=plain []\n"
    );
    assert_eq!(
        ok(
            &b,
            &[
                "consume",
                "events",
                "--partition",
                "0",
                "--offset",
                "2",
                "--max-messages",
                "1"
            ]
        ),
        "v3\n"
    );
    let lines = ok(
        &b,
        &[
            "consume",
            "events",
            "--from-beginning",
            "-n",
            "1",
            "-o",
            "json",
        ],
    );
    let r = json(lines.lines().next().expect("a record"));
    assert_eq!(r["key"], "k1");
    assert_eq!(r["value"], "v1");
    assert_eq!(r["offset"], 0);
    assert_eq!(r["headers"][0], serde_json::json!(["src", "test"]));
    assert!(r["timestamp"].as_i64().expect("timestamp") > 1_600_000_000_000);

    // Without --from-beginning a consumer follows new records only.
    assert_eq!(ok(&b, &["consume", "events", "--timeout-ms", "500"]), "");

    // Keys land where the Java client's murmur2 partitioner puts them.
    ok(&b, &["topics", "create", "keyed", "--partitions", "7"]);
    ok_in(
        &b,
        &["produce", "keyed", "--key-separator", ":"],
        "key:x\na:y\nfoobar:z\n",
    );
    let mut got: Vec<String> = ok(
        &b,
        &[
            "consume",
            "keyed",
            "--from-beginning",
            "-n",
            "3",
            "--format",
            "{key} {partition}",
        ],
    )
    .lines()
    .map(str::to_string)
    .collect();
    got.sort();
    assert_eq!(got, vec!["a 5", "foobar 0", "key 4"]);

    let e = fails(&b, &["consume", "nope", "--timeout-ms", "100"]);
    assert!(e.contains("does not exist"), "{e}");
    let r = strata_at(
        b.port,
        &["produce", "events", "--key-separator", ":"],
        "novalue\n",
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("line 1 has no key separator"),
        "{}",
        r.stderr
    );
    let e = fails(&b, &["produce", "events", "--partition", "9"]);
    assert!(e.contains("partition 9 does not exist"), "{e}");
    let e = fails(&b, &["consume", "events", "--format", "{nope}"]);
    assert!(e.contains("unknown placeholder"), "{e}");
}

#[test]
fn groups_describe_reset_and_delete() {
    let b = broker();
    ok(&b, &["topics", "create", "work", "--partitions", "1"]);
    ok_in(&b, &["produce", "work"], "a\nb\nc\nd\ne\n");
    assert_eq!(
        ok(
            &b,
            &[
                "consume",
                "work",
                "--group",
                "g",
                "--from-beginning",
                "--max-messages",
                "3"
            ]
        ),
        "a\nb\nc\n"
    );
    let listed = ok(&b, &["groups", "list"]);
    assert!(
        listed.starts_with("GROUP  STATE  PROTOCOL-TYPE\ng      Empty  "),
        "{listed}"
    );
    assert_eq!(
        json(&ok(&b, &["groups", "list", "-o", "json"]))[0]["group"],
        "g"
    );
    assert_eq!(
        ok(&b, &["groups", "describe", "g"]),
        "Group: g  State: Empty  Members: 0\n\
         GROUP  TOPIC  PARTITION  CURRENT-OFFSET  LOG-END-OFFSET  LAG  CONSUMER-ID  HOST  CLIENT-ID\n\
         g      work   0          3               5               2    -            -     -\n"
    );
    // The group resumes where it stopped.
    assert_eq!(
        ok(&b, &["consume", "work", "--group", "g", "-n", "1"]),
        "d\n"
    );
    assert_eq!(group_field(&b, "g", "current_offset"), 4);
    assert_eq!(group_field(&b, "g", "lag"), 1);

    // Dry run by default.
    let r = strata(
        &b,
        &[
            "groups",
            "reset-offsets",
            "g",
            "-t",
            "work",
            "--to-earliest",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "GROUP  TOPIC  PARTITION  PREVIOUS-OFFSET  NEW-OFFSET\n\
         g      work   0          4                0\n"
    );
    assert!(r.stderr.contains("dry run"), "{}", r.stderr);
    assert_eq!(group_field(&b, "g", "current_offset"), 4);
    let shifted = json(&reset(
        &b,
        "g",
        "work:0",
        &["--shift-by", "-3", "-o", "json"],
    ));
    assert_eq!(shifted["partitions"][0]["new_offset"], 1);
    assert_eq!(group_field(&b, "g", "current_offset"), 1);
    ok(
        &b,
        &[
            "groups",
            "reset-offsets",
            "g",
            "--all-topics",
            "--to-latest",
            "--execute",
        ],
    );
    assert_eq!(group_field(&b, "g", "lag"), 0);
    reset(&b, "g", "work", &["--to-offset", "2"]);
    assert_eq!(
        ok(&b, &["consume", "work", "--group", "g", "-n", "1"]),
        "c\n"
    );
    // A timestamp before every record resets to the log start.
    reset(&b, "g", "work", &["--to-datetime", "2001-01-01T00:00:00Z"]);
    assert_eq!(group_field(&b, "g", "current_offset"), 0);

    assert_eq!(ok(&b, &["groups", "delete", "g"]), "deleted group g\n");
    let e = fails(&b, &["groups", "describe", "g"]);
    assert!(
        e.contains("does not exist") && e.contains("strata groups list"),
        "{e}"
    );
    let r = strata(&b, &["groups", "reset-offsets", "g", "--topic", "work"]);
    assert_eq!(
        r.code, 2,
        "a missing --to-* is a usage error:\n{}",
        r.stderr
    );
}

#[test]
fn configs_and_cluster() {
    let b = broker();
    ok(&b, &["topics", "create", "t"]);
    assert_eq!(
        ok(&b, &["configs", "describe", "--topic", "t"]),
        "NAME  VALUE  SOURCE\n"
    );
    let alter = |args: &[&str]| {
        let mut all = vec!["configs", "alter", "--topic", "t"];
        all.extend_from_slice(args);
        ok(&b, &all)
    };
    assert_eq!(
        alter(&[
            "--set",
            "retention.ms=1000",
            "--set",
            "cleanup.policy=compact"
        ]),
        "altered configs of topic t\n"
    );
    assert_eq!(
        ok(&b, &["configs", "describe", "--topic", "t"]),
        "NAME            VALUE    SOURCE\n\
         cleanup.policy  compact  DYNAMIC_TOPIC_CONFIG\n\
         retention.ms    1000     DYNAMIC_TOPIC_CONFIG\n"
    );
    alter(&["--delete", "cleanup.policy"]);
    let all = json(&ok(
        &b,
        &["configs", "describe", "--topic", "t", "--all", "-o", "json"],
    ));
    let entries = all.as_array().expect("array");
    let find = |n: &str| {
        entries
            .iter()
            .find(|e| e["name"] == n)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(find("retention.ms")["value"], "1000");
    assert_eq!(find("cleanup.policy")["source"], "DEFAULT_CONFIG");
    let broker_configs = json(&ok(
        &b,
        &[
            "configs", "describe", "--broker", "1", "--all", "-o", "json",
        ],
    ));
    assert!(broker_configs
        .as_array()
        .expect("array")
        .iter()
        .any(|e| e["name"] == "log.dirs"));
    let e = fails(&b, &["configs", "describe", "--topic", "nope"]);
    assert!(e.contains("does not exist"), "{e}");
    assert_eq!(strata(&b, &["configs", "alter", "--topic", "t"]).code, 1);

    let text = ok(&b, &["cluster", "describe"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        normalise(lines[0], &["Cluster:"]),
        "<Cluster>  Controller: 1"
    );
    let port = b.port.to_string();
    let cells = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(cells(lines[1]), ["ID", "HOST", "PORT", "RACK"]);
    assert_eq!(cells(lines[2]), ["1", "127.0.0.1", port.as_str(), "-"]);
    assert_eq!(lines[3], "", "{text}");
    // One voter, the leader, with no lag; the epoch is its Raft term.
    let quorum = cells(lines[4]);
    assert_eq!(quorum[..5], ["Metadata", "quorum:", "leader", "1", "epoch"]);
    let epoch: i64 = quorum[5].parse().expect("epoch");
    assert!(epoch >= 1, "{text}");
    let hw = quorum[8].clone();
    assert_eq!(
        cells(lines[5]),
        ["REPLICA", "ROLE", "LOG", "END", "OFFSET", "LAG"]
    );
    assert_eq!(cells(lines[6]), ["1", "leader", hw.as_str(), "0"]);
    assert_eq!(lines[7], "");
    assert_eq!(
        cells(lines[8]).join(" "),
        "Partitions: 1 in 1 topics offline: 0 under-replicated: 0 under min ISR: 0"
    );
    assert_eq!(lines.len(), 9, "{text}");
    let c = json(&ok(&b, &["cluster", "describe", "--output", "json"]));
    assert_eq!(c["controller_id"], 1);
    assert_eq!(c["brokers"][0]["port"], b.port);
    assert!(!c["cluster_id"].as_str().expect("id").is_empty());
    assert_eq!(c["quorum"]["leader_id"], 1);
    assert_eq!(c["quorum"]["leader_epoch"], epoch);
    let hw = c["quorum"]["high_watermark"].as_i64().expect("hw");
    assert!(hw > 0, "{c}");
    let voters = c["quorum"]["voters"].as_array().expect("voters");
    assert_eq!(voters.len(), 1, "{c}");
    assert_eq!(voters[0]["id"], 1);
    assert_eq!(voters[0]["log_end_offset"], hw);
    assert_eq!(voters[0]["lag"], 0);
    assert_eq!(c["quorum"]["observers"], serde_json::json!([]));
    assert_eq!(c["quorum_error"], Value::Null);
    let parts = &c["partitions"];
    assert_eq!(
        (parts["topics"].clone(), parts["total"].clone()),
        (1.into(), 1.into())
    );
    for kind in ["offline", "under_replicated", "under_min_isr"] {
        assert_eq!(parts[kind], serde_json::json!([]), "{kind}: {c}");
    }

    // A topic that asks for more in-sync replicas than it has is under min ISR (and only
    // that: its one replica is in sync and leads).
    ok(
        &b,
        &[
            "topics",
            "create",
            "strict",
            "--partitions",
            "2",
            "--config",
            "min.insync.replicas=2",
        ],
    );
    let c = json(&ok(&b, &["cluster", "describe", "-o", "json"]));
    let under = c["partitions"]["under_min_isr"].as_array().expect("list");
    assert_eq!(under.len(), 2, "{c}");
    assert_eq!(under[0]["topic"], "strict");
    assert_eq!(under[0]["isr"], serde_json::json!([1]));
    assert_eq!(under[0]["min_isr"], 2);
    assert_eq!(c["partitions"]["under_replicated"], serde_json::json!([]));
    assert_eq!(c["partitions"]["offline"], serde_json::json!([]));
    let text = ok(&b, &["cluster", "describe"]);
    assert!(
        text.contains("under min ISR: 2\n\nUnder-min-ISR partitions:\n"),
        "{text}"
    );
    let lines: Vec<&str> = text.lines().collect();
    let header = lines
        .iter()
        .position(|l| l.starts_with("TOPIC"))
        .expect("table");
    assert_eq!(
        cells(lines[header]),
        [
            "TOPIC",
            "PARTITION",
            "LEADER",
            "REPLICAS",
            "ISR",
            "MIN",
            "ISR"
        ]
    );
    assert_eq!(
        cells(lines[header + 1]),
        ["strict", "0", "1", "1", "1", "2"]
    );
    assert_eq!(
        cells(lines[header + 2]),
        ["strict", "1", "1", "1", "1", "2"]
    );
}

#[test]
fn broker_down_and_bad_arguments() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let r = strata_at(port, &["topics", "list"], "");
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("cannot reach any bootstrap server")
            && r.stderr.contains("check that the cluster is running"),
        "{}",
        r.stderr
    );
    let r = strata_at(port, &["topics", "list", "-b", "nohost"], "");
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("\"nohost\" is not host:port"),
        "{}",
        r.stderr
    );
    let r = strata_at(port, &["topics", "create", "x", "--partitions", "lots"], "");
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--partitions"), "{}", r.stderr);
    let r = strata_at(port, &["produce", "x", "--acks", "2"], "");
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("use all, 1 or 0"), "{}", r.stderr);
    let r = strata_at(port, &["consume"], "");
    assert_eq!(r.code, 2);
    let r = strata_at(port, &["topics", "--help"], "");
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("describe") && r.stdout.contains("--bootstrap-server"));
    let r = strata_at(port, &["groups", "reset-offsets", "--help"], "");
    assert!(
        r.stdout
            .contains("Examples:\n  strata groups reset-offsets"),
        "{}",
        r.stdout
    );
}

/// Runs a command given as one string of space-separated words; it must succeed.
fn ok_words(b: &TestBroker, command: &str) -> String {
    ok(b, &command.split(' ').collect::<Vec<_>>())
}

#[test]
fn perf_counts_every_record() {
    let b = broker();
    ok(&b, &["topics", "create", "bench", "--partitions", "3"]);
    let produced = json(&ok_words(
        &b,
        "perf produce -t bench -n 3000 --record-size 64 --producers 3 --batch-size 2048 --json",
    ));
    assert_eq!(produced["records"], 3000);
    assert_eq!(produced["errors"], 0);
    assert_eq!(produced["bytes"], 3000 * 64);
    let latency = &produced["latency_ms"];
    for q in ["p50", "p95", "p99", "p99_9"] {
        assert!(latency[q].as_f64().expect("number") <= latency["max"].as_f64().expect("max"));
    }
    let described = json(&ok(&b, &["topics", "describe", "bench", "-o", "json"]));
    let written: i64 = described[0]["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| p["log_end_offset"].as_i64().expect("offset"))
        .sum();
    assert_eq!(written, 3000, "every acknowledged record is in the log");
    let consumed = json(&ok_words(&b, "perf consume -t bench -n 3000 --json"));
    assert_eq!(consumed["records"], 3000);
    assert_eq!(consumed["bytes"], 3000 * 64);
    let text = ok_words(
        &b,
        "perf produce -t bench -n 100 --acks 1 --compression lz4",
    );
    assert!(text.starts_with("100 in "), "{text}");
    assert!(text.contains("RECORDS  ERRORS  RECORDS/S"), "{text}");
    // End to end: every record sent at the rate is received once, timed send to receive.
    let e2e = json(&ok_words(
        &b,
        "perf e2e -t bench -n 2000 --throughput 4000 --record-size 32 --linger-ms 0 --json",
    ));
    assert_eq!(e2e["records"], 2000);
    assert_eq!(e2e["errors"], 0);
    assert!(e2e["latency_ms"]["p50"].as_f64().expect("number") > 0.0);
    let e = fails(
        &b,
        &[
            "perf",
            "e2e",
            "-t",
            "bench",
            "-n",
            "1",
            "--throughput",
            "1",
            "--record-size",
            "4",
        ],
    );
    assert!(e.contains("at least 8"), "{e}");
}

/// Like Kafka's console producer and perf test, `produce` and `perf produce` create a missing
/// topic when the broker allows auto-creation, and say so; otherwise they stop with a message
/// naming the setting and the command that creates the topic.
#[test]
fn producing_to_a_missing_topic_creates_it_when_the_broker_allows() {
    let b = TestBroker::start(&["num.partitions=3"]);
    let r = strata_at(b.port, &["produce", "fresh"], "one\ntwo\n");
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("topic fresh did not exist")
            && r.stderr.contains("created it with 3 partition(s)"),
        "{}",
        r.stderr
    );
    let described = json(&ok(&b, &["topics", "describe", "fresh", "-o", "json"]));
    let partitions = described[0]["partitions"].as_array().expect("partitions");
    assert_eq!(partitions.len(), 3);
    let written: i64 = partitions
        .iter()
        .map(|p| p["log_end_offset"].as_i64().expect("offset"))
        .sum();
    assert_eq!(written, 2);
    // A topic that exists is not announced.
    let r = strata_at(b.port, &["produce", "fresh"], "three\n");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stderr.contains("did not exist"), "{}", r.stderr);
    // perf produce does the same.
    let r = strata_at(
        b.port,
        &["perf", "produce", "-t", "bench-new", "-n", "50", "--json"],
        "",
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("topic bench-new did not exist"),
        "{}",
        r.stderr
    );
    assert_eq!(json(&r.stdout)["records"], 50);

    let refusing = TestBroker::start(&["auto.create.topics.enable=false"]);
    for args in [
        &["produce", "absent"][..],
        &["perf", "produce", "-t", "absent", "-n", "1"][..],
    ] {
        let e = fails(&refusing, args);
        assert!(
            e.contains("\"absent\" does not exist")
                && e.contains("auto.create.topics.enable=false")
                && e.contains("strata topics create absent"),
            "{args:?}: {e}"
        );
    }
    let e = fails(&refusing, &["topics", "describe", "absent"]);
    assert!(e.contains("does not exist"), "nothing was created: {e}");
}

#[test]
fn consume_follows_new_records_until_interrupted() {
    let b = broker();
    ok(&b, &["topics", "create", "live", "--partitions", "2"]);
    let out_path = b.dir.path().join("live.txt");
    // --from-beginning: the records count even if they land before it has looked up offsets.
    let child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args([
            "consume",
            "live",
            "--from-beginning",
            "--format",
            "{key}={value}",
        ])
        .env("STRATA_BOOTSTRAP_SERVER", format!("127.0.0.1:{}", b.port))
        .stdout(std::fs::File::create(&out_path).expect("output file"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("start strata consume");
    // Records written after it started arrive while it runs.
    std::thread::sleep(Duration::from_millis(300));
    ok_in(
        &b,
        &["produce", "live", "--key-separator", ":"],
        "a:1\nb:2\nc:3\n",
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let read = || std::fs::read_to_string(&out_path).unwrap_or_default();
    while read().lines().count() < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("strata consume stops on Ctrl-C")
        .expect("output");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("consumed 3 records"));
    let mut lines: Vec<String> = read().lines().map(str::to_string).collect();
    lines.sort();
    assert_eq!(lines, ["a=1", "b=2", "c=3"]);
}

#[test]
fn groups_lag_reports_the_brokers_evaluation() {
    let console_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let listener = format!("console.listener=127.0.0.1:{console_port}");
    let b = TestBroker::start(&[
        "console.enable=true",
        &listener,
        // Every commit its own window entry, and no STOP within the test.
        "strata.lag.min.commit.distance.ms=0",
        "strata.lag.stop.floor.ms=600000",
    ]);
    ok(&b, &["topics", "create", "work", "--partitions", "1"]);
    ok_in(&b, &["produce", "work"], "a\nb\nc\nd\ne\n");
    // The same offset committed twice while records wait: stalled.
    for _ in 0..2 {
        reset(&b, "g", "work", &["--to-offset", "1"]);
    }
    // Found through the broker's console.listener.
    let all = ok(&b, &["groups", "lag"]);
    assert!(
        all.starts_with("GROUP  STATUS  TOTAL-LAG  PARTITIONS  COMPLETE\ng      ERR     4          1           0%"),
        "{all}"
    );
    let one = ok(&b, &["groups", "lag", "g"]);
    assert!(one.contains("Group: g  Status: ERR  Total lag: 4"), "{one}");
    assert!(
        one.contains("work   0          STALL   4    1          5"),
        "{one}"
    );
    let r = strata(&b, &["groups", "lag", "--fail-on", "ERR"]);
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    let missing = json(&ok(&b, &["groups", "lag", "nobody", "-o", "json"]));
    assert_eq!(missing[0]["status"], "NOTFOUND");
    let r = strata(&b, &["groups", "lag", "nobody", "--fail-on", "ERR"]);
    assert_eq!(r.code, 3, "a missing group fails the check");

    // The group catches up: its lag was 0 at the last commit.
    assert_eq!(
        ok(&b, &["consume", "work", "--group", "g", "-n", "4"]),
        "b\nc\nd\ne\n"
    );
    let url = format!("http://127.0.0.1:{console_port}/");
    let status = json(&ok(
        &b,
        &["groups", "lag", "g", "--console", &url, "-o", "json"],
    ));
    assert_eq!(status[0]["status"], "OK", "{status}");
    assert_eq!(status[0]["totallag"], 0);
    assert_eq!(strata(&b, &["groups", "lag", "--fail-on", "WARN"]).code, 0);

    // Without a console there is no evaluation to read.
    let plain = broker();
    let e = fails(&plain, &["groups", "lag"]);
    assert!(e.contains("console.enable=false"), "{e}");
}

/// A `--command-config` file in the broker's directory.
fn command_config(b: &TestBroker, name: &str, lines: &[&str]) -> String {
    let path = b.dir.path().join(name);
    std::fs::write(&path, lines.join("\n") + "\n").expect("write client properties");
    path.display().to_string()
}

#[test]
fn users_over_sasl_with_command_config() {
    // The test broker's one listener, named PLAINTEXT, mapped to SASL_PLAINTEXT: PLAIN with
    // an admin from the JAAS line, and SCRAM.
    let b = TestBroker::start(&[
        "listener.security.protocol.map=PLAINTEXT:SASL_PLAINTEXT",
        "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        "connection.failed.authentication.delay.ms=0",
        r#"sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_admin="admin-secret";"#,
    ]);
    let admin = command_config(
        &b,
        "admin.properties",
        &[
            "security.protocol=SASL_PLAINTEXT",
            "sasl.mechanism=PLAIN",
            r#"sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="admin-secret";"#,
        ],
    );
    let alice = |mechanism: &str, password: &str| {
        command_config(
            &b,
            &format!("alice-{mechanism}-{password}.properties"),
            &[
                "security.protocol=SASL_PLAINTEXT",
                &format!("sasl.mechanism={mechanism}"),
                "sasl.username=alice",
                &format!("sasl.password={password}"),
            ],
        )
    };
    let cc = |file: &str, args: &[&str]| {
        let mut all = vec!["--command-config", file];
        all.extend_from_slice(args);
        all.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        strata(&b, &args)
    };
    let must = |args: Vec<String>| {
        let r = run(args.clone());
        assert_eq!(
            r.code, 0,
            "strata {args:?} failed:\n{}{}",
            r.stdout, r.stderr
        );
        r.stdout
    };

    // Without authenticating, the broker closes the connection.
    let r = run(vec!["topics".into(), "list".into()]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);

    // The PLAIN admin creates SCRAM users.
    must(cc(
        &admin,
        &[
            "users",
            "create",
            "alice",
            "--password",
            "alice-secret",
            "--iterations",
            "8192",
        ],
    ));
    must(cc(
        &admin,
        &[
            "users",
            "create",
            "alice",
            "--mechanism",
            "SCRAM-SHA-512",
            "--password",
            "alice-512",
        ],
    ));
    let again = run(cc(&admin, &["users", "create", "alice", "--password", "x"]));
    assert!(
        again.code == 1 && again.stderr.contains("users alter"),
        "{}",
        again.stderr
    );
    let listed = json(&must(cc(&admin, &["users", "list", "-o", "json"])));
    assert_eq!(
        listed,
        json(
            r#"[{"user": "alice", "credentials": [
            {"mechanism": "SCRAM-SHA-256", "iterations": 8192},
            {"mechanism": "SCRAM-SHA-512", "iterations": 4096}]}]"#
        )
    );
    let table = must(cc(&admin, &["users", "describe", "alice"]));
    assert_eq!(
        table,
        "MECHANISM      ITERATIONS\nSCRAM-SHA-256  8192\nSCRAM-SHA-512  4096\n"
    );
    let unknown = run(cc(&admin, &["users", "describe", "nobody"]));
    assert!(
        unknown.code == 1 && unknown.stderr.contains("does not exist"),
        "{}",
        unknown.stderr
    );
    let few = run(cc(
        &admin,
        &[
            "users",
            "alter",
            "bob",
            "--password",
            "x",
            "--iterations",
            "100",
        ],
    ));
    assert!(
        few.code == 1 && few.stderr.contains("Too few iterations"),
        "{}",
        few.stderr
    );

    // Alice logs in with either mechanism and works; a wrong password is refused.
    for (mechanism, password) in [
        ("SCRAM-SHA-256", "alice-secret"),
        ("SCRAM-SHA-512", "alice-512"),
    ] {
        let file = alice(mechanism, password);
        must(cc(&file, &["topics", "create", &format!("t-{mechanism}")]));
        assert!(must(cc(&file, &["topics", "list"])).contains(&format!("t-{mechanism}")));
    }
    let wrong = run(cc(&alice("SCRAM-SHA-256", "nope"), &["topics", "list"]));
    assert_eq!(wrong.code, 1);
    assert!(
        wrong.stderr.contains("invalid username or password"),
        "{}",
        wrong.stderr
    );

    // A new password; then deleting the credential ends alice's SCRAM-SHA-256 logins.
    must(cc(
        &admin,
        &["users", "alter", "alice", "--password", "changed"],
    ));
    must(cc(&alice("SCRAM-SHA-256", "changed"), &["topics", "list"]));
    must(cc(
        &admin,
        &["users", "delete", "alice", "--mechanism", "SCRAM-SHA-256"],
    ));
    let gone = run(cc(&alice("SCRAM-SHA-256", "changed"), &["topics", "list"]));
    assert!(
        gone.code == 1 && gone.stderr.contains("invalid username or password"),
        "{}",
        gone.stderr
    );
    must(cc(
        &alice("SCRAM-SHA-512", "alice-512"),
        &["topics", "list"],
    ));
    must(cc(&admin, &["users", "delete", "alice"]));
    assert_eq!(
        json(&must(cc(&admin, &["users", "list", "-o", "json"]))),
        json("[]")
    );

    // A bad command config says which key.
    let bad = command_config(
        &b,
        "bad.properties",
        &["security.protocol=SASL_PLAINTEXT", "sasl.mechanism=GSSAPI"],
    );
    let r = run(cc(&bad, &["topics", "list"]));
    assert!(
        r.code == 1 && r.stderr.contains("sasl.mechanism"),
        "{}",
        r.stderr
    );
}

#[test]
fn add_scram_bootstraps_the_first_user() {
    // SCRAM only (no PLAIN admin): the first user comes from --add-scram at formatting.
    let mut b = TestBroker::start_with_args(
        &[
            "--add-scram",
            "SCRAM-SHA-512=[name=root,password=\"r00t,pw\",iterations=8192]",
        ],
        &[
            "listener.security.protocol.map=PLAINTEXT:SASL_PLAINTEXT",
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
        ],
    );
    let root = command_config(
        &b,
        "root.properties",
        &[
            "security.protocol=SASL_PLAINTEXT",
            "sasl.mechanism=SCRAM-SHA-512",
            "sasl.username=root",
            "sasl.password=r00t,pw",
        ],
    );
    let listed = ok(
        &b,
        &["--command-config", &root, "users", "list", "-o", "json"],
    );
    assert_eq!(
        json(&listed),
        json(
            r#"[{"user": "root", "credentials": [{"mechanism": "SCRAM-SHA-512", "iterations": 8192}]}]"#
        )
    );
    assert!(!b.log().contains("r00t"), "the password is never logged");
    // Formatted already: a second start ignores --add-scram (with a warning) and keeps root.
    b.restart();
    assert!(ok(&b, &["--command-config", &root, "users", "list"]).contains("root"));
    assert!(b.log().contains("--add-scram ignored"), "{}", b.log());
}

/// `strata storage format` formats a data directory as a first start would: `serve` then runs
/// with its cluster id and its --add-scram user; formatting it again is refused unless
/// --ignore-formatted, and refused for another cluster id either way.
#[test]
fn storage_format_then_serve() {
    let here = tempfile::tempdir().expect("tempdir");
    let data = here.path().join("data");
    let config = here.path().join("server.properties");
    std::fs::write(&config, format!("node.id=1\nlog.dirs={}\n", data.display()))
        .expect("write config");
    let config = config.display().to_string();
    // No broker is involved: the bootstrap address is never used.
    let local = |args: &[&str]| strata_at(1, args, "");
    let uuid = |r: Run| {
        assert_eq!(r.code, 0, "{}", r.stderr);
        let id = r.stdout.trim().to_string();
        assert_eq!(id.len(), 22, "{id}");
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        id
    };
    let id = uuid(local(&["storage", "random-uuid"]));
    assert_ne!(uuid(local(&["storage", "random-uuid"])), id);

    let r = local(&[
        "storage",
        "format",
        "--config",
        &config,
        "--cluster-id",
        "nope",
    ]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("is not a UUID"), "{}", r.stderr);
    assert!(!data.exists(), "a refused format writes nothing");

    let format = |extra: &[&str]| {
        let mut args = vec!["storage", "format", "--config", config.as_str()];
        args.extend_from_slice(extra);
        local(&args)
    };
    let r = format(&[
        "--cluster-id",
        &id,
        "--add-scram",
        "SCRAM-SHA-512=[name=root,password=root-secret]",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        format!("Formatted {} with cluster id {id}\n", data.display())
    );
    let meta = std::fs::read_to_string(data.join("meta.properties")).expect("meta.properties");
    assert!(meta.contains(&format!("cluster.id={id}\n")), "{meta}");
    assert!(meta.contains("node.id=1\n"), "{meta}");

    let r = format(&["--cluster-id", &id]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("already formatted") && r.stderr.contains(&data.display().to_string()),
        "{}",
        r.stderr
    );
    let r = format(&["--ignore-formatted"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        format!(
            "Skipped {}: already formatted with cluster id {id}\n",
            data.display()
        )
    );
    let other = uuid(local(&["storage", "random-uuid"]));
    let r = format(&["--cluster-id", &other, "--ignore-formatted"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains(&format!("formatted with cluster id {id}, not {other}")),
        "{}",
        r.stderr
    );
    assert_eq!(
        std::fs::read_to_string(data.join("meta.properties")).expect("meta"),
        meta
    );

    // The broker starts on that directory with its id, and the user added at format logs in.
    let log_dirs = format!("log.dirs={}", data.display());
    let b = TestBroker::start_with_args(
        &["--config", &config],
        &[
            &log_dirs,
            "listener.security.protocol.map=PLAINTEXT:SASL_PLAINTEXT",
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
        ],
    );
    let root = command_config(
        &b,
        "root.properties",
        &[
            "security.protocol=SASL_PLAINTEXT",
            "sasl.mechanism=SCRAM-SHA-512",
            "sasl.username=root",
            "sasl.password=root-secret",
        ],
    );
    let c = json(&ok(
        &b,
        &[
            "--command-config",
            &root,
            "cluster",
            "describe",
            "-o",
            "json",
        ],
    ));
    assert_eq!(c["cluster_id"], id.as_str());
    assert!(!b.log().contains("--add-scram ignored"));
    // A directory in use by a running broker is not touched.
    let r = format(&["--ignore-formatted"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("in use by another broker"),
        "{}",
        r.stderr
    );

    // Without --cluster-id (and none in the file) a new id is picked and written.
    let fresh = here.path().join("fresh");
    std::fs::write(
        here.path().join("fresh.properties"),
        format!("node.id=7\nlog.dirs={}\n", fresh.display()),
    )
    .expect("write config");
    let fresh_config = here.path().join("fresh.properties").display().to_string();
    let r = local(&["storage", "format", "--config", &fresh_config]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let picked = r.stdout.trim().rsplit(' ').next().expect("id").to_string();
    assert_eq!(picked.len(), 22, "{}", r.stdout);
    assert_ne!(picked, id);
    let meta = std::fs::read_to_string(fresh.join("meta.properties")).expect("meta");
    assert!(meta.contains(&format!("cluster.id={picked}\n")), "{meta}");
    assert!(meta.contains("node.id=7\n"), "{meta}");
}

/// `strata acls add|list|remove` against a broker with the authorizer on (the CLI connects
/// over PLAINTEXT as User:ANONYMOUS, a super user here, so it may manage ACLs).
#[test]
fn acls_are_added_listed_and_removed() {
    let b = TestBroker::start(&[
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users=User:ANONYMOUS",
    ]);
    ok(
        &b,
        &[
            "acls",
            "add",
            "--allow-principal",
            "User:alice",
            "--operation",
            "write",
            "--operation",
            "describe",
            "--topic",
            "orders",
        ],
    );
    ok(
        &b,
        &[
            "acls",
            "add",
            "--deny-principal",
            "User:bob",
            "--deny-host",
            "10.0.0.9",
            "--operation",
            "read",
            "--topic",
            "fin-",
            "--resource-pattern-type",
            "prefixed",
        ],
    );
    ok(
        &b,
        &[
            "acls",
            "add",
            "--allow-principal",
            "User:bob",
            "--operation",
            "read",
            "--group",
            "billing",
            "--transactional-id",
            "tx",
            "--cluster",
        ],
    );
    let table = ok(&b, &["acls", "list"]);
    let expected = "\
PRINCIPAL   PERMISSION  OPERATION  HOST      RESOURCE-TYPE     PATTERN   NAME
User:alice  ALLOW       WRITE      *         TOPIC             LITERAL   orders
User:alice  ALLOW       DESCRIBE   *         TOPIC             LITERAL   orders
User:bob    DENY        READ       10.0.0.9  TOPIC             PREFIXED  fin-
User:bob    ALLOW       READ       *         GROUP             LITERAL   billing
User:bob    ALLOW       READ       *         CLUSTER           LITERAL   kafka-cluster
User:bob    ALLOW       READ       *         TRANSACTIONAL_ID  LITERAL   tx
";
    let sorted = |text: &str| {
        let mut lines: Vec<String> = text.lines().map(|l| l.trim_end().to_string()).collect();
        lines.sort();
        lines
    };
    assert_eq!(sorted(&table), sorted(expected), "{table}");
    // A MATCH filter finds what applies to a topic name: the prefixed DENY for fin-ledger.
    let matched = json(&ok(
        &b,
        &[
            "acls",
            "list",
            "--topic",
            "fin-ledger",
            "--resource-pattern-type",
            "match",
            "--output",
            "json",
        ],
    ));
    assert_eq!(matched.as_array().map(Vec::len), Some(1), "{matched}");
    assert_eq!(matched[0]["resource_name"], "fin-");
    assert_eq!(matched[0]["permission"], "DENY");
    let bobs = json(&ok(
        &b,
        &["acls", "list", "--principal", "User:bob", "-o", "json"],
    ));
    assert_eq!(bobs.as_array().map(Vec::len), Some(4), "{bobs}");

    // Removing one binding, then everything of a resource.
    let r = strata(
        &b,
        &[
            "acls",
            "remove",
            "--allow-principal",
            "User:alice",
            "--operation",
            "write",
            "--topic",
            "orders",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("removed 1 ACL(s)"), "{}", r.stderr);
    let left = json(&ok(
        &b,
        &["acls", "list", "--topic", "orders", "-o", "json"],
    ));
    assert_eq!(left.as_array().map(Vec::len), Some(1), "{left}");
    assert_eq!(left[0]["operation"], "DESCRIBE");
    let r = strata(
        &b,
        &["acls", "remove", "--topic", "orders", "--group", "billing"],
    );
    assert!(r.stderr.contains("removed 2 ACL(s)"), "{}", r.stderr);
    let all = json(&ok(&b, &["acls", "list", "-o", "json"]));
    assert_eq!(all.as_array().map(Vec::len), Some(3), "{all}");

    // Bad input is refused before anything is sent.
    let err = fails(
        &b,
        &[
            "acls",
            "add",
            "--allow-principal",
            "User:a",
            "--operation",
            "fly",
            "--topic",
            "t",
        ],
    );
    assert!(
        err.contains("unknown operation") && err.contains("describe_configs"),
        "{err}"
    );
    let err = fails(&b, &["acls", "add", "--operation", "read", "--topic", "t"]);
    assert!(err.contains("--allow-principal"), "{err}");
    // The broker refuses what it cannot accept: a principal without a type.
    let err = fails(
        &b,
        &[
            "acls",
            "add",
            "--allow-principal",
            "alice",
            "--operation",
            "read",
            "--topic",
            "t",
        ],
    );
    assert!(err.contains("Type:name"), "{err}");
}

/// Without an authorizer the ACL commands fail with the broker's SECURITY_DISABLED and say
/// what to set.
#[test]
fn acls_need_an_authorizer() {
    let b = TestBroker::start(&[]);
    let err = fails(&b, &["acls", "list"]);
    assert!(err.contains("authorizer.class.name"), "{err}");
}

/// `strata quotas alter|describe`: entities of a user, a client id, both, and defaults; the
/// describe filters of kafka-configs.sh (strict, a name, the default, any); bad input refused
/// before anything is sent, and the broker's own refusals reported.
#[test]
fn quotas_are_altered_and_described() {
    let b = TestBroker::start(&[]);
    let alter = |args: &[&str]| {
        let mut all = vec!["quotas", "alter"];
        all.extend_from_slice(args);
        ok(&b, &all)
    };
    assert_eq!(
        alter(&[
            "--user",
            "alice",
            "--add",
            "producer_byte_rate=1024,consumer_byte_rate=2048"
        ]),
        "altered the quotas of user=alice: set consumer_byte_rate=2048,producer_byte_rate=1024\n"
    );
    alter(&[
        "--user",
        "alice",
        "--client-id",
        "app",
        "--add",
        "request_percentage=12.5",
    ]);
    alter(&[
        "--user-default",
        "--client-id-default",
        "--add-config",
        "producer_byte_rate=500",
    ]);
    alter(&["--client-id", "app", "--add", "consumer_byte_rate=100"]);
    alter(&["--client-id-default", "--add", "controller_mutation_rate=3"]);

    let all = ok(&b, &["quotas", "describe"]);
    let expected = "\
USER       CLIENT-ID  QUOTAS
<default>  <default>  producer_byte_rate=500
-          <default>  controller_mutation_rate=3
-          app        consumer_byte_rate=100
alice      app        request_percentage=12.5
alice      -          consumer_byte_rate=2048,producer_byte_rate=1024
";
    let sorted = |text: &str| {
        let mut lines: Vec<String> = text.lines().map(|l| l.trim_end().to_string()).collect();
        lines.sort();
        lines
    };
    assert_eq!(sorted(&all), sorted(expected), "{all}");
    // A name alone is that entity only (strict, as kafka-configs.sh --describe).
    let describe = |args: &[&str]| {
        let mut all = vec!["quotas", "describe", "-o", "json"];
        all.extend_from_slice(args);
        json(&ok(&b, &all))
    };
    assert_eq!(
        describe(&["--user", "alice"]),
        json(
            r#"[{"entity": {"user": "alice"},
                "quotas": {"consumer_byte_rate": 2048.0, "producer_byte_rate": 1024.0}}]"#
        )
    );
    assert_eq!(
        describe(&["--user", "alice", "--client-id"]),
        json(
            r#"[{"entity": {"user": "alice", "client-id": "app"},
                "quotas": {"request_percentage": 12.5}}]"#
        )
    );
    // null: the default entity.
    assert_eq!(
        describe(&["--user-default", "--client-id"]),
        json(
            r#"[{"entity": {"user": null, "client-id": null},
                "quotas": {"producer_byte_rate": 500.0}}]"#
        )
    );
    let clients = describe(&["--client-id"]);
    assert_eq!(clients.as_array().map(Vec::len), Some(2), "{clients}");
    assert_eq!(describe(&["--client-id", "other"]), json("[]"));

    // Deleting keys; the last one deletes the entity.
    alter(&["--user", "alice", "--delete", "consumer_byte_rate"]);
    assert_eq!(
        describe(&["--user", "alice"])[0]["quotas"],
        json(r#"{"producer_byte_rate": 1024.0}"#)
    );
    alter(&["--user", "alice", "--delete-config", "producer_byte_rate"]);
    assert_eq!(describe(&["--user", "alice"]), json("[]"));

    // Bad input, refused here with what to do.
    let refused = |args: &[&str], needle: &str| {
        let mut all = vec!["quotas", "alter"];
        all.extend_from_slice(args);
        let err = fails(&b, &all);
        assert!(err.contains(needle), "{all:?}: {err}");
    };
    refused(
        &["--user", "a", "--add", "bogus=1"],
        "unknown quota key \"bogus\"; use one of: producer_byte_rate",
    );
    refused(
        &["--user", "a", "--add", "producer_byte_rate=fast"],
        "the value must be a number",
    );
    refused(
        &["--user", "a", "--add", "producer_byte_rate=-1"],
        "a number of 0 or more",
    );
    refused(&["--user", "a", "--add", "producer_byte_rate"], "KEY=VALUE");
    refused(&["--user", "a"], "nothing to change");
    refused(
        &["--add", "producer_byte_rate=1"],
        "name the entity: --user NAME or --user-default",
    );
    refused(
        &["--user", "--add", "producer_byte_rate=1"],
        "--user needs a name here (or use --user-default)",
    );
    refused(
        &[
            "--user",
            "a",
            "--add",
            "producer_byte_rate=1",
            "--delete",
            "producer_byte_rate",
        ],
        "both set and deleted",
    );
    // The broker's validation: byte rates are whole numbers.
    refused(
        &["--user", "a", "--add", "producer_byte_rate=1.5"],
        "producer_byte_rate must be a Long value",
    );
    let r = strata(
        &b,
        &[
            "quotas",
            "alter",
            "--user",
            "a",
            "--user-default",
            "--add",
            "producer_byte_rate=1",
        ],
    );
    assert_eq!(r.code, 2, "a usage error: {}", r.stderr);
}

/// Over SASL with an authorizer, `--command-config` logs the quotas commands in: a super user
/// alters and describes, another user is refused on the cluster.
#[test]
fn quotas_need_cluster_rights_with_an_authorizer() {
    let b = TestBroker::start(&[
        "listener.security.protocol.map=PLAINTEXT:SASL_PLAINTEXT",
        "sasl.enabled.mechanisms=PLAIN",
        "connection.failed.authentication.delay.ms=0",
        r#"sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_admin="admin-secret" user_bob="bob-secret";"#,
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users=User:admin",
    ]);
    let login = |user: &str| {
        command_config(
            &b,
            &format!("{user}.properties"),
            &[
                "security.protocol=SASL_PLAINTEXT",
                "sasl.mechanism=PLAIN",
                &format!("sasl.username={user}"),
                &format!("sasl.password={user}-secret"),
            ],
        )
    };
    let (admin, bob) = (login("admin"), login("bob"));
    ok(
        &b,
        &[
            "--command-config",
            &admin,
            "quotas",
            "alter",
            "--user",
            "bob",
            "--add",
            "consumer_byte_rate=4096",
        ],
    );
    let table = ok(
        &b,
        &["--command-config", &admin, "quotas", "describe", "--user"],
    );
    assert_eq!(
        table,
        "USER  CLIENT-ID  QUOTAS\nbob   -          consumer_byte_rate=4096\n"
    );
    let err = fails(
        &b,
        &["--command-config", &bob, "quotas", "describe", "--user"],
    );
    assert!(
        err.contains("ClusterAuthorizationFailed") && err.contains("hint:"),
        "{err}"
    );
    let err = fails(
        &b,
        &[
            "--command-config",
            &bob,
            "quotas",
            "alter",
            "--user",
            "bob",
            "--delete",
            "consumer_byte_rate",
        ],
    );
    assert!(err.contains("ClusterAuthorizationFailed"), "{err}");
}
