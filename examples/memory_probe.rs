//! Peak memory of a replica holding large events. N events of SIZE bytes are
//! published, every one subscribed by a webhook whose endpoint never answers,
//! so Herald holds as many as its limits let it. Run twice in one go: with
//! the default byte bounds, and with them lifted (Herald before it had them:
//! only `kafka.max_in_flight` events, librdkafka's 1 GiB producer buffer).
//!
//!   cargo run --release --example memory_probe -- --brokers HOST:PORT [--events 600] [--size 900000]
//!
//! Needs a broker (scripts/lib.sh `start_broker probe 39292 memory`) and
//! Redis on 127.0.0.1:6379; `target/release/herald` is the binary measured.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use herald::subscriptions::store::SubscriptionStore;
use herald::webhook::Webhook;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut brokers, mut events, mut size) = ("127.0.0.1:39292".to_owned(), 600usize, 900_000usize);
    let mut herald = PathBuf::from("target/release/herald");
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--brokers" => brokers = value(),
            "--events" => events = value().parse()?,
            "--size" => size = value().parse()?,
            "--herald" => herald = PathBuf::from(value()),
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    // An endpoint that never answers: every delivery waits, so every event
    // Herald takes stays in memory.
    let app = axum::Router::new().fallback(std::future::pending::<&'static str>);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let run = format!("{:08x}", rand::random::<u32>());
    let unbounded = "max_in_flight_bytes = 1000000000000\n";
    let mut lines = Vec::new();
    for (label, kafka_extra, extra) in [
        ("byte bounds (defaults)", "", ""),
        (
            "no byte bounds (as before)",
            unbounded,
            "[history]\nqueue_capacity_bytes = 1000000000000\n[kafka.producer_properties]\n\"queue.buffering.max.kbytes\" = \"1048576\"\n",
        ),
    ] {
        let name = format!("memprobe-{run}-{}", lines.len());
        let config = herald::Config::from_toml_overlay(&format!("[kafka]\nbrokers = \"{brokers}\""))?;
        herald::kafka::create_topics(&config.kafka, std::slice::from_ref(&name), 3).await?;
        publish(&brokers, &name, events, size).await?;
        let prefix = format!("memprobe:{run}:{}:", lines.len());
        let store = SubscriptionStore::connect(&redis::Client::open("redis://127.0.0.1:6379/0")?, &prefix).await?;
        store
            .put(&Webhook::new("probe", "probe", &endpoint, &["*"]))
            .await?;

        let ops = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let path = std::env::temp_dir().join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "[kafka]\nbrokers = \"{brokers}\"\ngroup_id = \"{name}\"\ntopics = [\"{name}\"]\ncreate_missing_topics = true\n{kafka_extra}\
                 [kafka.consumer_properties]\n\"fetch.wait.max.ms\" = \"10\"\n\
                 [redis]\nprefix = \"{prefix}\"\n[dead_letter]\ntopic = \"{name}-dlq\"\n[system_events]\ntopic = \"\"\n\
                 [delivery]\nallow_cidrs = [\"127.0.0.0/8\"]\nallow_ports = [\"1-65535\"]\nrequest_timeout = \"600s\"\nmax_queue_wait = \"600s\"\n\
                 [ops]\nlisten = \"{ops}\"\n[log]\nlevel = \"error\"\n{extra}"
            ),
        )?;
        let mut child = tokio::process::Command::new(&herald)
            .arg("--config")
            .arg(&path)
            .arg("run")
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().expect("a running child");
        // Until the events in flight stop growing for five seconds (after
        // the first arrived: joining the group takes a moment).
        let (mut held, mut since, started) = (0.0, Instant::now(), Instant::now());
        while (held == 0.0 || since.elapsed() < Duration::from_secs(5)) && started.elapsed() < Duration::from_secs(300) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = in_flight(ops).await;
            if now > held {
                (held, since) = (now, Instant::now());
            }
        }
        let peak = status_mb(pid, "VmHWM:");
        lines.push(format!(
            "{label}: {held:.0} of {events} events of {size} bytes in flight, peak RSS {peak:.0} MB"
        ));
        let _ = child.kill().await;
    }
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

async fn publish(brokers: &str, topic: &str, events: usize, size: usize) -> anyhow::Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.max.bytes", (size + 4096).to_string())
        .create()?;
    let pad = "x".repeat(size.saturating_sub(80));
    for n in 0..events {
        let body = format!(r#"{{"event":"tour.started","version":"0","id":"e{n}","pad":"{pad}"}}"#);
        producer
            .send(FutureRecord::<(), _>::to(topic).payload(&body), Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)?;
    }
    Ok(())
}

async fn in_flight(ops: std::net::SocketAddr) -> f64 {
    let Ok(response) = reqwest::get(format!("http://{ops}/metrics")).await else {
        return 0.0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("herald_events_in_flight "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn status_mb(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}
