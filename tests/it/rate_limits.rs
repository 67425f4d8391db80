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
