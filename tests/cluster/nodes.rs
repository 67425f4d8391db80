//! The three-node Apache Kafka cluster `scripts/test` starts
//! (`start_kafka_cluster` in scripts/lib.sh): where its nodes are, which one
//! leads what, and the faults a test injects into them (kill -9, restart,
//! SIGSTOP, SIGCONT).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use crate::helpers::eventually;

/// One node: broker and controller in one process.
#[derive(Debug, Clone)]
pub struct Node {
    /// Its `node.id`.
    pub id: i32,
    /// Its broker listener, `127.0.0.1:PORT`.
    pub address: String,
    /// Its data, log, pid file's name and `run` script.
    dir: PathBuf,
}

impl Node {
    fn pid_file(&self) -> PathBuf {
        let name = self.dir.file_name().expect("node directory").to_owned();
        self.dir.with_file_name(format!("{}.pid", name.to_string_lossy()))
    }

    fn pid(&self) -> String {
        std::fs::read_to_string(self.pid_file())
            .expect("the node's pid file")
            .trim()
            .to_owned()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} node {}", self.id);
    }

    fn listening(&self) -> bool {
        std::net::TcpStream::connect(&self.address).is_ok()
    }

    /// kill -9, and waits until its listener is gone.
    pub async fn kill(&self) {
        self.signal("KILL");
        eventually(
            Duration::from_secs(30),
            "the killed node's listener to close",
            || async { (!self.listening()).then_some(()) },
        )
        .await;
    }

    /// Starts it again on its data (as an operator restarts a node), and
    /// waits until it has started.
    pub async fn restart(&self) {
        let log = self.dir.join("server.log");
        std::fs::write(&log, "").expect("the node's log truncated");
        // Detached (setsid -f): it outlives this test and is no child of it;
        // scripts/test stops it by its pid file.
        let status = Command::new("setsid")
            .arg("-f")
            .arg(self.dir.join("run"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("setsid runs");
        assert!(status.success(), "node {} launched", self.id);
        eventually(Duration::from_secs(120), "the restarted node to start", || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.contains("Kafka Server started").then_some(())
        })
        .await;
    }

    /// SIGSTOP: the process holds its connections and answers nothing.
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    /// SIGCONT after [`Node::freeze`].
    pub fn thaw(&self) {
        self.signal("CONT");
    }
}

/// The cluster's nodes, from the file `HERALD_TEST_CLUSTER` names.
pub struct Cluster {
    pub nodes: Vec<Node>,
}

impl Cluster {
    pub fn from_env() -> Cluster {
        let file = std::env::var("HERALD_TEST_CLUSTER").expect(
            "HERALD_TEST_CLUSTER is not set: run the cluster tests with scripts/test, which starts a \
             three-node Kafka cluster and names its nodes file there",
        );
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
        let nodes = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                Node {
                    id: f[0].parse().expect("node id"),
                    address: f[1].to_owned(),
                    dir: PathBuf::from(f[2]),
                }
            })
            .collect::<Vec<_>>();
        assert_eq!(nodes.len(), 3, "three nodes in {file}");
        Cluster { nodes }
    }

    /// Every node's address: what a client bootstraps from.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.address.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn node(&self, id: i32) -> &Node {
        self.nodes.iter().find(|n| n.id == id).expect("a node of the cluster")
    }

    fn client(&self) -> BaseConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .expect("metadata client")
    }

    /// The node leading `topic`'s `partition`.
    pub async fn leader_of(&self, topic: &str, partition: i32) -> i32 {
        let client = self.client();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let metadata = client
                .fetch_metadata(Some(&topic), Duration::from_secs(10))
                .expect("metadata");
            metadata.topics()[0]
                .partitions()
                .iter()
                .find(|p| p.id() == partition)
                .expect("the partition")
                .leader()
        })
        .await
        .unwrap()
    }

    /// The node coordinating `group`: the leader of its partition of
    /// `__consumer_offsets` (Kafka's mapping: the group id's Java hash code,
    /// made positive, modulo that topic's partitions).
    pub async fn coordinator_of(&self, group: &str) -> i32 {
        let client = self.client();
        let hash = java_hash(group);
        tokio::task::spawn_blocking(move || {
            let metadata = client
                .fetch_metadata(Some("__consumer_offsets"), Duration::from_secs(10))
                .expect("metadata");
            let partitions = metadata.topics()[0].partitions();
            let index = (hash & 0x7fff_ffff) % partitions.len() as i32;
            partitions
                .iter()
                .find(|p| p.id() == index)
                .expect("its partition")
                .leader()
        })
        .await
        .unwrap()
    }

    /// The active controller of the KRaft quorum, as Kafka's own
    /// `kafka-metadata-quorum` tool reports it.
    pub async fn active_controller(&self) -> i32 {
        let libs = std::env::var("HERALD_TEST_KAFKA_LIBS").expect("HERALD_TEST_KAFKA_LIBS (set by scripts/test)");
        let bootstrap = self.bootstrap();
        let out = tokio::task::spawn_blocking(move || {
            Command::new("java")
                .arg("-cp")
                .arg(format!("{libs}/*"))
                .arg("org.apache.kafka.tools.MetadataQuorumCommand")
                .args(["--bootstrap-server", &bootstrap, "describe", "--status"])
                .output()
                .expect("java runs")
        })
        .await
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| l.strip_prefix("LeaderId:"))
            .and_then(|id| id.trim().parse().ok())
            .unwrap_or_else(|| panic!("no LeaderId in: {text}{}", String::from_utf8_lossy(&out.stderr)))
    }

    /// Brings back what an earlier test left broken (a node frozen, or
    /// killed and not restarted, when that test failed midway).
    pub async fn repair(&self) {
        for node in &self.nodes {
            let _ = Command::new("kill").arg("-CONT").arg(node.pid()).status();
            if !node.listening() {
                node.restart().await;
            }
        }
    }

    /// Waits until every node answers and every partition of every topic
    /// (the internal ones too) has all three replicas in sync: the state a
    /// test starts from and a fault is repaired to.
    pub async fn wait_healthy(&self) {
        eventually(
            Duration::from_secs(180),
            "every node up and every replica in sync",
            || async {
                if !self.nodes.iter().all(Node::listening) {
                    return None;
                }
                let client = self.client();
                tokio::task::spawn_blocking(move || {
                    let metadata = client.fetch_metadata(None, Duration::from_secs(5)).ok()?;
                    let in_sync = metadata.brokers().len() == 3
                        && metadata
                            .topics()
                            .iter()
                            .flat_map(|t| t.partitions())
                            .all(|p| p.isr().len() == 3 && p.leader() >= 0);
                    in_sync.then_some(())
                })
                .await
                .unwrap()
            },
        )
        .await;
    }
}

/// Java's `String.hashCode`, which Kafka maps group ids to partitions with.
fn java_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, unit| h.wrapping_mul(31).wrapping_add(i32::from(unit)))
}

#[test]
fn group_ids_hash_as_java_strings_do() {
    // Values of String.hashCode() in Java.
    assert_eq!(java_hash(""), 0);
    assert_eq!(java_hash("hello"), 99_162_322);
    assert_eq!(java_hash("herald-group"), -1_532_935_722);
}
