//! Measures the broker alone: produce N records, then consume them with a
//! consumer group, printing records per second for each. Used to know which
//! ceiling binds before blaming Herald.
//!
//!     cargo run --release --example broker_probe -- BROKERS TOPIC N [PARTITIONS]

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::ClientConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let brokers = args.get(1).cloned().unwrap_or_else(|| "127.0.0.1:9092".into());
    let topic = args.get(2).cloned().unwrap_or_else(|| "probe".into());
    let n: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(10_000);
    let partitions: i32 = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let config = herald::Config::from_toml_overlay(&format!("[kafka]\nbrokers = \"{brokers}\""))?;
    herald::kafka::create_topics(&config.kafka, std::slice::from_ref(&topic), partitions).await?;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "5")
        .create()?;
    let body = vec![b'x'; 1024];
    let start = Instant::now();
    let mut pending = futures::stream::FuturesUnordered::new();
    for i in 0..n {
        let key = i.to_string();
        let record = FutureRecord::to(&topic).key(&key).payload(&body);
        pending.push(producer.send_result(record).map_err(|(e, _)| e)?);
        if pending.len() >= 1000 {
            use futures::StreamExt;
            pending.next().await;
        }
    }
    use futures::StreamExt;
    while pending.next().await.is_some() {}
    producer.flush(Timeout::After(Duration::from_secs(30)))?;
    let produce = start.elapsed();
    println!(
        "produce: {n} records in {:.2?} = {:.0}/s",
        produce,
        n as f64 / produce.as_secs_f64()
    );

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", format!("probe-{}", rand::random::<u32>()))
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[&topic])?;
    let start = Instant::now();
    let mut got = 0;
    let mut first = None;
    while got < n && start.elapsed() < Duration::from_secs(300) {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            m?;
            first.get_or_insert_with(Instant::now);
            got += 1;
        }
    }
    let took = first.map(|f| f.elapsed()).unwrap_or_default();
    println!(
        "consume: {got} records in {:.2?} after the first ({:.2?} to join) = {:.0}/s",
        took,
        start.elapsed() - took,
        got as f64 / took.as_secs_f64()
    );
    Ok(())
}
