//! Scale-out, measured: deliveries/s with 1, 2 and 3 Herald replicas in one
//! consumer group against receivers that take `--latency-ms` to answer, where
//! each replica's per-endpoint concurrency binds rather than CPU; then, with
//! events flowing at a steady rate, how long each step of scaling 1 -> 2 -> 3
//! -> 2 -> 1 holds deliveries up.
//!
//!     scaleout --brokers HOST:PORT --herald target/release/herald [--redis URL]
//!              [--webhooks 8] [--latency-ms 50] [--per-endpoint 4]
//!              [--events 3000] [--rate 40] [--max-queue-wait 10m]
//!
//! Each webhook is its own receiver, on its own loopback address
//! (127.0.0.11, 127.0.0.12, ...), so that no per-host limit is shared. A
//! replica can keep `webhooks x per-endpoint` requests open, which bounds it
//! at `webhooks x per-endpoint / latency` deliveries/s.
//!
//! Throughput: `--events` events are written to a 12-partition topic first;
//! for N = 1, 2, 3 a new group of N replicas delivers that backlog from the
//! start, and the rate is the deliveries over the time from the first to the
//! last arrival, set beside the bound of N replicas.
//!
//! Rebalances: one group, events at `--rate`/s (below one replica's bound);
//! a replica is added at 20 s and 40 s and stopped (SIGTERM) at 60 s and
//! 80 s. For each step the end-to-end latency (written into the event,
//! read at the receiver) is reported: its median before the first step, and
//! the highest of the deliveries that arrived in the 20 s after each step;
//! with the cooperative protocol only the partitions that move wait.
//! Each fleet has its own group and retry topics. Replicas wait up to
//! `--max-queue-wait` for a request slot (10 minutes: the backlog waits in
//! memory); with Herald's default, 15 s, the deepest part of a backlog is
//! deferred to the retry tier instead, which the table counts.
//! Exits 1 when a delivery is missing.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

#[path = "common/fleet.rs"]
mod fleet;
use fleet::{signal, wait_ready, Replica};

const PARTITIONS: i32 = 12;

/// Scale-out, measured (see the top of examples/scaleout.rs).
#[derive(clap::Parser)]
struct Args {
    /// The Kafka cluster.
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// The Herald binary each replica runs.
    #[arg(long, default_value = "target/release/herald")]
    herald: String,
    #[arg(long, default_value = "redis://127.0.0.1:6379/0")]
    redis: String,
    /// Webhooks, each its own receiver on its own loopback address.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=200))]
    webhooks: u16,
    /// How long each receiver takes to answer.
    #[arg(long, default_value_t = 50)]
    latency_ms: u64,
    /// `delivery.max_in_flight_per_endpoint` of each replica.
    #[arg(long, default_value_t = 4)]
    per_endpoint: usize,
    /// Events in each fleet's backlog.
    #[arg(long, default_value_t = 3000)]
    events: u64,
    /// Events/s while the fleet is scaled.
    #[arg(long, default_value_t = 40)]
    rate: u64,
    /// `delivery.max_queue_wait` of each replica: long by default, so that
    /// a backlog waits for request slots rather than going through the
    /// retry tier (Herald's default, 15 s, defers what waits longer).
    #[arg(long, default_value = "10m")]
    max_queue_wait: String,
}

/// One request a receiver answered: which phase and event, when it
/// arrived and when the event was written (both since the run began).
#[derive(Clone, Copy)]
struct Arrival {
    phase: u64,
    seq: u64,
    at: Duration,
    written: Duration,
}

/// One webhook's receiver.
#[derive(Clone)]
struct Receiver {
    began: Instant,
    latency: Duration,
    arrivals: Arc<Mutex<Vec<(usize, Arrival)>>>,
    webhook: usize,
}

async fn receive(State(r): State<Receiver>, body: axum::body::Bytes) -> StatusCode {
    tokio::time::sleep(r.latency).await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let field = |name: &str| v[name].as_u64().unwrap_or(u64::MAX);
    let arrival = Arrival {
        phase: field("phase"),
        seq: field("seq"),
        at: r.began.elapsed(),
        written: Duration::from_micros(field("written_us")),
    };
    r.arrivals.lock().push((r.webhook, arrival));
    StatusCode::NO_CONTENT
}

struct Run {
    id: String,
    args: Args,
}

impl Run {
    fn topic(&self, name: &str) -> String {
        format!("{}.{name}", self.id)
    }

