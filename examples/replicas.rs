//! Three Herald replicas in one group, killed and restarted while events
//! flow at a low rate, then scaled down: does every event reach every
//! subscriber, and every retry come out on time? And how long does a
//! `kill -9` stop the replicas that survive it?
//!
//!     replicas --brokers HOST:PORT --herald target/release/herald [--seconds 240] [--rate 40]
//!              [--seed N] [--assignor NAME] [--session-timeout-ms 10000] [--redis URL]
//!              [--without-progress-check]
//!
//! Webhooks: `ok` (always 204), `slow` (204 after 300 ms: events stay in
//! flight, as with real receivers), `flaky` (503 to every first attempt, so
//! every event is retried once through the 2 s tier) and `storm` (503 for
//! 30 s mid-run, then 204; retried through the 2 s and 30 s tiers). Faults,
//! at moments drawn from `--seed` (printed): a replica killed with `kill -9`
//! and restarted 20 s later (after its session expired), over and over; a
//! storm; two replicas stopped with SIGTERM near the end. Then production
//! stops and the run waits for what is due.
//!
//! It prints, per webhook, events sent, delivered, dead-lettered, missing and
//! duplicated; how late the retries came; and, for each kill, the longest
//! pause in `ok` deliveries on the partitions the surviving replicas owned,
//! when the crash is noticed and when the replica comes back, and how long
//! the killed replica's partitions waited. `--assignor
//! range` runs the eager protocol (Herald 0.1's) for comparison. Exits 1 when
//! anything is missing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

#[path = "common/fleet.rs"]
mod fleet;
use fleet::{owned, signal, wait_ready, Replica};

/// One delivery a webhook's receiver answered.
#[derive(Clone, Copy)]
struct Arrival {
    seq: u64,
    attempt: u32,
    at: Instant,
    ok: bool,
}

#[derive(Clone, Default)]
struct Receiver {
    arrivals: Arc<Mutex<HashMap<String, Vec<Arrival>>>>,
    storm: Arc<std::sync::atomic::AtomicBool>,
}

