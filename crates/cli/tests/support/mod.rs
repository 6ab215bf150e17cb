//! A real `strata` process on a loopback port, and a minimal blocking Kafka client for tests.

#![allow(dead_code)]

pub mod txn;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::Compression;
use strata_protocol::records::{encode_batch, PlainRecord};

pub struct TestBroker {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    extra: Vec<String>,
    args: Vec<String>,
    /// Soft and hard RLIMIT_NOFILE of the process, if lowered for the test.
    nofile: Option<u64>,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

impl TestBroker {
    pub fn start(extra: &[&str]) -> Self {
        Self::start_with_args(&[], extra)
    }

    /// Starts with extra command-line `args` before the `--set` overrides.
    pub fn start_with_args(args: &[&str], extra: &[&str]) -> Self {
        Self::start_limited(None, args, extra)
    }

    /// Starts with both the soft and the hard open-file limit at `nofile` (so the broker
    /// cannot raise it), like `ulimit -Hn N; ulimit -Sn N`.
    pub fn start_with_nofile(nofile: u64, extra: &[&str]) -> Self {
        Self::start_limited(Some(nofile), &[], extra)
    }

    fn start_limited(nofile: Option<u64>, args: &[&str], extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut broker = TestBroker {
            port: free_port(),
            dir,
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
            nofile,
        };
        broker.spawn();
        broker
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the broker and waits until it listens. The port was free when picked, but
    /// another process (say another test suite on the machine) may take it first; then our
    /// broker exits on start-up while a connection to the port reaches the other process. So
    /// the broker counts as started only when its own log says it listens on the port, and a
    /// lost race is retried on a new port.
    fn spawn(&mut self) {
        for _ in 0..5 {
            if self.try_spawn() {
                return;
            }
            self.port = free_port();
        }
        panic!("broker did not start on any port: {}", self.log());
    }

    /// Whether the broker started; `false` when it lost the race for the port.
    fn try_spawn(&mut self) -> bool {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
        cmd.arg("serve")
            .args(&self.args)
            .arg("--set")
            .arg(format!("listeners=PLAINTEXT://127.0.0.1:{}", self.port))
            .arg("--set")
            .arg(format!("log.dirs={}", self.data_dir().display()))
            // No HTTP console: parallel tests would meet on its default port.
            .arg("--set")
            .arg("console.enable=false");
        for e in &self.extra {
            cmd.arg("--set").arg(e);
        }
        if let Ok(filter) = std::env::var("STRATA_LOG") {
            // The start-up check below reads the "listening" line (INFO, server module).
            cmd.env("STRATA_LOG", format!("{filter},strata_broker::server=info"));
        }
        let log = std::fs::File::create(self.dir.path().join("broker.log")).expect("log file");
        cmd.stdout(Stdio::null()).stderr(log);
        if let Some(nofile) = self.nofile {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit {
                rlim_cur: nofile as libc::rlim_t,
                rlim_max: nofile as libc::rlim_t,
            };
            // Safety: the closure runs in the child between fork and exec and only calls
            // setrlimit, which is async-signal-safe, on a struct copied into the closure.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        self.child = Some(cmd.spawn().expect("start strata"));
        let ours = format!("127.0.0.1:{}", self.port);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if !self.is_running() {
                let log = self.log();
                if log.to_lowercase().contains("in use") {
                    return false;
                }
                panic!("broker exited during start-up: {log}");
            }
            let log = self.log();
            let listening = log
                .lines()
                .any(|l| l.contains("listening") && l.contains(&ours));
            if listening && TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("broker did not start: {}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (bounded) for a clean exit; panics if it does not exit 0.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                assert!(
                    status.success(),
                    "broker exited with {status}: {}",
                    self.log()
                );
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("broker did not stop within 20 s of SIGTERM: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the process again on the same port and data directory (after `stop`/`kill9`).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the broker is still running");
        self.spawn();
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn client(&self) -> Client {
        Client::connect(self.port)
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub struct Client {
    pub stream: TcpStream,
    correlation_id: i32,
}

impl Client {
    pub fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        Self::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> Self {
        Client {
            stream,
            correlation_id: 0,
        }
    }

    /// Sends a request and decodes its response; `None` if the broker closed the connection.
    pub fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        req: &Req,
    ) -> Option<Resp> {
        self.correlation_id += 1;
        let mut buf = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("strata-test")))
            .encode(&mut buf, key.request_header_version(version))
            .expect("header encodes");
        req.encode(&mut buf, version).expect("request encodes");
        self.send_frame(&buf).ok()?;
        let mut body = self.read_frame()?;
        let header = ResponseHeader::decode(&mut body, key.response_header_version(version))
            .expect("response header");
        assert_eq!(header.correlation_id, self.correlation_id);
        Some(Resp::decode(&mut body, version).expect("response decodes"))
    }

    /// Sends a request that gets no response (acks=0 produce).
    pub fn send_only<Req: Encodable>(&mut self, key: ApiKey, version: i16, req: &Req) {
        self.correlation_id += 1;
        let mut buf = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("strata-test")))
            .encode(&mut buf, key.request_header_version(version))
            .expect("header encodes");
        req.encode(&mut buf, version).expect("request encodes");
        self.send_frame(&buf).expect("request sent");
    }

    pub fn send_frame(&mut self, payload: &[u8]) -> std::io::Result<()> {
        let mut framed = Vec::with_capacity(payload.len() + 4);
        framed.put_i32(payload.len() as i32);
        framed.extend_from_slice(payload);
        self.stream.write_all(&framed)
    }

    /// Sends raw bytes (no length prefix added).
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    pub fn read_frame(&mut self) -> Option<Bytes> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).ok()?;
        let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut body).ok()?;
        Some(Bytes::from(body))
    }

    /// Whether the broker has closed this connection (reads EOF within the timeout).
    pub fn is_closed(&mut self) -> bool {
        self.stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0) | Err(_))
    }
}

/// A valid record batch with `values` as records (keys `k<i>`).
pub fn batch(values: &[&[u8]], compression: Compression) -> Bytes {
    let records: Vec<PlainRecord> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            PlainRecord::new(
                Some(format!("k{i}").as_bytes()),
                Some(v),
                1_700_000_000_000 + i as i64,
            )
        })
        .collect();
    encode_batch(&records, compression).expect("batch encodes")
}

pub fn get_i16_at(b: &[u8], at: usize) -> i16 {
    (&b[at..at + 2]).get_i16()
}
