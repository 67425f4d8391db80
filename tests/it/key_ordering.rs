//! Per-key ordering (`"ordering"` on a webhook; retry::ordering): the
//! deliveries of one key reach the webhook one at a time, in their source
//! partition's order, retries included, across replicas and a kill -9.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use herald::routing::ordering::Ordering;

use crate::helpers::*;

fn ordered(id: &str, url: &str, ordering: &str) -> herald::webhook::Webhook {
    let mut w = webhook(id, url, &["*"]);
    w.ordering = Some(Ordering::parse(ordering).unwrap());
    w
}

/// Webhooks for every event: `ordered` by record key, and `unordered`.
async fn ordered_and_not(env: &TestEnv, ordered_to: &TestReceiver, unordered_to: &TestReceiver) {
    let store = env.store().await;
    store
        .put(&ordered("ordered", &ordered_to.url("/in"), r#""key""#))
        .await
        .unwrap();
    store
        .put(&webhook("unordered", &unordered_to.url("/in"), &["*"]))
        .await
        .unwrap();
}

/// Publishes `per_key` events for each of `keys` keys (`key-00`, ...),
/// interleaved; returns each key's events (`n`) in the order published.
async fn publish(env: &TestEnv, keys: u64, per_key: u64) -> BTreeMap<String, Vec<u64>> {
    let publisher = Publisher::new();
    let mut events: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for n in 0..per_key {
        for k in 0..keys {
            let key = format!("key-{k:02}");
            let body = format!(r#"{{"event":"a.b","k":"{key}","n":{n}}}"#);
            publisher.send(env.topic(), Some(&key), body.as_bytes(), &[]).await;
            events.entry(key).or_default().push(n);
        }
    }
    events
}

/// Per key, the `n` of each request in arrival order, and whether it
/// succeeded.
fn by_key(received: &[Received]) -> BTreeMap<String, Vec<(u64, bool)>> {
    let mut keys: BTreeMap<String, Vec<(u64, bool)>> = BTreeMap::new();
    for r in received {
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let key = body["k"].as_str().unwrap().to_owned();
        keys.entry(key)
            .or_default()
            .push((body["n"].as_u64().unwrap(), !r.failed_randomly));
    }
    keys
}

/// How many distinct events were delivered successfully.
fn delivered(keys: &BTreeMap<String, Vec<(u64, bool)>>) -> usize {
    keys.values()
        .map(|a| {
            a.iter()
                .filter(|(_, ok)| *ok)
                .map(|(n, _)| n)
                .collect::<HashSet<_>>()
                .len()
        })
        .sum()
}

/// Checks one key's requests: every event was delivered, none was
/// attempted before every event published before it had been delivered,
/// and none was sent again after a later one had been: an event sent again
/// after it was delivered (a repeat, counted) is the last one delivered.
/// Returns the repeats, or what is out of order.
fn check_key(key: &str, arrivals: &[(u64, bool)], events: &[u64]) -> Result<usize, String> {
    let position: BTreeMap<u64, usize> = events.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    // Events delivered, as a prefix of `events` (the next one to deliver).
    let mut next = 0;
    let mut done = HashSet::new();
    let mut repeats = 0;
    for (i, &(n, ok)) in arrivals.iter().enumerate() {
        let at = position[&n];
        if done.contains(&n) {
            if events[next - 1] != n {
                return Err(format!(
                    "key {key}: request {i} repeats event {n} after the later event {} was delivered ({arrivals:?})",
                    events[next - 1]
                ));
            }
            repeats += 1;
            continue;
        }
        if at != next {
            return Err(format!(
                "key {key}: request {i} is event {n} while event {} was not delivered yet ({arrivals:?})",
                events[next]
            ));
        }
        if ok {
            done.insert(n);
            next += 1;
        }
    }
    if next != events.len() {
        return Err(format!("key {key}: {} of {} events delivered", next, events.len()));
    }
    Ok(repeats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ordered_webhook_gets_each_key_in_order_through_random_failures_and_a_replica_killed() {
    const KEYS: u64 = 50;
    const PER_KEY: u64 = 100;
    let env = TestEnv::new("keyorder", &["events"], 4)
        .await
        .with_tiers_of(
            &[
                Tier::after_ms(1000),
                Tier::after_ms(1000),
                Tier::after_ms(1000),
                Tier::after_ms(1000),
                Tier::after_ms(1000),
            ],
            2,
        )
        .await;
    // One request in twenty fails, retries included: five in a row (the
    // tiers run out) is one in 3 million.
    let receiver = TestReceiver::start(Behaviour::FailRandomly(50)).await;
    let unordered = TestReceiver::start(Behaviour::FailRandomly(50)).await;
    ordered_and_not(&env, &receiver, &unordered).await;
    let config = env.config_toml();
    let mut first = HeraldProcess::spawn(&config);
    let second = HeraldProcess::spawn(&config);
    first.wait_ready().await;
    second.wait_ready().await;

    let events = publish(&env, KEYS, PER_KEY).await;
    // Killed mid-stream, with deliveries in flight and keys parked.
    receiver.wait_for(1_500, Duration::from_secs(120)).await;
    first.signal("KILL");
    first.child.wait().await.unwrap();
    let at_kill = receiver.count();

    let total = (KEYS * PER_KEY) as usize;
    eventually(Duration::from_secs(600), "every ordered event to arrive", || async {
        let keys = by_key(&receiver.received());
        (delivered(&keys) == total).then_some(())
    })
    .await;
    // The last arrival of each key succeeded: wait until nothing is in a tier.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let arrived = by_key(&receiver.received()).into_iter().collect::<BTreeMap<_, _>>();
    let mut repeats = 0;
    for (key, published) in &events {
        repeats += check_key(key, &arrived[key], published).unwrap_or_else(|e| panic!("{e}"));
    }
    let requests: usize = arrived.values().map(Vec::len).sum();
    let failed: usize = arrived.values().flatten().filter(|(_, ok)| !ok).count();
    let parked = metric_at(second.ops, "herald_ordering_steps_total{step=\"parked\"}").await;
    let released = metric_at(second.ops, "herald_ordering_steps_total{step=\"released\"}").await;
    println!(
        "ordered: {total} events over {KEYS} keys, {requests} requests ({failed} failed, {at_kill} before \
         the kill), {repeats} repeats of delivered events, parked {parked}, released {released} on the survivor"
    );
    // The unordered webhook got everything too (at least once).
    let got = eventually(Duration::from_secs(120), "every unordered event to arrive", || async {
        let keys = by_key(&unordered.received());
        (delivered(&keys) == total).then_some(keys)
    })
    .await;
    // ... and, retried past later events, out of order: what the check
    // above would have found without ordering.
    let disordered = events
        .iter()
        .filter(|(key, published)| check_key(key, &got[*key], published).is_err())
        .count();
    println!("unordered: {disordered} of {KEYS} keys out of order");
    assert!(
        disordered > 0,
        "the unordered webhook's retries never overtook: the check proves nothing"
    );
    // Every key's queue in Redis is gone with its last delivery.
    let mut redis = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}order:*", env.prefix))
        .query_async(&mut redis)
        .await
        .unwrap();
    let queues: Vec<&String> = left.iter().filter(|k| !k.contains("order:done:")).collect();
    assert!(queues.is_empty(), "queues left in Redis: {queues:?}");
    drop(second);
}

/// The marks of one source partition in Redis: per key (its digest), the
/// last offset delivered.
async fn marks(env: &TestEnv, partition: i32) -> Vec<(String, f64)> {
    let mut redis = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("ZRANGE")
        .arg(format!("{}order:done:{}:{partition}", env.prefix, env.topic()))
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut redis)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_read_again_after_a_kill_are_skipped_not_delivered_after_later_ones_of_their_key() {
    const KEYS: u64 = 4;
    const PER_KEY: u64 = 50;
    let total = (KEYS * PER_KEY) as usize;
    let env = TestEnv::new("keymark", &["events"], 1).await;
    let receiver = TestReceiver::start(Behaviour::Status(200)).await;
    let control = TestReceiver::start(Behaviour::Status(200)).await;
    ordered_and_not(&env, &receiver, &control).await;
    // Nothing is committed before the kill: every record is read again.
    let config = env.config_toml().replace(
        "[kafka.consumer_properties]\n",
        "[kafka.consumer_properties]\n\"auto.commit.interval.ms\" = \"600000\"\n",
    );
    let mut first = HeraldProcess::spawn(&config);
    first.wait_ready().await;
    let events = publish(&env, KEYS, PER_KEY).await;
    receiver.wait_for(total, Duration::from_secs(120)).await;
    control.wait_for(total, Duration::from_secs(120)).await;
    // Each key's last delivery is marked (offsets 196..=199) a moment
    // after the receiver answered it.
    let last = (total - 1) as f64;
    eventually(
        Duration::from_secs(30),
        "every key's last delivery to be marked",
        || async {
            let marks = marks(&env, 0).await;
            (marks.len() == KEYS as usize && marks.iter().all(|(_, offset)| *offset > last - KEYS as f64)).then_some(())
        },
    )
    .await;
    first.signal("KILL");
    first.child.wait().await.unwrap();

    let second = HeraldProcess::spawn(&config);
    second.wait_ready().await;
    // The control webhook gets every event again: the records were read again.
    control.wait_for(2 * total, Duration::from_secs(120)).await;
    // Each ordered event read again is skipped (or delivered again).
    eventually(
        Duration::from_secs(60),
        "the ordered events read again to be routed",
        || async {
            let skipped = metric_at(second.ops, "herald_ordering_steps_total{step=\"skipped\"}").await as usize;
            (skipped + (receiver.count() - total) >= total).then_some(())
        },
    )
    .await;
    let arrived = by_key(&receiver.received());
    for (key, published) in &events {
        let repeats = check_key(key, &arrived[key], published).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(repeats, 0, "key {key}: {:?}", arrived[key]);
    }
    assert_eq!(receiver.count(), total, "no ordered event was delivered twice");
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_s_marks_are_dropped_below_its_committed_offset() {
    const KEYS: u64 = 300;
    let env = TestEnv::new("keyprune", &["events"], 1).await;
    let receiver = TestReceiver::start(Behaviour::Status(200)).await;
    let unordered = TestReceiver::start(Behaviour::Status(200)).await;
    ordered_and_not(&env, &receiver, &unordered).await;
    let _app = env.spawn("").await;
    // One event for each of 300 keys: 300 marks.
    publish(&env, KEYS, 1).await;
    receiver.wait_for(KEYS as usize, Duration::from_secs(120)).await;
    let marked = marks(&env, 0).await.len();
    assert!(marked > 0, "no marks written");
    // Once those offsets are committed (every second), the next batch of
    // marks drops them: the set holds the keys delivered since.
    let publisher = Publisher::new();
    let mut n = 0;
    let left = eventually(
        Duration::from_secs(60),
        "the marks below the committed offset to be dropped",
        || {
            n += 1;
            let body = format!(r#"{{"event":"a.b","k":"later-{n}","n":0}}"#);
            let publisher = &publisher;
            let env = &env;
            async move {
                publisher
                    .send(env.topic(), Some(&format!("later-{n}")), body.as_bytes(), &[])
                    .await;
                tokio::time::sleep(Duration::from_millis(500)).await;
                // Wait for what is asserted below, not only for fewer marks:
                // the first events' marks may be pruned as they go, so a
                // handful of theirs can be all that is left before the
                // later keys' marks drop them.
                let left = marks(env, 0).await;
                let only_later = left.iter().all(|(_, offset)| *offset >= KEYS as f64);
                (left.len() < 10 && only_later).then_some(left)
            }
        },
    )
    .await;
    println!(
        "marks: {marked} after the first 300 events, {} once committed",
        left.len()
    );
    assert!(
        left.iter().all(|(_, offset)| *offset >= KEYS as f64),
        "only the later keys' marks are left: {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_waits_behind_its_failed_event_while_other_keys_flow_and_a_body_pointer_orders_too() {
    let env = TestEnv::new("keywait", &["events"], 1)
        .await
        .with_tiers(&[Tier::after_ms(3000), Tier::after_ms(3000)])
        .await;
    // The first attempt of every delivery fails; the second succeeds.
    let receiver = TestReceiver::start(failing(1, 503, None)).await;
    let store = env.store().await;
    store
        .put(&ordered("by-customer", &receiver.url("/in"), r#"{"key":"/customer"}"#))
        .await
        .unwrap();
    let app = env.spawn("").await;
    let publisher = Publisher::new();
    // Customer a: three events; customer b: one, published after them.
    for (k, n) in [("a", 0), ("a", 1), ("a", 2), ("b", 0)] {
        let body = format!(r#"{{"event":"a.b","customer":"{k}","k":"{k}","n":{n}}}"#);
        publisher.json(env.topic(), &body).await;
    }
    // b's first attempt comes while a waits behind a/0's retry: a/1 and a/2
    // are not attempted until a/0 has succeeded.
    let got = receiver.wait_for(8, Duration::from_secs(120)).await;
    let keys = by_key(&got);
    let ns = |key: &str| keys[key].iter().map(|(n, _)| *n).collect::<Vec<_>>();
    assert_eq!(
        ns("a"),
        vec![0, 0, 1, 1, 2, 2],
        "a's events one at a time, each retried"
    );
    assert_eq!(ns("b"), vec![0, 0]);
    let first_b = got
        .iter()
        .position(|r| r.body.windows(3).any(|w| w == br#""b""#))
        .unwrap();
    let second_a0 = got
        .iter()
        .enumerate()
        .filter(|(_, r)| r.body.windows(13).any(|w| w == br#""k":"a","n":0"#))
        .nth(1)
        .map(|(i, _)| i)
        .unwrap();
    assert!(first_b < second_a0, "b did not wait for a's retry");
    app.wait_metric("herald_ordering_steps_total{step=\"parked\"}", 2.0)
        .await;
    app.stop().await;
}
