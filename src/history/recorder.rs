//! Queues attempt records and counts off the delivery path, and writes them
//! in batches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::HistoryConfig;
use crate::delivery::target::Target;
use crate::delivery::Attempt;
use crate::event::Event;
use crate::history::record::AttemptRecord;
use crate::history::store::{Counts, HistoryStore, Scope};
use crate::telemetry::Telemetry;

/// Most records written in one pipeline.
const BATCH: usize = 1000;

/// The handle the pipeline records attempts with.
pub struct Recorder {
    tx: mpsc::Sender<AttemptRecord>,
    counts: Arc<Mutex<HashMap<Scope, Counts>>>,
    /// Bodies are kept whole when the attempts topic wants them.
    record_body_limit: usize,
    telemetry: Telemetry,
}

/// The background half: drains the queue into Redis and the attempts topic.
pub struct Writer {
    rx: mpsc::Receiver<AttemptRecord>,
    counts: Arc<Mutex<HashMap<Scope, Counts>>>,
    store: HistoryStore,
    producer: Option<(FutureProducer, String)>,
    max_body: usize,
    flush_interval: Duration,
    telemetry: Telemetry,
}

impl Recorder {
    pub fn new(
        config: &HistoryConfig,
        store: HistoryStore,
        producer: Option<FutureProducer>,
        telemetry: Telemetry,
    ) -> (Arc<Recorder>, Writer) {
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        let counts = Arc::new(Mutex::new(HashMap::new()));
        let producer = producer.zip(config.topic().map(str::to_owned));
        let recorder = Recorder {
            tx,
            counts: counts.clone(),
            record_body_limit: if producer.is_some() {
                usize::MAX
            } else {
                config.max_body_bytes
            },
            telemetry: telemetry.clone(),
        };
        let writer = Writer {
            rx,
            counts,
            store,
            producer,
            max_body: config.max_body_bytes,
            flush_interval: config.flush_interval,
            telemetry,
        };
        (Arc::new(recorder), writer)
    }

    /// Records one attempt: counted always, queued for history unless the
    /// queue is full (then dropped and counted). Never waits.
    pub fn record(&self, event: &Event, target: &Target, attempt: &Attempt, tier: Option<usize>) {
        let record = AttemptRecord::new(event, target, attempt, tier, self.record_body_limit);
        let at_ms = crate::history::epoch_ms(record.at);
        {
            let mut counts = self.counts.lock().expect("counts lock");
            counts
                .entry(Scope::Webhook(record.webhook_id.clone()))
                .or_default()
                .add(record.outcome, at_ms);
            if let Some(tenant) = &record.tenant {
                counts
                    .entry(Scope::Tenant(tenant.clone()))
                    .or_default()
                    .add(record.outcome, at_ms);
            }
        }
        if self.tx.try_send(record).is_err() {
            self.telemetry.history_dropped();
        }
    }
}

impl Writer {
    /// Writes batches every `flush_interval` until `shutdown`, then writes
    /// what is left.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.flush_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let stopping = tokio::select! {
                _ = ticker.tick() => false,
                _ = shutdown.cancelled() => true,
            };
            loop {
                let mut batch = Vec::new();
                while batch.len() < BATCH {
                    match self.rx.try_recv() {
                        Ok(record) => batch.push(record),
                        Err(_) => break,
                    }
                }
                let full = batch.len() == BATCH;
                self.flush(batch).await;
                if !full {
                    break;
                }
            }
            if stopping {
                return;
            }
        }
    }

    async fn flush(&mut self, records: Vec<AttemptRecord>) {
        let counts = std::mem::take(&mut *self.counts.lock().expect("counts lock"));
        if records.is_empty() && counts.is_empty() {
            return;
        }
        let mut acks = Vec::new();
        let mut rows = Vec::with_capacity(records.len());
        for mut record in records {
            if let Some((producer, topic)) = &self.producer {
                let full = serde_json::to_vec(&record).expect("records serialise");
                let kafka = FutureRecord::to(topic).key(record.webhook_id.as_bytes()).payload(&full);
                match producer.send_result(kafka) {
                    Ok(ack) => acks.push(ack),
                    Err((e, _)) => self.telemetry.history_topic_failed(&e),
                }
                record.truncate_bodies(self.max_body);
            }
            let at_ms = crate::history::epoch_ms(record.at);
            let json = serde_json::to_string(&record).expect("records serialise");
            rows.push((record.webhook_id, at_ms, json));
        }
        if !acks.is_empty() {
            let telemetry = self.telemetry.clone();
            tokio::spawn(async move {
                for ack in futures::future::join_all(acks).await {
                    match ack {
                        Ok(Ok(_)) => {}
                        Ok(Err((e, _))) => telemetry.history_topic_failed(&e),
                        Err(_) => telemetry.history_topic_failed(&"the producer was dropped"),
                    }
                }
            });
        }
        let now_ms = crate::history::epoch_ms(time::OffsetDateTime::now_utc());
        match self.store.write(&rows, &counts, now_ms).await {
            Ok(()) => self.telemetry.history_written(rows.len()),
            Err(e) => {
                self.telemetry.history_write_failed(rows.len(), &e);
                // Counts are kept for the next flush; records are not.
                let mut pending = self.counts.lock().expect("counts lock");
                for (scope, c) in counts {
                    pending.entry(scope).or_default().merge(c);
                }
            }
        }
    }
}
