//! The CLI beside other Kafka clients: keys land where confluent-kafka's `murmur2_random`
//! partitioner puts them, and `strata consume --group` shares a group with a kafka-python
//! member. Runs when a Python with both packages is found (STRATA_E2E_PYTHON, else the
//! repository's .venv that scripts/test.sh sets up); otherwise says so and passes.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::TestBroker;

fn python() -> Option<PathBuf> {
    let candidate = std::env::var_os("STRATA_E2E_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python")
        });
    let ok = Command::new(&candidate)
        .args(["-c", "import confluent_kafka, kafka"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: no Python with confluent-kafka and kafka-python at {candidate:?}");
    }
    ok.then_some(candidate)
}

/// Kills a child process when dropped (a failed assertion leaves none behind).
struct Guard(Option<Child>);

impl Guard {
    fn take(mut self) -> Child {
        self.0.take().expect("child")
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn describe_group(port: u16, group: &str) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["groups", "describe", group, "-o", "json"])
        .env("STRATA_BOOTSTRAP_SERVER", format!("127.0.0.1:{port}"))
        .output()
        .expect("run strata");
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

fn strata(port: u16, args: &[&str], stdin: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .env("STRATA_BOOTSTRAP_SERVER", format!("127.0.0.1:{port}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start strata");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write");
    let out = wait(child, Duration::from_secs(30));
    assert!(
        out.status.success(),
        "strata {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

/// Waits for a child with a deadline, killing it past that.
fn wait(child: Child, limit: Duration) -> std::process::Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("output"),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("process did not finish within {limit:?}");
        }
    }
}

fn python_script(py: &PathBuf, script: &str, args: &[String]) -> Child {
    Command::new(py)
        .arg("-c")
        .arg(script)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python")
}

const CONFLUENT_PRODUCER: &str = r#"
import sys
from confluent_kafka import Producer
p = Producer({"bootstrap.servers": sys.argv[1], "partitioner": "murmur2_random"})
out = {}
def done(err, msg):
    assert err is None, err
    out[msg.key().decode()] = msg.partition()
for i in range(30):
    p.produce("keys", key=f"key{i}", value="confluent", on_delivery=done)
assert p.flush(20) == 0
for k in sorted(out):
    print(k, out[k])
"#;

#[test]
fn keys_land_where_confluent_kafka_murmur2_random_puts_them() {
    let Some(py) = python() else { return };
    let b = TestBroker::start(&[]);
    strata(
        b.port,
        &["topics", "create", "keys", "--partitions", "7"],
        "",
    );
    let lines: String = (0..30).map(|i| format!("key{i}:strata\n")).collect();
    strata(b.port, &["produce", "keys", "--key-separator", ":"], &lines);
    let theirs = wait(
        python_script(&py, CONFLUENT_PRODUCER, &[format!("127.0.0.1:{}", b.port)]),
        Duration::from_secs(30),
    );
    assert!(
        theirs.status.success(),
        "{}",
        String::from_utf8_lossy(&theirs.stderr)
    );
    let mut theirs: Vec<String> = String::from_utf8_lossy(&theirs.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    theirs.sort();
    let mut ours: Vec<String> = strata(
        b.port,
        &[
            "consume",
            "keys",
            "--from-beginning",
            "-n",
            "60",
            "--format",
            "{key} {partition} {value}",
        ],
        "",
    )
    .lines()
    .filter_map(|l| l.strip_suffix(" strata").map(str::to_string))
    .collect();
    ours.sort();
    assert_eq!(ours.len(), 30);
    assert_eq!(ours, theirs);
}

const KAFKA_PYTHON_MEMBER: &str = r#"
import sys, time
from kafka import KafkaConsumer
c = KafkaConsumer("shared", bootstrap_servers=sys.argv[1], group_id="mixed",
                  auto_offset_reset="earliest")
deadline = time.time() + 25
last = None
while time.time() < deadline and (last is None or time.time() - last < 3):
    for records in c.poll(timeout_ms=200).values():
        for r in records:
            print(r.value.decode(), flush=True)
            last = time.time()
c.close()
"#;

#[test]
fn a_strata_consumer_shares_a_group_with_kafka_python() {
    let Some(py) = python() else { return };
    let b = TestBroker::start(&["group.initial.rebalance.delay.ms=0"]);
    strata(
        b.port,
        &["topics", "create", "shared", "--partitions", "4"],
        "",
    );
    let theirs = Guard(Some(python_script(
        &py,
        KAFKA_PYTHON_MEMBER,
        &[format!("127.0.0.1:{}", b.port)],
    )));
    // Ours follows the topic until interrupted; its output goes to a file read below.
    let out_path = b.dir.path().join("consumed.txt");
    let log_path = b.dir.path().join("consume.log");
    let ours = Guard(Some(
        Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["consume", "shared", "--group", "mixed"])
            .env("STRATA_BOOTSTRAP_SERVER", format!("127.0.0.1:{}", b.port))
            .env("STRATA_LOG", "strata_client=debug")
            .stdout(std::fs::File::create(&out_path).expect("output file"))
            .stderr(std::fs::File::create(&log_path).expect("log file"))
            .spawn()
            .expect("start strata consume"),
    ));
    // Both members in a stable group before any record is written.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d = describe_group(b.port, "mixed");
        let members = d[0]["members"].as_array().map_or(0, Vec::len);
        let assigned: usize = d[0]["members"].as_array().map_or(0, |ms| {
            ms.iter()
                .map(|m| m["assignment"].as_array().map_or(0, Vec::len))
                .sum()
        });
        if d[0]["state"] == "Stable" && members == 2 && assigned == 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the group did not settle: {d}\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let lines: String = (0..40).map(|i| format!("k{i}:v{i}\n")).collect();
    strata(
        b.port,
        &["produce", "shared", "--key-separator", ":"],
        &lines,
    );
    let theirs = wait(theirs.take(), Duration::from_secs(40));
    let theirs: Vec<String> = String::from_utf8_lossy(&theirs.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let read_ours = || -> Vec<String> {
        std::fs::read_to_string(&out_path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while theirs.len() + read_ours().len() < 40 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Ctrl-C: the consumer commits, leaves the group and exits cleanly.
    let ours = ours.take();
    let _ = Command::new("kill")
        .arg("-INT")
        .arg(ours.id().to_string())
        .status();
    let done = wait(ours, Duration::from_secs(20));
    assert!(
        done.status.success(),
        "{}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
    let ours = read_ours();
    assert!(
        !theirs.is_empty() && !ours.is_empty(),
        "both members read: {theirs:?} {ours:?}"
    );
    let mut all: Vec<String> = theirs.iter().chain(&ours).cloned().collect();
    all.sort();
    let mut expected: Vec<String> = (0..40).map(|i| format!("v{i}")).collect();
    expected.sort();
    assert_eq!(all, expected, "every record read once");
}

const CONFLUENT_848_MEMBER: &str = r#"
import sys, time
from confluent_kafka import Consumer
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": "next-gen",
              "group.protocol": "consumer", "auto.offset.reset": "earliest"})
c.subscribe(["topic848"])
deadline = time.time() + 25
while time.time() < deadline:
    c.poll(0.2)
c.close()
"#;

#[test]
fn groups_describe_shows_a_kip_848_consumer_group() {
    let Some(py) = python() else { return };
    let b = TestBroker::start(&[]);
    strata(
        b.port,
        &["topics", "create", "topic848", "--partitions", "2"],
        "",
    );
    let _member = Guard(Some(python_script(
        &py,
        CONFLUENT_848_MEMBER,
        &[format!("127.0.0.1:{}", b.port)],
    )));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d = describe_group(b.port, "next-gen");
        if d[0]["state"] == "Stable"
            && d[0]["members"][0]["assignment"]
                .as_array()
                .map_or(0, Vec::len)
                == 2
        {
            assert_eq!(d[0]["members"][0]["client_id"], "rdkafka");
            assert_eq!(d[0]["partitions"].as_array().map_or(0, Vec::len), 2);
            break;
        }
        assert!(Instant::now() < deadline, "no stable KIP-848 group: {d}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let table = strata(b.port, &["groups", "describe", "next-gen"], "");
    assert!(
        table.starts_with("Group: next-gen  State: Stable  Members: 1\n"),
        "{table}"
    );
}
