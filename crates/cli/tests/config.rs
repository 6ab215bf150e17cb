//! Configuration at start-up: properties file, overrides, unknown keys, bad values.

mod support;

use std::process::Command;
use std::time::Duration;

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use support::TestBroker;

#[test]
fn properties_file_is_read_and_set_overrides_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let props = dir.path().join("server.properties");
    std::fs::write(
        &props,
        "# a Kafka-style file\nnum.partitions=3\nauto.create.topics.enable: true\nno.such.key=1\n",
    )
    .expect("write properties");
    let broker = TestBroker::start_with_args(
        &["--config", props.to_str().expect("utf8 path")],
        &["default.replication.factor=1"],
    );
    let mut c = broker.client();
    let req = MetadataRequest::default()
        .with_allow_auto_topic_creation(true)
        .with_topics(Some(vec![MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_static_str("from-file"))))]));
    let resp: MetadataResponse = c.call(ApiKey::Metadata, 12, &req).expect("answer");
    assert_eq!(
        resp.topics[0].partitions.len(),
        3,
        "num.partitions from the file"
    );
    let log = broker.log();
    assert!(
        log.contains("unknown configuration key") && log.contains("no.such.key"),
        "unknown key is warned about by name:\n{log}"
    );
}

fn refused(args: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
    cmd.arg("serve")
        .arg("--set")
        .arg(format!("log.dirs={}", dir.path().join("d").display()))
        .arg("--set")
        .arg("listeners=PLAINTEXT://127.0.0.1:0");
    for a in args {
        cmd.arg(a);
    }
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(!status.success(), "start-up must fail for {args:?}");
            let out = child.wait_with_output().expect("output");
            return String::from_utf8_lossy(&out.stderr).to_string();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("broker started although {args:?} is invalid");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_values_stop_start_up_naming_key_and_value() {
    let err = refused(&["--set", "num.partitions=lots"]);
    assert!(
        err.contains("num.partitions") && err.contains("lots"),
        "{err}"
    );
    let err = refused(&["--set", "auto.create.topics.enable=maybe"]);
    assert!(
        err.contains("auto.create.topics.enable") && err.contains("maybe"),
        "{err}"
    );
    let err = refused(&["--set", "listeners=nonsense"]);
    assert!(
        err.contains("listeners") && err.contains("nonsense"),
        "{err}"
    );
    let err = refused(&["--set", "message.max.bytes=-5"]);
    assert!(err.contains("message.max.bytes"), "{err}");
    let err = refused(&["--set", "novalue"]);
    assert!(err.contains("KEY=VALUE"), "{err}");
    let err = refused(&["--config", "/nonexistent/server.properties"]);
    assert!(err.contains("/nonexistent/server.properties"), "{err}");
}