    fn config(&self, group: &str, topic: &str) -> String {
        format!(
            r#"
[kafka]
brokers = "{brokers}"
group_id = "{group}"
topics = ["{topic}"]
[kafka.consumer_properties]
"auto.offset.reset" = "earliest"
"session.timeout.ms" = "10000"
"heartbeat.interval.ms" = "1000"
{shared}max_in_flight_per_endpoint = {per_endpoint}
max_queue_wait = "{queue_wait}"
[retry]
tiers = [{{ topic = "{group}.retry", delay = "2s" }}]
redrive_topic = "{group}.redrive"
[shutdown]
drain_timeout = "10s"
"#,
            brokers = self.args.brokers,
            shared = fleet::shared_config(&self.id, &self.args.redis, &self.topic("dlq"), &self.topic("system")),
            per_endpoint = self.args.per_endpoint,
            queue_wait = self.args.max_queue_wait,
        )
    }

    /// Writes the configuration of `group`, reading `topic`, once: the
    /// group's replicas read it as they start.
    fn configure(&self, group: &str, topic: &str) -> std::path::PathBuf {
        let config = std::env::temp_dir().join(format!("{group}.toml"));
        std::fs::write(&config, self.config(group, topic)).expect("the replica's configuration is written");
        config
    }

    /// Starts replica `n` of `group` (configured by [`Run::configure`]).
    fn start(&self, group: &str, n: usize) -> Replica {
        let config = std::env::temp_dir().join(format!("{group}.toml"));
        let log = std::env::temp_dir().join(format!("{group}-replica-{n}.log"));
        fleet::start(&self.args.herald, &config, &log)
    }

    /// The most deliveries/s `replicas` replicas can make: each keeps
    /// `per_endpoint` requests open per webhook.
    fn bound(&self, replicas: usize) -> f64 {
        (replicas * usize::from(self.args.webhooks) * self.args.per_endpoint) as f64 * 1000.0
            / self.args.latency_ms as f64
    }
}

