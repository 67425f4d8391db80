//! Herald's end-to-end benchmark, with this machine's own ceilings measured
//! in the same run. Run it with `scripts/bench` (which starts a broker and
//! Redis, builds in release mode and passes the addresses).
//!
//!     bench --brokers 127.0.0.1:PORT --herald target/release/herald [--events 20000] [--json FILE]
//!
//! It measures, each on a fresh backlog of `--events` 1 KB records:
//! - ceiling (a): the receiver driven directly over HTTP at the same concurrency;
//! - ceiling (b): the broker alone: a consumer reading the backlog, no HTTP;
//! - ceiling (c): a null pipeline: consume and POST each record, nothing else;
//! - Herald (its own process) draining the backlog with fan-out 1 and 10;
//! - latency from publish to arrival at a fixed rate (half the measured
//!   maximum, and a low rate), open loop;
//! - Herald's peak RSS and CPU seconds per 1,000 deliveries.
//!
//! Every Herald figure is also printed as a ratio to the ceilings.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use futures::StreamExt;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Message};
use serde_json::json;
use tokio::sync::Semaphore;

const CONCURRENCY: usize = 16;

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

/// A receiver counting arrivals and, for bodies carrying `"sent_us":N`, the
/// publish-to-arrival latency.
#[derive(Clone, Default)]
struct Receiver {
    count: Arc<AtomicU64>,
    first_us: Arc<AtomicU64>,
    last_us: Arc<AtomicU64>,
    latencies_us: Arc<Mutex<Vec<u64>>>,
}

impl Receiver {
    fn reset(&self) {
        self.count.store(0, Ordering::SeqCst);
        self.first_us.store(0, Ordering::SeqCst);
        self.last_us.store(0, Ordering::SeqCst);
        self.latencies_us.lock().unwrap().clear();
    }