async fn receive(
    State(r): State<Receiver>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let attempt = headers
        .get("herald-attempt")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(1);
    let seq = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["seq"].as_u64())
        .unwrap_or(u64::MAX);
    let path = uri.path().trim_start_matches('/').to_owned();
    if path == "slow" {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let ok = match path.as_str() {
        "flaky" => attempt > 1,
        "storm" => !r.storm.load(std::sync::atomic::Ordering::Relaxed),
        _ => true,
    };
    let arrival = Arrival {
        seq,
        attempt,
        at: Instant::now(),
        ok,
    };
    r.arrivals.lock().entry(path).or_default().push(arrival);
    if ok {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

struct Args {
    brokers: String,
    herald: String,
    redis: String,
    seconds: u64,
    rate: u64,
    seed: u64,
    assignor: Option<String>,
    session_timeout_ms: u64,
    /// Leaves `kafka.progress_check_interval` out of the configuration
    /// (for a build that predates it).
    without_progress_check: bool,
}

fn args() -> Args {
    let mut a = Args {
        brokers: "127.0.0.1:9092".into(),
        herald: "target/release/herald".into(),
        redis: "redis://127.0.0.1:6379/0".into(),
        seconds: 240,
        rate: 40,
        seed: rand::random::<u32>() as u64,
        assignor: None,
        session_timeout_ms: 10_000,
        without_progress_check: false,
    };
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = argv.iter().position(|a| a == "--without-progress-check") {
        argv.remove(i);
        a.without_progress_check = true;
    }
    for pair in argv.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_default();
        let number = || value.parse::<u64>().expect("a number");
        match pair[0].as_str() {
            "--brokers" => a.brokers = value.clone(),
            "--herald" => a.herald = value.clone(),
            "--redis" => a.redis = value.clone(),
            "--seconds" => a.seconds = number(),
            "--rate" => a.rate = number(),
            "--seed" => a.seed = number(),
            "--assignor" => a.assignor = Some(value.clone()),
            "--session-timeout-ms" => a.session_timeout_ms = number(),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// Names of one run.
struct Run {
    id: String,
    args: Args,
    receiver: SocketAddr,
}

impl Run {
    fn topic(&self, name: &str) -> String {
        format!("{}.{name}", self.id)
    }

    fn config(&self) -> String {
        let assignor = match &self.args.assignor {
            Some(a) => format!("\"partition.assignment.strategy\" = \"{a}\"\n"),
            None => String::new(),
        };
        let check = if self.args.without_progress_check {
            ""
        } else {
            "progress_check_interval = \"5s\""
        };
        format!(
            r#"
[kafka]
brokers = "{brokers}"
group_id = "{id}"
topics = ["{events}"]
statistics_interval = "1s"
{check}
[kafka.consumer_properties]
"session.timeout.ms" = "{session}"
"heartbeat.interval.ms" = "1000"
{assignor}
{shared}[retry]
jitter = 0.0
redrive_topic = "{redrive}"
tiers = [{{ topic = "{t1}", delay = "2s" }}, {{ topic = "{t2}", delay = "30s" }}]
[shutdown]
drain_timeout = "10s"
"#,
            brokers = self.args.brokers,
            id = self.id,
            events = self.topic("events"),
            session = self.args.session_timeout_ms,
            shared = fleet::shared_config(&self.id, &self.args.redis, &self.topic("dlq"), &self.topic("system")),
            redrive = self.topic("redrive"),
            t1 = self.topic("retry.1"),
            t2 = self.topic("retry.2"),
        )
    }
}

fn start(run: &Run, config: &std::path::Path, n: usize) -> Replica {
    let log = std::env::temp_dir().join(format!("{}-replica-{n}.log", run.id));
    fleet::start(&run.args.herald, config, &log)
}

const PARTITIONS: i32 = 6;

/// The webhooks, each named after how its receiver answers.
const WEBHOOKS: [&str; 4] = ["ok", "slow", "flaky", "storm"];

/// How long a killed replica stays down: past its session timeout, so that
/// the crash and the return are two rebalances.
const RESTART_AFTER: Duration = Duration::from_secs(20);

/// A kill: when, and which source partitions the victim and the others owned.
struct Kill {
    at: Instant,
    victim: Vec<i64>,
    others: Vec<i64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args();
    let receiver = Receiver::default();
    let app = axum::Router::new().fallback(receive).with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    let run = Run {
        id: format!("replicas-{:08x}", rand::random::<u32>()),
        receiver: addr,
        args,
    };
    println!(
        "run {} seed {} rate {}/s for {} s, assignor {}, session timeout {} ms",
        run.id,
        run.args.seed,
        run.args.rate,
        run.args.seconds,
        run.args.assignor.as_deref().unwrap_or("(Herald's default)"),
        run.args.session_timeout_ms
    );

    let kafka = herald::Config::from_toml_overlay(&format!("[kafka]\nbrokers = \"{}\"", run.args.brokers))?.kafka;
    let keep = |name: &str, days: u64| herald::kafka::TopicSpec {
        name: run.topic(name),
        create_retention: Some(Duration::from_secs(days * 86_400)),
        min_retention: None,
    };
    herald::kafka::create_topics(&kafka, &[run.topic("events"), run.topic("system")], PARTITIONS).await?;
    let kept = [
        keep("dlq", 30),
        keep("redrive", 1),
        keep("retry.1", 1),
        keep("retry.2", 1),
    ];
    herald::kafka::create_topics_with(&kafka, &kept, 3).await?;
    let client = redis::Client::open(run.args.redis.as_str())?;
    let store = herald::subscriptions::store::SubscriptionStore::connect(&client, &format!("{}:", run.id)).await?;
    for name in WEBHOOKS {
        let url = format!("http://{}/{name}", run.receiver);
        store
            .put(&herald::webhook::Webhook::new(name, name, &url, &["*"]))
            .await?;
    }
    let config = std::env::temp_dir().join(format!("{}.toml", run.id));
    std::fs::write(&config, run.config())?;
    let mut replicas: Vec<Replica> = (0..3).map(|n| start(&run, &config, n)).collect();
    for r in &replicas {
        wait_ready(r).await;
    }

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &run.args.brokers)
        .set("linger.ms", "5")
        .create()?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(run.args.seed);
    let total = Duration::from_secs(run.args.seconds);
    let storm_at = total.mul_f64(rng.random_range(0.25..0.45));
    let scale_down_at = total.mul_f64(0.85);
    let mut kill_at = Duration::from_secs(rng.random_range(15..25));
    let began = Instant::now();
    let mut sent = 0u64;
    let mut kills: Vec<Kill> = Vec::new();
    let mut restart: Option<(usize, Instant)> = None;
    let mut scaled_down = false;
    let tick = Duration::from_secs_f64(1.0 / run.args.rate as f64);
    while began.elapsed() < total {
        let body = format!(r#"{{"event":"drill.tick","version":"0","seq":{sent}}}"#);
        let key = sent.to_string();
        producer
            .send(
                FutureRecord::to(&run.topic("events"))
                    .payload(&body)
                    .key(&key)
                    .partition(partition_of(sent) as i32),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)?;
        sent += 1;
        let t = began.elapsed();
        receiver.storm.store(
            t >= storm_at && t < storm_at + Duration::from_secs(30),
            std::sync::atomic::Ordering::Relaxed,
        );
        if let Some((n, when)) = restart {
            if Instant::now() >= when {
                replicas[n] = start(&run, &config, n);
                restart = None;
            }
        }
        if !scaled_down && t >= kill_at && t < scale_down_at - Duration::from_secs(20) && restart.is_none() {
            let n = rng.random_range(0..3);
            let mut others = Vec::new();
            for (i, r) in replicas.iter().enumerate() {
                if i != n {
                    others.extend(owned(r).await);
                }
            }
            let victim = owned(&replicas[n]).await;
            signal(&replicas[n], "KILL");
            println!(
                "{:>5.1}s kill -9 replica {n} (source partitions {victim:?})",
                t.as_secs_f64()
            );
            kills.push(Kill {
                at: Instant::now(),
                victim,
                others,
            });
            restart = Some((n, Instant::now() + RESTART_AFTER));
            kill_at = t + Duration::from_secs(rng.random_range(35..50));
        }
        if !scaled_down && t >= scale_down_at && restart.is_none() {
            println!("{:>5.1}s SIGTERM to replicas 1 and 2 (scale 3 -> 1)", t.as_secs_f64());
            signal(&replicas[1], "TERM");
            signal(&replicas[2], "TERM");
            scaled_down = true;
        }
        tokio::time::sleep_until((began + tick * sent as u32).into()).await;
    }
    receiver.storm.store(false, std::sync::atomic::Ordering::Relaxed);
    println!(
        "{:>5.1}s stopped producing: {sent} events",
        began.elapsed().as_secs_f64()
    );

    // Wait for what is due: every event succeeded at every webhook.
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let missing: usize = WEBHOOKS
            .iter()
            .map(|w| sent as usize - succeeded(&receiver, w).len())
            .sum();
        if missing == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let dead: HashMap<String, HashSet<u64>> = fleet::dead_letters(&run.args.brokers, &run.topic("dlq"), 3)
        .await
        .into_iter()
        .map(|(w, letters)| (w, letters.iter().map(|l| l.seq).collect()))
        .collect();
    let mut lost = 0;
    println!("\nwebhook  sent     delivered  dead-lettered  missing  duplicates");
    for w in WEBHOOKS {
        let done = succeeded(&receiver, w);
        let letters = dead.get(w).cloned().unwrap_or_default();
        let missing = (0..sent).filter(|s| !done.contains(s) && !letters.contains(s)).count();
        let successes = receiver.arrivals.lock()[w].iter().filter(|a| a.ok).count();
        lost += missing;
        println!(
            "{w:<8} {sent:<8} {:<10} {:<14} {missing:<8} {}",
            done.len(),
            letters.len(),
            successes - done.len()
        );
    }
    report_retries(&receiver);
    report_kills(&receiver, &kills);
    for r in &mut replicas {
        signal(r, "TERM");
        let _ = tokio::time::timeout(Duration::from_secs(30), r.child.wait()).await;
    }
    if lost > 0 {
        println!(
            "\n{lost} deliveries missing (replica logs: {}/{}-replica-*.log)",
            std::env::temp_dir().display(),
            run.id
        );
        std::process::exit(1);
    }
    Ok(())
}

/// The events `webhook` answered 2xx to.
fn succeeded(receiver: &Receiver, webhook: &str) -> HashSet<u64> {
    let arrivals = receiver.arrivals.lock();
    arrivals
        .get(webhook)
        .map(|a| a.iter().filter(|a| a.ok).map(|a| a.seq).collect())
        .unwrap_or_default()
}

/// Second attempts of `flaky` (due 2 s after the first): how late they came.
fn report_retries(receiver: &Receiver) {
    let arrivals = receiver.arrivals.lock();
    let mut first: HashMap<u64, Instant> = HashMap::new();
    let mut lateness: Vec<Duration> = Vec::new();
    for a in &arrivals["flaky"] {
        match a.attempt {
            1 => {
                first.entry(a.seq).or_insert(a.at);
            }
            2 => {
                if let Some(f) = first.get(&a.seq) {
                    lateness.push((a.at - *f).saturating_sub(Duration::from_secs(2)));
                }
            }
            _ => {}
        }
    }
    lateness.sort();
    let late = |over: u64| lateness.iter().filter(|l| **l > Duration::from_secs(over)).count();
    let pct = |q: f64| lateness.get(((lateness.len() as f64 * q) as usize).min(lateness.len().saturating_sub(1)));
    println!(
        "\nflaky's retries (tier 2 s): {} taken; after their due time: p50 {:?}, p99 {:?}, max {:?}; more than 5 s late: {}, more than 30 s: {}",
        lateness.len(),
        pct(0.5).copied().unwrap_or_default(),
        pct(0.99).copied().unwrap_or_default(),
        lateness.last().copied().unwrap_or_default(),
        late(5),
        late(30)
    );
}

/// For each kill, up to the next: the longest gap in `ok` deliveries on the
/// partitions the others owned, while the crash is noticed (until the
/// replica is restarted) and when it comes back (a partition handed back to
/// it pauses while it moves); and how long the victim's partitions went
/// without one.
fn report_kills(receiver: &Receiver, kills: &[Kill]) {
    let arrivals = receiver.arrivals.lock();
    let ok: Vec<&Arrival> = arrivals["ok"].iter().filter(|a| a.ok).collect();
    println!("\nkill  others' longest pause: at the crash  at the return  victim's partitions resumed after");
    for (i, kill) in kills.iter().enumerate() {
        let back = kill.at + RESTART_AFTER;
        let until = kills.get(i + 1).map_or(kill.at + Duration::from_secs(60), |next| {
            next.at.min(kill.at + Duration::from_secs(60))
        });
        // Each partition's deliveries in [from, to), between `from` and `to`
        // (a partition with none was stopped the whole time).
        let by_partition = |parts: &[i64], from: Instant, to: Instant| -> BTreeMap<i64, Vec<Instant>> {
            let mut m: BTreeMap<i64, Vec<Instant>> = parts.iter().map(|p| (*p, vec![from])).collect();
            for a in ok.iter().filter(|a| a.at >= from && a.at < to) {
                if let Some(v) = m.get_mut(&partition_of(a.seq)) {
                    v.push(a.at);
                }
            }
            for v in m.values_mut() {
                v.push(to.min(Instant::now()));
            }
            m
        };
        let longest_gap = |m: &BTreeMap<i64, Vec<Instant>>| {
            m.values()
                .flat_map(|ts| ts.windows(2).map(|w| w[1] - w[0]))
                .max()
                .unwrap_or_default()
        };
        let at_crash = longest_gap(&by_partition(&kill.others, kill.at, back));
        let at_return = longest_gap(&by_partition(&kill.others, back, until));
        let victim = longest_gap(&by_partition(&kill.victim, kill.at, back));
        println!(
            "{:<5} {:<31} {:<14} {:.1?}",
            i + 1,
            format!("{at_crash:.1?}"),
            format!("{at_return:.1?}"),
            victim
        );
    }
}

/// The partition event `seq` was written to.
fn partition_of(seq: u64) -> i64 {
    (seq % PARTITIONS as u64) as i64
}
