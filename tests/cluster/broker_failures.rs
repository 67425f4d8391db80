//! Broker failures with a stream of events in flight: the leader of a
//! source partition killed (kill -9) and restarted, the leader of a retry
//! tier's partition likewise, the active controller killed, the source
//! group's coordinator frozen (SIGSTOP) for 30 s and resumed. Each time every
//! event reaches both webhooks (one answers, one fails each first attempt so
//! that every event goes through the retry tier), duplicates keep their
//! original `webhook-id`, no retry comes early, Herald keeps running, the
//! lag returns to 0 within a stated time, and `/status` and the metrics show
//! the broker Herald could not reach.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::ClientConfig;

use crate::helpers::*;
use crate::nodes::Cluster;

/// The tests share one cluster: one fault at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Events in the stream, and their rate.
const EVENTS: usize = 2000;
const PER_SECOND: u64 = 100;
const PARTITIONS: i32 = 3;
/// The retry tier's delay.
const TIER_MS: u64 = 3000;
/// How long a killed node stays down, and a frozen one frozen.
const DOWN: Duration = Duration::from_secs(10);
const FROZEN: Duration = Duration::from_secs(30);
/// The lag is back to 0 within this after the fault is over.
const RECOVERY: Duration = Duration::from_secs(120);

/// Events in the `jam` envelope: the id is the event's own.
const RULES: &str = "[envelope.default]\npreset = \"jam\"\n[log]\nlevel = \"error\"\n";

