//! Rate limits per webhook (`limits.rate`), held across replicas through
//! Redis, and lowered by a receiver's `429` (docs/rate-limits.md).

use std::time::{Duration, Instant};

use herald::webhook::RateLimit;

use crate::helpers::*;

/// The most requests `received` holds in any window of `span` (sliding).
fn most_within(received: &[Received], span: Duration) -> usize {
    let mut at: Vec<Instant> = received.iter().map(|r| r.at).collect();
    at.sort();
    let mut most = 0;
    let mut start = 0;
    for end in 0..at.len() {
        while at[end].duration_since(at[start]) >= span {
            start += 1;
        }
        most = most.max(end - start + 1);
    }
    most
}

fn limited(id: &str, url: &str, per_second: f64, burst: u32) -> herald::webhook::Webhook {
    let mut w = webhook(id, url, &["*"]);
    w.limits.rate = Some(RateLimit {
        per_second,
        burst: Some(burst),
    });
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_hold_a_webhook_to_its_rate_in_every_second_while_an_unlimited_one_drains_at_once() {
    let env = TestEnv::new("rate-two", &["events"], 4)
        .await
        .with_tiers(&[Tier::after_ms(3000)])
        .await;
    let slow = TestReceiver::ok().await;
    let fast = TestReceiver::ok().await;
    let store = env.store().await;
    store.put(&limited("limited", &slow.url("/in"), 20.0, 5)).await.unwrap();
    store
        .put(&webhook("unlimited", &fast.url("/in"), &["*"]))
        .await
        .unwrap();
    // Deliveries that would wait more than 10 s for the rate go back to the
    // tier (3 s) and come again, their attempt count unchanged.
    let overlay = "[delivery]\nmax_queue_wait = \"10s\"";
    let one = env.spawn(overlay).await;
    let two = env.spawn(overlay).await;

    let publisher = Publisher::new();
    let began = Instant::now();
    for n in 0..1000 {
        publisher
            .json(env.topic(), &format!(r#"{{"event":"a.b","n":{n}}}"#))
            .await;
    }
    fast.wait_for(1000, Duration::from_secs(120)).await;
    let fast_took = began.elapsed();
    let limited_then = slow.count();
    let got = slow.wait_for(1000, Duration::from_secs(300)).await;
    let slow_took = began.elapsed();
    let most = most_within(&got, Duration::from_secs(1));
    println!(
        "unlimited: 1000 in {:.1} s; limited (20/s, burst 5): {limited_then} by then, 1000 in {:.1} s, \
         at most {most} in any second",
        fast_took.as_secs_f64(),
        slow_took.as_secs_f64()
    );
    assert_eq!(got.len(), 1000);
    // The rate and the burst, one lease (two tokens at 20/s) per replica
    // sent in the second after the one it was counted in, and 3 for the
    // receiver, which stamps arrivals in a process that may itself be held
    // up on a loaded machine.
    assert!(most <= 20 + 5 + 2 * 2 + 3, "at most {most} in one second");
    assert!(
        limited_then < 600,
        "the unlimited webhook drained without waiting for the limited one ({limited_then} of its events delivered by then)"
    );
    assert!(
        got.iter().all(|r| r.attempt() == 1),
        "a delivery waiting for the rate is not an attempt"
    );
    let deferred = one
        .metric(r#"herald_deliveries_total{class="rate_limited",outcome="failed"}"#)
        .await
        + two
            .metric(r#"herald_deliveries_total{class="rate_limited",outcome="failed"}"#)
            .await;
    assert!(deferred > 0.0, "some deliveries went back to the tier rather than wait");
    one.stop().await;
    two.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_lowers_the_rate_for_a_while_and_it_comes_back() {
    let env = TestEnv::new("rate-429", &["events"], 1)
        .await
        .with_tiers(&[Tier::after_ms(1000)])
        .await;
    // Four 429s, then 204s.
    let receiver = TestReceiver::start(Behaviour::Sequence(vec![429, 429, 429, 429, 204])).await;
    env.store()
        .await
        .put(&limited("busy", &receiver.url("/in"), 20.0, 1))
        .await
        .unwrap();
    let app = env.spawn("[delivery]\nrate_recovery = \"4s\"").await;

    let publisher = Publisher::new();
    for n in 0..150 {
        publisher
            .json(env.topic(), &format!(r#"{{"event":"a.b","n":{n}}}"#))
            .await;
    }
    let got = receiver.wait_for(154, Duration::from_secs(120)).await;
    assert_eq!(got.len(), 154, "150 delivered, after four 429s");
    app.wait_metric("herald_rate_slowdowns_total", 4.0).await;
    // Sent in order of arrival: the 4th is the last 429.
    let mut at: Vec<Instant> = got.iter().map(|r| r.at).collect();
    at.sort();
    let last_429 = at[3];
    let second_after = at
        .iter()
        .filter(|t| **t > last_429 && t.duration_since(last_429) < Duration::from_secs(1))
        .count();
    let most = most_within(&got, Duration::from_secs(1));
    println!("in the second after the fourth 429: {second_after}; at most {most} in any second");
    // Halved four times: 1.25 a second, coming back to 20 over 4 s (about
    // 3.6 a second on average over the first), against 20 without a 429.
    assert!(second_after <= 10, "{second_after} in the second after the 429s");
    // Back to its own rate: the rest went at about 20 a second.
    assert!(most >= 15, "the rate came back ({most} at most in one second)");
    app.stop().await;
}

/// While Redis does not answer a replica, it keeps to its share of the
/// webhook's rate: the rate divided by the replicas that leased the
/// webhook's tokens in the last 10 s, as its last lease counted them,
/// starting from no token (what it leased last is spent). The replicas
/// together then still keep to the rate, not the rate times the replicas.
#[tokio::test]
async fn a_replica_redis_does_not_answer_keeps_to_its_share_of_the_rate() {
    use herald::delivery::rate::{Leases, RateGate};
    use herald::telemetry::Telemetry;

    let prefix = format!("{}:", unique("rate-share"));
    let client = redis::Client::open(redis_url()).unwrap();
    let conn = herald::config::redis::RedisConfig::lazy_connection(&client).unwrap();
    let replica = |conn| Leases::new(conn, &prefix, Duration::from_secs(60), Telemetry::new(&[], 10));
    let (one, two) = (replica(conn.clone()), replica(conn.clone()));
    let limit = RateLimit {
        per_second: 40.0,
        burst: Some(4),
    };
    let (gate_one, gate_two) = (RateGate::new(limit), RateGate::new(limit));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    // One token at a time: each acquire leases, and the second lease of
    // replica one counts both.
    gate_one.acquire(Some(&one), "w", deadline).await.unwrap();
    gate_two.acquire(Some(&two), "w", deadline).await.unwrap();
    gate_one.acquire(Some(&one), "w", deadline).await.unwrap();
    let bucket: std::collections::HashMap<String, String> =
        redis::AsyncCommands::hgetall(&mut conn.clone(), format!("{prefix}rate:w"))
            .await
            .unwrap();
    assert_eq!(
        bucket.keys().filter(|k| k.starts_with("r:")).count(),
        2,
        "the bucket names the two replicas that leased: {bucket:?}"
    );

    // Nothing listens on port 1: every lease of replica one fails now, at
    // once (no reconnection attempts to wait for).
    let gone = redis::Client::open("redis://127.0.0.1:1/").unwrap();
    let gone = redis::aio::ConnectionManager::new_lazy_with_config(
        gone,
        redis::aio::ConnectionManagerConfig::new().set_number_of_retries(0),
    )
    .unwrap();
    let gone = replica(gone);
    let began = Instant::now();
    for _ in 0..21 {
        gate_one.acquire(Some(&gone), "w", deadline).await.unwrap();
    }
    // Its share is 20 a second from an empty bucket: the 21st token comes
    // 1.05 s in. Alone at the full rate with its burst (as before) they took
    // 0.43 s; a loaded machine only makes it slower.
    let took = began.elapsed();
    assert!(took >= Duration::from_millis(1000), "21 tokens in {took:?}");
    let _: () = redis::AsyncCommands::del(&mut conn.clone(), format!("{prefix}rate:w"))
        .await
        .unwrap();
}