    async fn wait(&self, n: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.count.load(Ordering::SeqCst) < n {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Seconds between the first and the last arrival.
    fn span(&self) -> f64 {
        let (f, l) = (
            self.first_us.load(Ordering::SeqCst),
            self.last_us.load(Ordering::SeqCst),
        );
        (l.saturating_sub(f)) as f64 / 1e6
    }
}

async fn receive(State(r): State<Receiver>, body: Bytes) -> StatusCode {
    let now = now_us();
    r.count.fetch_add(1, Ordering::SeqCst);
    let _ = r.first_us.compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst);
    r.last_us.fetch_max(now, Ordering::SeqCst);
    if let Some(pos) = memchr_find(&body, b"\"sent_us\":") {
        let digits: String = body[pos + 10..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .map(|&b| b as char)
            .collect();
        if let Ok(sent) = digits.parse::<u64>() {
            r.latencies_us.lock().unwrap().push(now.saturating_sub(sent));
        }
    }
    StatusCode::NO_CONTENT
}

fn memchr_find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn body(n: u64, sent_us: Option<u64>) -> Vec<u8> {
    let head = match sent_us {
        Some(s) => format!(r#"{{"event":"bench.tick","version":"0","n":{n},"sent_us":{s},"pad":""#),
        None => format!(r#"{{"event":"bench.tick","version":"0","n":{n},"pad":""#),
    };
    let mut out = head.into_bytes();
    out.resize(1024 - 2, b'x');
    out.extend_from_slice(b"\"}");
    out
}

struct Bench {
    brokers: String,
    redis: String,
    herald: PathBuf,
    events: u64,
    receiver: Receiver,
    receiver_addr: SocketAddr,
    producer: FutureProducer,
    run_id: String,
    /// librdkafka `fetch.wait.max.ms` for Herald: how long the broker may
    /// hold a fetch that has no data (Tansu holds it the whole time).
    fetch_wait_ms: u64,
}

impl Bench {
    fn config(&self) -> herald::Config {
        herald::Config::from_toml_overlay(&format!("[kafka]\nbrokers = \"{}\"", self.brokers)).unwrap()
    }

    async fn topic(&self, name: &str, partitions: i32) -> String {
        let topic = format!("bench-{}-{name}", self.run_id);
        herald::kafka::create_topics(&self.config().kafka, std::slice::from_ref(&topic), partitions)
            .await
            .unwrap();
        topic
    }

    async fn backlog(&self, topic: &str) -> f64 {
        let start = Instant::now();
        let mut pending = futures::stream::FuturesUnordered::new();
        for n in 0..self.events {
            let payload = body(n, None);
            let key = n.to_string();
            let record = FutureRecord::to(topic).key(&key).payload(&payload);
            pending.push(self.producer.send_result(record).map_err(|(e, _)| e).unwrap());
            if pending.len() >= 2000 {
                pending.next().await;
            }
        }
        while pending.next().await.is_some() {}
        self.producer.flush(Timeout::After(Duration::from_secs(60))).unwrap();
        self.events as f64 / start.elapsed().as_secs_f64()
    }

    /// (a) The receiver alone, driven by an HTTP client at `CONCURRENCY`.
    async fn http_ceiling(&self) -> f64 {
        self.receiver.reset();
        let client = reqwest::Client::new();
        let url = format!("http://{}/direct", self.receiver_addr);
        let sem = Arc::new(Semaphore::new(CONCURRENCY));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for n in 0..self.events {
            let permit = sem.clone().acquire_owned().await.unwrap();
            let (client, url) = (client.clone(), url.clone());
            tasks.push(tokio::spawn(async move {
                let _ = client.post(url).body(body(n, None)).send().await;
                drop(permit);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        self.events as f64 / start.elapsed().as_secs_f64()
    }

    /// (b) The broker alone: read the backlog, nothing else.
    async fn broker_ceiling(&self, topic: &str) -> f64 {
        let (brokers, topic, n) = (self.brokers.clone(), topic.to_owned(), self.events);
        let fetch_wait = self.fetch_wait_ms;
        let group = format!("bench-{}-broker", self.run_id);
        tokio::task::spawn_blocking(move || {
            let c: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("group.id", &group)
                .set("auto.offset.reset", "earliest")
                .set("fetch.wait.max.ms", fetch_wait.to_string())
                .create()
                .unwrap();
            c.subscribe(&[&topic]).unwrap();
            let (mut got, mut first) = (0u64, None);
            while got < n {
                if let Some(Ok(_)) = c.poll(Duration::from_millis(100)) {
                    first.get_or_insert_with(Instant::now);
                    got += 1;
                }
            }
            n as f64 / first.unwrap().elapsed().as_secs_f64()
        })
        .await
        .unwrap()
    }

    /// (c) The null pipeline: consume and POST each record; no routing,
    /// signing or offset tracking.
    async fn null_pipeline(&self, topic: &str) -> f64 {
        self.receiver.reset();
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", format!("bench-{}-null", self.run_id))
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", self.fetch_wait_ms.to_string())
            .create()
            .unwrap();
        consumer.subscribe(&[topic]).unwrap();
        let client = reqwest::Client::new();
        let url = format!("http://{}/null", self.receiver_addr);
        let sem = Arc::new(Semaphore::new(CONCURRENCY));
        for _ in 0..self.events {
            let m = consumer.recv().await.unwrap();
            let payload = m.payload().unwrap_or_default().to_vec();
            let permit = sem.clone().acquire_owned().await.unwrap();
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let _ = client.post(url).body(payload).send().await;
                drop(permit);
            });
        }
        self.receiver.wait(self.events, Duration::from_secs(600)).await;
        self.events as f64 / self.receiver.span()
    }

    async fn webhooks(&self, prefix: &str, fanout: usize) {
        let client = redis::Client::open(self.redis.as_str()).unwrap();
        let store = herald::subscriptions::store::SubscriptionStore::connect(&client, prefix)
            .await
            .unwrap();
        for i in 0..fanout {
            let w = herald::subscriptions::model::Webhook::new(
                &format!("bench-{i}"),
                &format!("bench {i}"),
                &format!("http://{}/wh/{i}", self.receiver_addr),
                &["bench.*"],
            );
            store.put(&w).await.unwrap();
        }
    }

    fn start_herald(&self, topic: &str, prefix: &str, dlq: &str) -> (tokio::process::Child, SocketAddr) {
        let ops = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let config = format!(
            "[kafka]\nbrokers = \"{b}\"\ngroup_id = \"{p}group\"\ntopics = [\"{topic}\"]\n\
             [redis]\nurl = \"{r}\"\nprefix = \"{p}\"\n[dead_letter]\ntopic = \"{dlq}\"\n\
             [retry]\ntiers = []\n[system_events]\ntopic = \"\"\n[history]\ntopic = \"\"\n\
             [delivery]\nallow_cidrs = [\"127.0.0.0/8\"]\n[http]\nlisten = \"{ops}\"\n[log]\nlevel = \"warn\"\n\
             [kafka.consumer_properties]\n\"fetch.wait.max.ms\" = \"{fetch_wait}\"\n",
            fetch_wait = self.fetch_wait_ms,
            b = self.brokers,
            r = self.redis,
            p = prefix,
        );
        let path = std::env::temp_dir().join(format!("{prefix}herald.toml").replace(':', "-"));
        std::fs::write(&path, config).unwrap();
        let child = tokio::process::Command::new(&self.herald)
            .arg("--config")
            .arg(&path)
            .arg("run")
            .kill_on_drop(true)
            .spawn()
            .expect("herald starts");
        (child, ops)
    }

    /// Drains a backlog through Herald with `fanout` webhooks.
    async fn herald_drain(&self, fanout: usize) -> BTreeMap<&'static str, f64> {
        let topic = self.topic(&format!("fanout{fanout}"), 6).await;
        let dlq = self.topic(&format!("fanout{fanout}-dlq"), 1).await;
        self.backlog(&topic).await;
        let prefix = format!("bench:{}:f{fanout}:", self.run_id);
        self.webhooks(&prefix, fanout).await;
        self.receiver.reset();
        let (mut child, _ops) = self.start_herald(&topic, &prefix, &dlq);
        let pid = child.id().unwrap();
        let cpu_before = cpu_seconds(pid);
        let want = self.events * fanout as u64;
        let done = self.receiver.wait(want, Duration::from_secs(1200)).await;
        let cpu = cpu_seconds(pid) - cpu_before;
        let rss = peak_rss_mb(pid);
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        let _ = child.wait().await;
        assert!(done, "Herald did not deliver {want} within the time limit");
        let span = self.receiver.span();
        BTreeMap::from([
            ("deliveries_per_s", want as f64 / span),
            ("events_per_s", self.events as f64 / span),
            ("cpu_s_per_1000_deliveries", cpu / want as f64 * 1000.0),
            ("peak_rss_mb", rss),
        ])
    }

    /// Open-loop latency at `rate` events/s for `seconds`, fan-out 1.
    async fn latency(&self, rate: f64, seconds: u64) -> BTreeMap<&'static str, f64> {
        let topic = self.topic(&format!("latency{}", rate as u64), 6).await;
        let dlq = self.topic(&format!("latency{}-dlq", rate as u64), 1).await;
        let prefix = format!("bench:{}:l{}:", self.run_id, rate as u64);
        self.webhooks(&prefix, 1).await;
        let (mut child, ops) = self.start_herald(&topic, &prefix, &dlq);
        let ready = format!("http://{ops}/readyz");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !reqwest::get(&ready)
            .await
            .map(|r| r.status().is_success())
            .unwrap_or(false)
        {
            assert!(Instant::now() < deadline, "Herald not ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.receiver.reset();
        let total = (rate * seconds as f64) as u64;
        let interval = Duration::from_secs_f64(1.0 / rate);
        let start = tokio::time::Instant::now();
        for n in 0..total {
            tokio::time::sleep_until(start + interval.mul_f64(n as f64)).await;
            let payload = body(n, Some(now_us()));
            let key = n.to_string();
            let record = FutureRecord::to(&topic).key(&key).payload(&payload);
            let _ = self.producer.send_result(record);
        }
        self.receiver.wait(total, Duration::from_secs(120)).await;
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(child.id().unwrap().to_string())
            .status();
        let _ = child.wait().await;
        let mut l = self.receiver.latencies_us.lock().unwrap().clone();
        l.sort_unstable();
        let q = |p: f64| l[((l.len() as f64 * p) as usize).min(l.len() - 1)] as f64 / 1000.0;
        BTreeMap::from([
            ("rate_per_s", rate),
            ("p50_ms", q(0.50)),
            ("p95_ms", q(0.95)),
            ("p99_ms", q(0.99)),
            ("max_ms", *l.last().unwrap() as f64 / 1000.0),
            ("delivered", l.len() as f64),
        ])
    }
}

fn proc_field(pid: u32, file: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default()
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = proc_field(pid, "stat");
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 =
        f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0) + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn peak_rss_mb(pid: u32) -> f64 {
    proc_field(pid, "status")
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (mut brokers, mut herald, mut events, mut json_out) =
        (String::new(), PathBuf::from("target/release/herald"), 20_000u64, None);
    let mut redis = "redis://127.0.0.1:6379/0".to_string();
    // Tansu holds a fetch with no data for the whole fetch.wait.max.ms (Apache
    // Kafka answers as soon as data arrives), so with Tansu this bounds both
    // latency and, on partially caught-up partitions, throughput.
    let mut fetch_wait_ms = 10u64;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--brokers" => brokers = args.next().unwrap(),
            "--redis" => redis = args.next().unwrap(),
            "--herald" => herald = PathBuf::from(args.next().unwrap()),
            "--events" => events = args.next().unwrap().parse().unwrap(),
            "--json" => json_out = Some(PathBuf::from(args.next().unwrap())),
            "--fetch-wait-ms" => fetch_wait_ms = args.next().unwrap().parse().unwrap(),
            other => panic!("unknown argument {other}"),
        }
    }
    let receiver = Receiver::default();
    let app = axum::Router::new().fallback(receive).with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "2")
        .create()
        .unwrap();
    let bench = Bench {
        brokers,
        redis,
        herald,
        events,
        receiver,
        receiver_addr,
        producer,
        run_id: format!("{:08x}", rand::random::<u32>()),
        fetch_wait_ms,
    };

    eprintln!("ceilings ({events} records of 1 KB, concurrency {CONCURRENCY})...");
    let http = bench.http_ceiling().await;
    let ceiling_topic = bench.topic("ceiling", 6).await;
    let produce = bench.backlog(&ceiling_topic).await;
    let broker = bench.broker_ceiling(&ceiling_topic).await;
    let null = bench.null_pipeline(&ceiling_topic).await;
    let tightest = http.min(broker).min(null);
    eprintln!("Herald, fan-out 1...");
    let f1 = bench.herald_drain(1).await;
    eprintln!("Herald, fan-out 10...");
    let f10 = bench.herald_drain(10).await;
    let half = (f1["events_per_s"] / 2.0).max(10.0);
    eprintln!("latency at {half:.0}/s and 50/s...");
    let lat_half = bench.latency(half, 10).await;
    let lat_low = bench.latency(50.0, 10).await;

    println!(
        "\nHerald benchmark: {events} events of 1 KB; receiver on 127.0.0.1; {} cores; fetch.wait.max.ms {fetch_wait_ms}",
        num_cpus()
    );
    println!(
        "{:<44} {:>12}",
        "ceiling (a) HTTP receiver alone, req/s",
        format!("{http:.0}")
    );
    println!("{:<44} {:>12}", "broker produce, records/s", format!("{produce:.0}"));
    println!(
        "{:<44} {:>12}",
        "ceiling (b) broker alone, records/s",
        format!("{broker:.0}")
    );
    println!(
        "{:<44} {:>12}",
        "ceiling (c) null pipeline, records/s",
        format!("{null:.0}")
    );
    for (name, r) in [("fan-out 1", &f1), ("fan-out 10", &f10)] {
        let d = r["deliveries_per_s"];
        println!(
            "{:<44} {:>12}   {:.0}% of null pipeline, {:.0}% of tightest ceiling",
            format!("Herald {name}, deliveries/s"),
            format!("{d:.0}"),
            100.0 * d / null,
            100.0 * d / tightest
        );
        println!(
            "{:<44} {:>12}",
            format!("Herald {name}, events/s"),
            format!("{:.0}", r["events_per_s"])
        );
        println!(
            "{:<44} {:>12}",
            format!("Herald {name}, CPU s per 1,000 deliveries"),
            format!("{:.3}", r["cpu_s_per_1000_deliveries"])
        );
        println!(
            "{:<44} {:>12}",
            format!("Herald {name}, peak RSS MB"),
            format!("{:.1}", r["peak_rss_mb"])
        );
    }
    for l in [&lat_half, &lat_low] {
        println!(
            "{:<44} {:>12}",
            format!("latency at {:.0}/s: p50/p95/p99/max ms", l["rate_per_s"]),
            format!(
                "{:.1}/{:.1}/{:.1}/{:.1}",
                l["p50_ms"], l["p95_ms"], l["p99_ms"], l["max_ms"]
            )
        );
    }
    let result = json!({
        "events": events,
        "fetch_wait_max_ms": fetch_wait_ms,
        "record_bytes": 1024,
        "concurrency": CONCURRENCY,
        "ceilings": {"http_req_per_s": http, "broker_produce_per_s": produce, "broker_consume_per_s": broker, "null_pipeline_per_s": null},
        "herald": {"fanout_1": f1, "fanout_10": f10},
        "latency": [lat_half, lat_low],
    });
    if let Some(path) = json_out {
        std::fs::write(&path, serde_json::to_string_pretty(&result).unwrap()).unwrap();
        eprintln!("wrote {}", path.display());
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