fn event(n: usize) -> String {
    format!(r#"{{"id":"evt-{n}","type":"invoice.paid","created_at":"2026-12-05T00:00:00Z","data":{{"n":{n}}}}}"#)
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    SourceLeaderKilled,
    TierLeaderKilled,
    ControllerKilled,
    CoordinatorFrozen,
}

/// What the replica's `/metrics` and `/status` showed while it ran.
#[derive(Debug, Default)]
struct Observed {
    /// The most brokers `herald_kafka_brokers{state="unreachable"}` counted,
    /// over both consumers.
    max_unreachable: f64,
    /// `/status` listed the faulted node as unreachable.
    status_named_node: bool,
}

/// Samples the replica's metrics and status every 250 ms until stopped.
fn observe(ops: std::net::SocketAddr, node: i32) -> (Arc<Mutex<Observed>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Observed::default()));
    let shared = seen.clone();
    let task = tokio::spawn(async move {
        let http = reqwest::Client::new();
        loop {
            if let Ok(r) = http.get(format!("http://{ops}/metrics")).send().await {
                let text = r.text().await.unwrap_or_default();
                let n = ["source", "retry"]
                    .iter()
                    .map(|c| {
                        metric_value(
                            &text,
                            &format!(r#"herald_kafka_brokers{{consumer="{c}",state="unreachable"}}"#),
                        )
                    })
                    .fold(0.0, f64::max);
                let mut seen = shared.lock();
                seen.max_unreachable = seen.max_unreachable.max(n);
            }
            if let Ok(r) = http.get(format!("http://{ops}/status")).send().await {
                let text = r.text().await.unwrap_or_default();
                let status: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                let named = status["consumers"]
                    .as_object()
                    .into_iter()
                    .flat_map(|c| c.values())
                    .filter_map(|c| c["brokers"].as_array())
                    .flatten()
                    .any(|b| b["id"] == node && b["unreachable"] == true);
                if named {
                    shared.lock().status_named_node = true;
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    (seen, task)
}

/// How many records of `topic` wait behind `group`'s committed offsets
/// (all of a partition it never committed); `None` while the cluster cannot
/// say.
async fn lag(group: &str, topic: &str) -> Option<i64> {
    let committed = try_committed(group, topic, PARTITIONS).await?;
    let ends = try_end_offsets(topic, PARTITIONS).await?;
    Some(ends.iter().zip(&committed).map(|(end, at)| end - at.max(&0)).sum())
}

/// Each event id's deliveries at a receiver: (attempt, webhook-id, when).
fn by_event(receiver: &TestReceiver) -> BTreeMap<String, Vec<(u32, String, Instant)>> {
    let mut out: BTreeMap<String, Vec<(u32, String, Instant)>> = BTreeMap::new();
    for r in receiver.received() {
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_else(|e| {
            panic!(
                "a delivery whose body is not the JSON published ({e}): {} bytes {:?}, headers {:?}",
                r.body.len(),
                String::from_utf8_lossy(&r.body[..r.body.len().min(200)]),
                r.headers
            )
        });
        let id = body["id"].as_str().expect("the event's id").to_owned();
        out.entry(id)
            .or_default()
            .push((r.attempt(), r.header("webhook-id").to_owned(), r.at));
    }
    out
}

/// Publishes [`EVENTS`] at [`PER_SECOND`], keyed across the partitions, with
/// the idempotent producer a careful publisher uses (its own retries through
/// a leader change write no copies).
fn stream(topic: String) -> tokio::task::JoinHandle<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(1000 / PER_SECOND));
        let mut sends = Vec::with_capacity(EVENTS);
        for n in 0..EVENTS {
            tick.tick().await;
            let (producer, topic) = (producer.clone(), topic.clone());
            sends.push(tokio::spawn(async move {
                let (key, value) = (format!("k{n}"), event(n));
                producer
                    .send(
                        FutureRecord::to(&topic).key(&key).payload(&value),
                        Timeout::After(Duration::from_secs(300)),
                    )
                    .await
                    .map_err(|(e, _)| e)
            }));
        }
        for send in sends {
            send.await.unwrap().expect("every event produced");
        }
    })
}

async fn through(name: &str, fault: Fault) {
    let _one_at_a_time = SERIAL.lock().await;
    let cluster = Cluster::from_env();
    use_brokers(&cluster.bootstrap());
    cluster.repair().await;
    cluster.wait_healthy().await;

    let env = TestEnv::new(name, &["events"], PARTITIONS)
        .await
        .with_tiers_of(&[Tier::after_ms(TIER_MS)], PARTITIONS)
        .await;
    let ok = TestReceiver::ok().await;
    let flaky = TestReceiver::start(failing(1, 503, None)).await;
    let store = env.store().await;
    store.put(&webhook("ok", &ok.url("/"), &["*"])).await.unwrap();
    store.put(&webhook("flaky", &flaky.url("/"), &["*"])).await.unwrap();
    let app = env.spawn(RULES).await;
    let retry_group = format!("{}.retry", env.group);
    let tier = env.tiers[0].0.clone();

    let publishing = stream(env.topic().to_owned());
    // A quarter of the stream is out when the fault comes.
    tokio::time::sleep(Duration::from_millis(EVENTS as u64 / 4 * 1000 / PER_SECOND)).await;
    let node = match fault {
        Fault::SourceLeaderKilled => cluster.leader_of(env.topic(), 0).await,
        Fault::TierLeaderKilled => cluster.leader_of(&tier, 0).await,
        Fault::ControllerKilled => cluster.active_controller().await,
        Fault::CoordinatorFrozen => cluster.coordinator_of(&env.group).await,
    };
    let (observed, observing) = observe(app.ops, node);
    let target = cluster.node(node);
    match fault {
        Fault::CoordinatorFrozen => {
            target.freeze();
            tokio::time::sleep(FROZEN).await;
            target.thaw();
        }
        _ => {
            target.kill().await;
            tokio::time::sleep(DOWN).await;
            target.restart().await;
        }
    }
    let fault_over = Instant::now();
    publishing.await.expect("the stream ran");

    let all: BTreeSet<String> = (0..EVENTS).map(|n| format!("evt-{n}")).collect();
    eventually(Duration::from_secs(300), "every event at both webhooks", || async {
        let answered = by_event(&ok).into_keys().collect::<BTreeSet<_>>();
        let retried = by_event(&flaky)
            .into_iter()
            .filter(|(_, got)| got.iter().any(|(attempt, _, _)| *attempt >= 2))
            .map(|(id, _)| id)
            .collect::<BTreeSet<_>>();
        (answered == all && retried == all).then_some(())
    })
    .await;
    eventually(RECOVERY, "the lag of both groups back to 0", || async {
        let source = lag(&env.group, env.topic()).await?;
        let retry = lag(&retry_group, &tier).await?;
        (source == 0 && retry == 0).then_some(())
    })
    .await;
    let recovered = fault_over.elapsed();
    observing.abort();

    let mut duplicates = BTreeMap::new();
    for (receiver, at) in [(&ok, "ok"), (&flaky, "flaky")] {
        for (id, got) in by_event(receiver) {
            let ids: BTreeSet<&str> = got.iter().map(|(_, w, _)| w.as_str()).collect();
            assert_eq!(ids.len(), 1, "{id} at {at} arrived under one webhook-id: {ids:?}");
            let answered = got
                .iter()
                .filter(|(attempt, _, _)| receiver.addr != flaky.addr || *attempt >= 2);
            *duplicates.entry(at).or_insert(0) += answered.count().saturating_sub(1);
        }
    }
    for (id, got) in by_event(&flaky) {
        let first = got.iter().filter(|(a, _, _)| *a == 1).map(|(_, _, t)| *t).min();
        let retried = got.iter().filter(|(a, _, _)| *a >= 2).map(|(_, _, t)| *t).min();
        let (first, retried) = (first.expect("a first attempt"), retried.expect("a retry"));
        let waited = retried - first;
        assert!(
            waited >= Duration::from_millis(TIER_MS),
            "{id}: retried after {waited:?}, early"
        );
    }
    // Copies come from what was read and not yet committed when the group
    // lost track of a member (commits stall while the cluster shrinks its
    // in-sync replicas): a few seconds of the stream, never a replay of it.
    // What the replica did meanwhile: rebalances and commits, for a failure's message.
    let metrics = app.metrics().await;
    let seen: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("herald_rebalances_total") || l.starts_with("herald_offset_commits_total"))
        .collect();
    for (at, copies) in &duplicates {
        assert!(
            *copies <= EVENTS / 2,
            "{copies} duplicates at {at} ({duplicates:?}): a replay, not a fault's in-flight work; {seen:?}"
        );
    }
    assert!(app.is_running(), "Herald ran through the fault without stopping");
    let observed = std::mem::take(&mut *observed.lock());
    println!(
        "{fault:?} (node {node}): {EVENTS} events to 2 webhooks, 0 lost, duplicates {duplicates:?}, lag 0 \
         {:.1} s after the fault ended; unreachable brokers seen: {}, named on /status: {}",
        recovered.as_secs_f64(),
        observed.max_unreachable,
        observed.status_named_node
    );
    assert!(
        observed.max_unreachable >= 1.0,
        "herald_kafka_brokers showed the node: {observed:?}"
    );
    assert!(
        observed.status_named_node,
        "/status named node {node} unreachable: {observed:?}"
    );
    app.stop().await;
    cluster.wait_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_is_lost_when_a_source_partition_s_leader_is_killed_and_restarted() {
    through("cl-source-leader", Fault::SourceLeaderKilled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_is_lost_when_a_retry_tier_partition_s_leader_is_killed_and_restarted() {
    through("cl-tier-leader", Fault::TierLeaderKilled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_is_lost_when_the_active_controller_is_killed_and_restarted() {
    through("cl-controller", Fault::ControllerKilled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_is_lost_when_the_group_coordinator_freezes_for_30_seconds() {
    through("cl-frozen", Fault::CoordinatorFrozen).await;
}