/// Deliveries that found no request slot within `max_queue_wait` and were
/// deferred to the retry tier, by the replicas' own count.
async fn deferred(replicas: &[Replica]) -> u64 {
    let mut total = 0;
    for r in replicas {
        let text = match reqwest::get(format!("http://{}/metrics", r.ops)).await {
            Ok(resp) => resp.text().await.unwrap_or_default(),
            Err(_) => continue,
        };
        total += text
            .lines()
            .filter(|l| l.starts_with("herald_deliveries_total{") && l.contains(r#"class="saturated""#))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64;
    }
    total
}

async fn stop(replicas: Vec<Replica>) {
    for mut r in replicas {
        signal(&r, "TERM");
        let _ = tokio::time::timeout(Duration::from_secs(30), r.child.wait()).await;
    }
}

/// Waits until `replicas` own every source partition between them, each
/// some (up to 120 s): the group is stable.
async fn wait_assigned(replicas: &[Replica]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let mut owned = Vec::new();
        for r in replicas {
            owned.push(fleet::owned(r).await.len());
        }
        if owned.iter().sum::<usize>() == PARTITIONS as usize && owned.iter().all(|n| *n > 0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the group never assigned every partition");
}

/// The arrivals of `phase`.
fn of_phase(arrivals: &Mutex<Vec<(usize, Arrival)>>, phase: u64) -> Vec<(usize, Arrival)> {
    arrivals
        .lock()
        .iter()
        .filter(|(_, a)| a.phase == phase)
        .copied()
        .collect()
}

/// Waits until every webhook has had each of `events` events of `phase`
/// (up to `limit`); the distinct deliveries made.
async fn wait_all(
    arrivals: &Mutex<Vec<(usize, Arrival)>>,
    webhooks: usize,
    phase: u64,
    events: u64,
    limit: Duration,
) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let distinct: HashSet<(usize, u64)> = of_phase(arrivals, phase).iter().map(|(w, a)| (*w, a.seq)).collect();
        if distinct.len() as u64 >= events * webhooks as u64 || Instant::now() > deadline {
            return distinct.len();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn produce(producer: &FutureProducer, topic: &str, phase: u64, seq: u64, began: Instant) -> anyhow::Result<()> {
    let body = format!(
        r#"{{"event":"scale.tick","version":"0","phase":{phase},"seq":{seq},"written_us":{}}}"#,
        began.elapsed().as_micros()
    );
    let key = seq.to_string();
    producer
        .send(
            FutureRecord::to(topic).payload(&body).key(&key),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)?;
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = <Args as clap::Parser>::parse();
    let began = Instant::now();
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let latency = Duration::from_millis(args.latency_ms);
    let mut urls = Vec::new();
    for w in 0..usize::from(args.webhooks) {
        let r = Receiver {
            began,
            latency,
            arrivals: arrivals.clone(),
            webhook: w,
        };
        let app = axum::Router::new().fallback(receive).with_state(r.clone());
        let ip = Ipv4Addr::new(127, 0, 0, 11 + w as u8);
        let listener = tokio::net::TcpListener::bind(SocketAddr::from((ip, 0))).await?;
        urls.push(format!("http://{}/w{w}", listener.local_addr()?));
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    let run = Run {
        id: format!("scaleout-{:08x}", rand::random::<u32>()),
        args,
    };
    println!(
        "run {}: {} webhooks, each its own receiver answering after {} ms, {} requests per endpoint per replica",
        run.id, run.args.webhooks, run.args.latency_ms, run.args.per_endpoint
    );

    let kafka = herald::Config::from_toml_overlay(&format!("[kafka]\nbrokers = \"{}\"", run.args.brokers))?.kafka;
    let backlog = run.topic("backlog");
    let steady = run.topic("steady");
    let mut topics: Vec<String> = (1..=3).map(|n| format!("{backlog}-{n}")).collect();
    topics.extend([steady.clone(), run.topic("system")]);
    herald::kafka::create_topics(&kafka, &topics, PARTITIONS).await?;
    let kept = |name: &str, days: u64| herald::kafka::TopicSpec {
        name: run.topic(name),
        create_retention: Some(Duration::from_secs(days * 86_400)),
        min_retention: None,
    };
    let kept_topic = |run: &Run, name: &str| herald::kafka::TopicSpec {
        name: run.topic(name),
        create_retention: Some(Duration::from_secs(86_400)),
        min_retention: None,
    };
    // Each group its own retry and redrive topics: a new group reads them
    // from the start, and must not take another group's retries.
    let mut kept = vec![kept("dlq", 30)];
    for group in ["g1", "g2", "g3", "steady"] {
        kept.push(kept_topic(&run, &format!("{group}.retry")));
        kept.push(kept_topic(&run, &format!("{group}.redrive")));
    }
    herald::kafka::create_topics_with(&kafka, &kept, 3).await?;
    let client = redis::Client::open(run.args.redis.as_str())?;
    let store = herald::subscriptions::store::SubscriptionStore::connect(&client, &format!("{}:", run.id)).await?;
    for (w, url) in urls.iter().enumerate() {
        let name = format!("w{w}");
        store
            .put(&herald::webhook::Webhook::new(&name, &name, url, &["*"]))
            .await?;
    }
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &run.args.brokers)
        .set("linger.ms", "5")
        .create()?;

    // Throughput over a backlog, one new group and topic per fleet size.
    println!("\nreplicas  deliveries  seconds  deliveries/s  bound/s  of bound  per replica/s");
    let mut missing = 0;
    let mut rates = Vec::new();
    for n in 1..=3usize {
        let phase = n as u64;
        // The fleet first, its group stable, then the backlog at once.
        let backlog = format!("{backlog}-{n}");
        let group = format!("{}.g{n}", run.id);
        run.configure(&group, &backlog);
        let replicas: Vec<Replica> = (0..n).map(|i| run.start(&group, i)).collect();
        for r in &replicas {
            wait_ready(r).await;
        }
        wait_assigned(&replicas).await;
        let sends = (0..run.args.events).map(|seq| produce(&producer, &backlog, phase, seq, began));
        futures::future::try_join_all(sends).await?;
        let total = run.args.events * u64::from(run.args.webhooks);
        let made = wait_all(
            &arrivals,
            usize::from(run.args.webhooks),
            phase,
            run.args.events,
            Duration::from_secs(600),
        )
        .await;
        let waited = deferred(&replicas).await;
        stop(replicas).await;
        missing += total as usize - made;
        let seen = of_phase(&arrivals, phase);
        let first = seen.iter().map(|(_, a)| a.at).min().unwrap_or_default();
        let last = seen.iter().map(|(_, a)| a.at).max().unwrap_or_default();
        let seconds = (last - first).as_secs_f64().max(1e-3);
        let rate = made as f64 / seconds;
        rates.push(rate);
        println!(
            "{n:<9} {made:<11} {seconds:<8.1} {rate:<13.0} {:<8.0} {:<9} {:<14.0} {waited}",
            run.bound(n),
            format!("{:.0}%", 100.0 * rate / run.bound(n)),
            rate / n as f64
        );
    }
    println!(
        "scaling: 2 replicas {:.2}x one, 3 replicas {:.2}x one",
        rates[1] / rates[0],
        rates[2] / rates[0]
    );

    // Rebalance pauses, events flowing at a steady rate.
    let phase = 9;
    let group = format!("{}.steady", run.id);
    run.configure(&group, &steady);
    let mut replicas = vec![run.start(&group, 0)];
    wait_ready(&replicas[0]).await;
    wait_assigned(&replicas).await;
    let steps = [(20, "1 -> 2"), (40, "2 -> 3"), (60, "3 -> 2"), (80, "2 -> 1")];
    let length = Duration::from_secs(100);
    let started = began.elapsed();
    let tick = Duration::from_secs_f64(1.0 / run.args.rate as f64);
    let mut seq = 0u64;
    let mut next_step = 0;
    let mut stepped_at = Vec::new();
    let mut stopped = Vec::new();
    while began.elapsed() - started < length {
        produce(&producer, &steady, phase, seq, began).await?;
        seq += 1;
        let t = began.elapsed() - started;
        if let Some((at, what)) = steps.get(next_step) {
            if t >= Duration::from_secs(*at) {
                if next_step < 2 {
                    let r = run.start(&group, replicas.len());
                    replicas.push(r);
                } else if let Some(r) = replicas.pop() {
                    signal(&r, "TERM");
                    stopped.push(r);
                }
                println!("{:>6.1}s scale {what}", t.as_secs_f64());
                stepped_at.push((started + t, *what));
                next_step += 1;
            }
        }
        tokio::time::sleep_until((began + started + tick * seq as u32).into()).await;
    }
    let made = wait_all(
        &arrivals,
        usize::from(run.args.webhooks),
        phase,
        seq,
        Duration::from_secs(120),
    )
    .await;
    missing += seq as usize * usize::from(run.args.webhooks) - made;
    stop(replicas).await;
    stop(stopped).await;
    let seen = of_phase(&arrivals, phase);
    let latency_of = |a: &Arrival| a.at.saturating_sub(a.written);
    let mut before: Vec<Duration> = seen
        .iter()
        .filter(|(_, a)| a.written > started + Duration::from_secs(5) && a.at < stepped_at[0].0)
        .map(|(_, a)| latency_of(a))
        .collect();
    before.sort();
    println!(
        "\nsteady: {} events/s to {} webhooks; before the first step latency p50 {:.0} ms, p99 {:.0} ms",
        run.args.rate,
        run.args.webhooks,
        percentile(&before, 0.5).as_secs_f64() * 1000.0,
        percentile(&before, 0.99).as_secs_f64() * 1000.0
    );
    let mut per_5s = vec![0usize; (length.as_secs() / 5 + 8) as usize];
    for (_, a) in &seen {
        if let Some(slot) = per_5s.get_mut(((a.at.saturating_sub(started)).as_secs() / 5) as usize) {
            *slot += 1;
        }
    }
    println!("deliveries per 5 s: {per_5s:?}");
    println!("step     deliveries in 20 s  latency p50  p99     max");
    for (at, what) in &stepped_at {
        let mut window: Vec<Duration> = seen
            .iter()
            .filter(|(_, a)| a.at >= *at && a.at < *at + Duration::from_secs(20))
            .map(|(_, a)| latency_of(a))
            .collect();
        window.sort();
        println!(
            "{what:<8} {:<19} {:<12} {:<7} {:.0} ms",
            window.len(),
            format!("{:.0} ms", percentile(&window, 0.5).as_secs_f64() * 1000.0),
            format!("{:.0} ms", percentile(&window, 0.99).as_secs_f64() * 1000.0),
            window.last().copied().unwrap_or_default().as_secs_f64() * 1000.0
        );
    }
    if missing > 0 {
        println!(
            "\n{missing} deliveries missing (replica logs: {}/{}-*.log)",
            std::env::temp_dir().display(),
            run.id
        );
        std::process::exit(1);
    }
    Ok(())
}
