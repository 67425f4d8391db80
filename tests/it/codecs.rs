//! Records as other producers write them: every compression codec Kafka
//! has (none, gzip, snappy, lz4, zstd), from librdkafka and from Kafka's own
//! Java client, with keys and headers: each event is delivered byte for
//! byte, its key and headers read by the envelope rules.

use std::collections::BTreeSet;
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;

use crate::helpers::*;

const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

/// Envelope rules that read the type from a header, the id from the key:
/// what Herald reads of a record besides its value.
const RULES: &str = "[envelope.default]\nevent_type = \"header:type\"\nevent_id = \"key\"\n";

/// An event body that names its codec and number, with bytes JSON escapes.
fn body(codec: &str, n: usize) -> String {
    format!(r#"{{"codec":"{codec}","n":{n},"text":"caf\u00e9 \"quoted\" \\ tab\t"}}"#)
}

/// A test's topics, a receiver with a webhook for every codec's events,
/// and Herald reading them with [`RULES`].
async fn start(name: &str, partitions: i32) -> (TestEnv, TestReceiver, RunningApp) {
    let env = TestEnv::new(name, &["events"], partitions).await;
    let receiver = TestReceiver::ok().await;
    env.store()
        .await
        .put(&webhook("all", &receiver.url("/"), &["codec.*"]))
        .await
        .unwrap();
    let app = env.spawn(RULES).await;
    (env, receiver, app)
}

/// The bodies a receiver got, as written.
fn bodies(receiver: &TestReceiver) -> BTreeSet<String> {
    receiver
        .received()
        .iter()
        .map(|r| String::from_utf8(r.body.to_vec()).expect("UTF-8 as sent"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_compressed_with_every_codec_by_librdkafka_are_delivered_byte_for_byte() {
    let (env, receiver, app) = start("codecs-rd", 2).await;
    let per_codec = 20;
    let mut sent = BTreeSet::new();
    for codec in CODECS {
        // Batched (linger), so each codec compresses batches of several records.
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("compression.codec", codec)
            .set("linger.ms", "50")
            .create()
            .unwrap();
        let sends: Vec<_> = (0..per_codec)
            .map(|n| {
                let value = body(codec, n);
                sent.insert(value.clone());
                let key = format!("{codec}-{n}");
                let headers = OwnedHeaders::new().insert(Header {
                    key: "type",
                    value: Some(format!("codec.{codec}").as_bytes()),
                });
                let producer = producer.clone();
                let topic = env.topic().to_owned();
                async move {
                    let record = FutureRecord::to(&topic).key(&key).payload(&value).headers(headers);
                    producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e)
                }
            })
            .collect();
        for result in futures::future::join_all(sends).await {
            result.expect("record produced");
        }
        producer.flush(Duration::from_secs(10)).unwrap();
    }
    receiver.wait_for(sent.len(), Duration::from_secs(60)).await;
    assert_eq!(bodies(&receiver), sent);
    let received = receiver.received();
    let distinct_ids: BTreeSet<&str> = received.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(distinct_ids.len(), sent.len(), "one id per key");
    assert_eq!(
        app.metric(r#"herald_partition_stalls_total{cause="not_read",consumer="source"}"#)
            .await,
        0.0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_compressed_with_every_codec_by_the_java_client_are_delivered_byte_for_byte() {
    let (env, receiver, app) = start("codecs-java", 1).await;
    let per_codec = 10;
    let mut sent = BTreeSet::new();
    for codec in CODECS {
        // The console producer's line: headers, key and value, tab-separated.
        let mut lines = String::new();
        for n in 0..per_codec {
            let value = body(codec, n).replace('\t', " ");
            lines.push_str(&format!("type:codec.{codec}\t{codec}-{n}\t{value}\n"));
            sent.insert(value);
        }
        java_console_producer(env.topic(), codec, &lines).await;
    }
    receiver.wait_for(sent.len(), Duration::from_secs(60)).await;
    assert_eq!(bodies(&receiver), sent);
    app.stop().await;
}

/// Writes `lines` to `topic` with Kafka's own console producer (the Java
/// client), compressed with `codec`.
async fn java_console_producer(topic: &str, codec: &str, lines: &str) {
    use tokio::io::AsyncWriteExt;
    let libs = std::env::var("HERALD_TEST_KAFKA_LIBS")
        .expect("HERALD_TEST_KAFKA_LIBS is not set: run the suite with scripts/test, which fetches Kafka's jars");
    // Kafka 4 moved the tool out of the Scala core (Kafka 3 keeps it there).
    let four = std::fs::read_dir(&libs)
        .expect("Kafka's jars")
        .any(|jar| jar.is_ok_and(|j| j.file_name().to_string_lossy().starts_with("kafka-tools-4")));
    let class = if four {
        "org.apache.kafka.tools.ConsoleProducer"
    } else {
        "kafka.tools.ConsoleProducer"
    };
    let mut child = tokio::process::Command::new("java")
        .arg("-cp")
        .arg(format!("{libs}/*"))
        .arg(class)
        .args(["--bootstrap-server", &brokers(), "--topic", topic])
        .args(["--compression-codec", codec])
        .args(["--property", "parse.key=true", "--property", "parse.headers=true"])
        .args(["--producer-property", "linger.ms=50"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("java runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(lines.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the console producer finishes")
        .unwrap();
    assert!(
        out.status.success(),
        "console producer ({codec}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A transactional producer (Kafka Streams, an outbox relay): what it
/// aborts never reaches a receiver, what it commits does, once, and events
/// after a transaction still open wait for it.
/// Herald's group commits past the commit markers, so its lag comes back
/// to 0, and the progress check does not take the wait for a stall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_producer_s_aborted_events_never_reach_receivers_and_its_committed_ones_do_once() {
    let (env, receiver, app) = start("transactions", 1).await;
    let topic = env.topic().to_owned();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("transactional.id", unique("outbox"))
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let plain: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let send = |producer: &FutureProducer, kind: &str, n: usize| {
        let (producer, topic) = (producer.clone(), topic.clone());
        let (key, value) = (format!("{kind}-{n}"), body(kind, n));
        let kind = format!("codec.{kind}");
        async move {
            let headers = OwnedHeaders::new().insert(Header {
                key: "type",
                value: Some(kind.as_bytes()),
            });
            let record = FutureRecord::to(&topic).key(&key).payload(&value).headers(headers);
            producer
                .send(record, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| e)
                .expect("produced");
            value
        }
    };
    let blocking = |f: &dyn Fn() -> rdkafka::error::KafkaResult<()>| {
        tokio::task::block_in_place(|| f().expect("transaction step"))
    };
    blocking(&|| producer.init_transactions(Duration::from_secs(30)));

    // Aborted, then committed, then a transaction left open while a plain
    // producer writes after it.
    blocking(&|| producer.begin_transaction());
    for n in 0..10 {
        send(&producer, "aborted", n).await;
    }
    blocking(&|| producer.abort_transaction(Duration::from_secs(30)));
    let mut committed = BTreeSet::new();
    blocking(&|| producer.begin_transaction());
    for n in 0..10 {
        committed.insert(send(&producer, "committed", n).await);
    }
    blocking(&|| producer.commit_transaction(Duration::from_secs(30)));
    receiver.wait_for(committed.len(), Duration::from_secs(60)).await;
    assert_eq!(
        bodies(&receiver),
        committed,
        "the committed transaction's events, none of the aborted one's"
    );

    blocking(&|| producer.begin_transaction());
    let mut later = Vec::new();
    for n in 0..5 {
        later.push(send(&producer, "open", n).await);
    }
    for n in 0..5 {
        later.push(send(&plain, "after", n).await);
    }
    // Past two progress checks (2 s each) with the transaction open.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        bodies(&receiver),
        committed,
        "nothing past an open transaction is read (the consumer reads committed records only)"
    );
    blocking(&|| producer.commit_transaction(Duration::from_secs(30)));
    receiver
        .wait_for(committed.len() + later.len(), Duration::from_secs(60))
        .await;
    env.wait_finished().await;
    let received: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| String::from_utf8(r.body.to_vec()).unwrap())
        .collect();
    assert_eq!(received.len(), committed.len() + later.len(), "each event once");
    let all: BTreeSet<String> = received.into_iter().collect();
    let expected: BTreeSet<String> = committed.iter().chain(&later).cloned().collect();
    assert_eq!(all, expected, "the committed events, no aborted one even later");
    let lag = format!(r#"herald_consumer_lag_messages{{consumer="source",partition="0",topic="{topic}"}}"#);
    app.wait_metric(&lag, 0.0).await;
    assert_eq!(
        app.metric(r#"herald_partition_stalls_total{cause="not_read",consumer="source"}"#)
            .await,
        0.0,
        "an open transaction is a wait the producer set, not a stall"
    );
    app.stop().await;
}
