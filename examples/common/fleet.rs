//! Herald replicas as separate processes, and what their runs wrote to
//! Kafka: shared by the examples that kill and restart replicas
//! (`replicas`, `chaos`).

// Each example uses its own part.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;

/// The part of a replica's configuration the examples share: Redis under
/// the run's prefix, the run's dead-letter and system topics, no delivery
/// history, deliveries allowed to any port on loopback. It ends inside
/// `[delivery]`.
pub fn shared_config(id: &str, redis: &str, dlq: &str, system: &str) -> String {
    format!(
        r#"[redis]
url = "{redis}"
prefix = "{id}:"
[dead_letter]
topic = "{dlq}"
[system_events]
topic = "{system}"
[history]
enabled = false
[delivery]
allow_cidrs = ["127.0.0.0/8"]
allow_ports = ["1-65535"]
"#
    )
}

/// One Herald process.
pub struct Replica {
    pub child: tokio::process::Child,
    pub ops: SocketAddr,
}

/// A loopback address no one listens on yet.
pub fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

/// Starts `herald --config CONFIG run`, its output appended to `log`.
pub fn start(herald: &str, config: &Path, log: &Path) -> Replica {
    let ops = free_port();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    let child = tokio::process::Command::new(herald)
        .args(["--config", &config.to_string_lossy(), "run"])
        .env("HERALD_OPS__LISTEN", ops.to_string())
        .env("RUST_LOG", "warn")
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{herald} does not start: {e}"));
    Replica { child, ops }
}

/// Sends `sig` (KILL, TERM, STOP...) to a process.
pub fn signal_pid(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

pub fn signal(replica: &Replica, sig: &str) {
    if let Some(pid) = replica.child.id() {
        signal_pid(pid, sig);
    }
}

/// Waits until the replica's /readyz answers 2xx (up to 90 s).
pub async fn wait_ready(replica: &Replica) {
    let url = format!("http://{}/readyz", replica.ops);
    for _ in 0..900 {
        if let Ok(r) = reqwest::get(&url).await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("replica at {} never became ready", replica.ops);
}

/// The source partitions a replica owns, from its `/status`.
pub async fn owned(replica: &Replica) -> Vec<i64> {
    let Ok(resp) = reqwest::get(format!("http://{}/status", replica.ops)).await else {
        return Vec::new();
    };
    let text = resp.text().await.unwrap_or_default();
    let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    body["consumers"]["source"]["partitions"]
        .as_array()
        .map(|ps| ps.iter().filter_map(|p| p["partition"].as_i64()).collect())
        .unwrap_or_default()
}

/// A field of /proc/PID/status in kB (VmHWM, VmRSS); 0 when gone.
pub fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A dead-lettered event: its `seq` and the reason Herald wrote.
pub struct DeadLetter {
    pub seq: u64,
    pub reason: String,
}

/// The events dead-lettered to `topic` (of `partitions` partitions), per
/// webhook id, each with its `herald.reason`.
pub async fn dead_letters(brokers: &str, topic: &str, partitions: usize) -> HashMap<String, Vec<DeadLetter>> {
    let mut out: HashMap<String, Vec<DeadLetter>> = HashMap::new();
    for r in read_topic(brokers, topic, partitions).await {
        if let Some(seq) = r.seq {
            out.entry(r.header("herald.webhook.id")).or_default().push(DeadLetter {
                seq,
                reason: r.header("herald.reason"),
            });
        }
    }
    out
}

/// A record as [`read_topic`] read it: where it is, its headers and the
/// `seq` of the event in its value.
pub struct ReadRecord {
    pub partition: i32,
    pub offset: i64,
    /// Its timestamp, in milliseconds since the epoch.
    pub timestamp_ms: i64,
    pub headers: HashMap<String, String>,
    pub seq: Option<u64>,
}

impl ReadRecord {
    /// A header's value, or "" when the record has none of that name.
    pub fn header(&self, name: &str) -> String {
        self.headers.get(name).cloned().unwrap_or_default()
    }
}

/// Every record of `topic` (of `partitions` partitions), from the start to
/// the end of each partition (or 30 s, whichever comes first).
pub async fn read_topic(brokers: &str, topic: &str, partitions: usize) -> Vec<ReadRecord> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", format!("{topic}-reader"))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .create()
            .expect("a topic reader");
        consumer.subscribe(&[&topic]).expect("subscribed to the topic");
        let mut out = Vec::new();
        let mut eofs = HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while eofs.len() < partitions && Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(500)) {
                Some(Ok(m)) => {
                    let headers = m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .filter_map(|h| {
                                    Some((h.key.to_owned(), String::from_utf8_lossy(h.value?).into_owned()))
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    let seq = m
                        .payload()
                        .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
                        .and_then(|v| v["seq"].as_u64());
                    out.push(ReadRecord {
                        partition: m.partition(),
                        offset: m.offset(),
                        timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
                        headers,
                        seq,
                    });
                }
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                    eofs.insert(p);
                }
                _ => {}
            }
        }
        out
    })
    .await
    .expect("the topic reader ran")
}
