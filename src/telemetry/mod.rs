//! Telemetry: every stage reports named events here.
//!
//! Each method of [`Telemetry`] is one event: it writes its log line and
//! updates its metric in one place, so a log line never lacks its counter and
//! the set of things Herald reports can be read in one file. Hot-path events
//! (a record consumed, a delivery succeeded) log at `debug`/`trace` only;
//! anything an operator must act on logs at `warn` or `error`.

pub mod logging;
pub mod metrics;
pub mod tenants;

use std::time::Duration;

use tracing::{debug, error, info, trace, warn};

use crate::event::SourceRecord;
use crate::routing::envelope::Unroutable;
pub use metrics::Metrics;
pub use tenants::{TenantMetrics, TenantSeriesCache};

/// Where a retried attempt came from (`tier` label: `1`... or `redrive`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryFrom {
    /// Retry tier (0-based).
    Tier(usize),
    /// The redrive topic (manual retry, replay).
    Redrive,
}

impl RetryFrom {
    /// The `tier` label: `1`, `2`... or `redrive`.
    pub fn label(self) -> String {
        match self {
            RetryFrom::Tier(t) => (t + 1).to_string(),
            RetryFrom::Redrive => "redrive".to_owned(),
        }
    }
}

/// What telemetry reads of a finished delivery attempt (implemented by
/// `delivery::Attempt`), so that telemetry does not depend on delivery.
pub trait AttemptReport {
    fn delivery_id(&self) -> &str;
    /// 1 for the first attempt.
    fn number(&self) -> u32;
    fn duration(&self) -> Duration;
    /// `2xx`, `4xx`, `timeout`, ...: the `class` label.
    fn class(&self) -> &'static str;
    /// The 2xx status, or what went wrong.
    fn result(&self) -> Result<u16, String>;
}

/// What the gauges of one assigned partition show.
#[derive(Debug, Clone, Copy)]
pub struct PartitionGauges {
    /// Records behind the partition's end, as last reported.
    pub lag: Option<i64>,
    /// How long the oldest event in flight has been (zero when none).
    pub oldest_unfinished: Duration,
    /// When offsets of the partition were last committed.
    pub last_commit: std::time::SystemTime,
}

/// Whose records retention deleted before they were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// A wait topic's (a retry tier, the redrive topic): retries lost.
    Retries,
    /// A source topic's: events never delivered.
    Events,
}

/// The reporting handle passed to every stage: each named event becomes a
/// metric and, where people need it, a log line.
#[derive(Clone)]
pub struct Telemetry {
    pub metrics: Metrics,
}

impl Telemetry {
    /// Metrics with the series of `topics` (the source topics) registered,
    /// and delivery series of their own for up to `max_tenant_series` tenants.
    pub fn new(topics: &[String], max_tenant_series: usize) -> Telemetry {
        Telemetry {
            metrics: Metrics::new(topics, max_tenant_series),
        }
    }

    /// The series of `tenant` (a webhook's), resolved once into `cache`,
    /// which the webhook's prepared form keeps.
    pub fn tenant<'a>(&self, cache: &'a TenantSeriesCache, tenant: Option<&str>) -> &'a TenantMetrics {
        cache.get(&self.metrics.tenants, tenant)
    }

    // ---- intake -------------------------------------------------------------

    /// A record was taken from Kafka: counted, and one more event in flight.
    pub fn record_consumed(&self, record: &SourceRecord) {
        self.metrics.events_consumed.with_label_values(&[&record.topic]).inc();
        self.metrics.events_in_flight.inc();
        trace!(topic = %record.topic, partition = record.partition, offset = record.offset, "record consumed");
    }

    /// The broker handed over a record already handed over (dropped).
    pub fn record_repeated(&self, consumer: &'static str, record: &SourceRecord) {
        self.metrics.records_repeated.with_label_values(&[consumer]).inc();
        warn!(
            consumer,
            topic = %record.topic,
            partition = record.partition,
            offset = record.offset,
            "the broker handed over a record again; the copy is dropped"
        );
    }

    /// An event's deliveries are all done (delivered or written to a retry or dead-letter topic).
    pub fn event_completed(&self) {
        self.metrics.events_completed.inc();
        self.metrics.events_in_flight.dec();
    }

    /// An event left unfinished (shutdown or revoke deadline): not committed.
    pub fn event_abandoned(&self) {
        self.metrics.events_in_flight.dec();
    }

    /// The group assigned `partitions`; `total` are assigned now.
    pub fn partitions_assigned(&self, partitions: &[(String, i32)], total: usize) {
        self.metrics.rebalances.with_label_values(&["assign"]).inc();
        self.metrics.partitions_assigned.set(total as i64);
        info!(?partitions, total, "partitions assigned");
    }

    /// The group revoked `partitions`; `abandoned` events were left unfinished (their next owner delivers them).
    pub fn partitions_revoked(&self, partitions: &[(String, i32)], abandoned: usize, total: usize) {
        self.metrics.rebalances.with_label_values(&["revoke"]).inc();
        self.metrics.partitions_assigned.set(total as i64);
        self.metrics.revoke_abandoned_events.inc_by(abandoned as u64);
        if abandoned > 0 {
            warn!(
                ?partitions,
                abandoned,
                "partitions revoked with events still in flight; they were not committed and the next owner delivers them again"
            );
        } else {
            info!(?partitions, "partitions revoked; finished offsets committed");
        }
    }

    /// A rebalance failed.
    pub fn rebalance_error(&self, error: &dyn std::fmt::Display) {
        self.metrics.rebalances.with_label_values(&["error"]).inc();
        error!(%error, "consumer group rebalance failed");
    }

    /// `newly` partitions were just paused (0 after resuming); `paused` are now.
    pub fn partitions_paused(&self, newly: usize, paused: usize) {
        self.metrics.partition_pauses.inc_by(newly as u64);
        self.metrics.partitions_paused.set(paused as i64);
        if newly > 0 {
            debug!(newly, paused, "in-flight limit reached; partitions paused");
        }
    }

    /// The progress check found a partition Herald meant to read unread for
    /// an interval, records waiting past `read_to` up to `end`
    /// (`times` checks in a row), and resumed it.
    pub fn partition_not_read(
        &self,
        consumer: &str,
        (topic, partition): (&str, i32),
        (read_to, end): (i64, i64),
        times: u32,
    ) {
        self.metrics
            .partition_stalls
            .with_label_values(&[consumer, "not_read"])
            .inc();
        warn!(
            consumer,
            topic,
            partition,
            read_to,
            end,
            times,
            "partition not read although records wait and nothing paused it on purpose; resumed it \
             (if this repeats, the client cannot read its records: see the consumer errors logged)"
        );
    }

    /// The progress check found a retry held past its due time by an
    /// interval (its timer lost), and released it.
    pub fn retry_held_past_due(&self, consumer: &str, (topic, partition): (&str, i32), due: std::time::SystemTime) {
        self.metrics
            .partition_stalls
            .with_label_values(&[consumer, "held_past_due"])
            .inc();
        let late = std::time::SystemTime::now().duration_since(due).unwrap_or_default();
        warn!(
            consumer,
            topic,
            partition,
            late_ms = late.as_millis() as u64,
            "retry held past its due time; released it"
        );
    }

    /// The progress check could not ask the broker where the partitions stand.
    pub fn progress_check_failed(&self, consumer: &str, error: &dyn std::fmt::Display) {
        self.metrics.consumer_errors.inc();
        warn!(consumer, %error, "progress check could not read the partitions' offsets; the next check tries again");
    }

    /// Where a partition's log starts could not be read when its first
    /// record arrived behind the committed offset.
    pub fn expiry_check_failed(&self, consumer: &str, topic: &str, partition: i32, error: &dyn std::fmt::Display) {
        self.metrics.consumer_errors.inc();
        warn!(
            consumer,
            topic,
            partition,
            %error,
            "could not read where the partition's log starts: records deleted by retention before they were \
             read, if any, go uncounted"
        );
    }

    /// The group refused this member: its members speak another protocol
    /// or assignor (replicas of a version that used the eager assignors).
    pub fn group_protocol_mismatch(&self, consumer: &str, group: &str) {
        self.metrics.consumer_errors.inc();
        error!(
            consumer,
            group,
            "the consumer group refuses this replica: its other members use another rebalance protocol \
             (replicas of a version with the eager assignors, or a different partition.assignment.strategy); \
             they go on, this replica gets no partitions until they leave. Stop the old replicas (a \
             Recreate rollout): docs/operations.md#rebalances-and-crashes"
        );
    }

    /// librdkafka reported a consumer error (it retries by itself).
    pub fn consumer_error(&self, error: &dyn std::fmt::Display) {
        self.metrics.consumer_errors.inc();
        warn!(%error, "Kafka consumer error");
    }

    /// A commit of stored offsets ended.
    pub fn offsets_committed(&self, result: Result<(), &dyn std::fmt::Display>) {
        match result {
            Ok(()) => {
                self.metrics.offset_commits.with_label_values(&["ok"]).inc();
                trace!("offsets committed");
            }
            Err(error) => {
                self.metrics.offset_commits.with_label_values(&["error"]).inc();
                warn!(%error, "offset commit failed; the next commit retries it");
            }
        }
    }

    /// Finished offsets could not be stored for the next commit.
    pub fn offset_store_failed(&self, error: &dyn std::fmt::Display) {
        self.metrics.consumer_errors.inc();
        warn!(%error, "could not store offsets for commit");
    }

    /// One assigned partition's lag, oldest event in flight and last commit.
    pub fn partition_health(&self, consumer: &str, (topic, partition): (&str, i32), health: PartitionGauges) {
        let partition = partition.to_string();
        let labels = [consumer, topic, partition.as_str()];
        if let Some(lag) = health.lag {
            self.metrics.consumer_lag.with_label_values(&labels).set(lag);
        }
        self.metrics
            .oldest_unfinished
            .with_label_values(&labels)
            .set(health.oldest_unfinished.as_secs_f64());
        let committed = health
            .last_commit
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.metrics.last_commit.with_label_values(&labels).set(committed);
    }

    /// Bytes of a consumer's events in flight.
    pub fn in_flight_bytes(&self, consumer: &str, bytes: usize) {
        self.metrics
            .in_flight_bytes
            .with_label_values(&[consumer])
            .set(bytes as i64);
    }

    /// How many of the cluster's brokers `consumer`'s client is connected
    /// to, and how many it needs and cannot reach.
    pub fn kafka_brokers(&self, consumer: &str, up: usize, unreachable: usize) {
        for (state, n) in [("up", up), ("unreachable", unreachable)] {
            self.metrics
                .kafka_brokers
                .with_label_values(&[consumer, state])
                .set(n as i64);
        }
    }

    /// A partition is no longer assigned: its gauges disappear.
    pub fn partition_health_gone(&self, consumer: &str, topic: &str, partition: i32) {
        let partition = partition.to_string();
        let labels = [consumer, topic, partition.as_str()];
        let _ = self.metrics.consumer_lag.remove_label_values(&labels);
        let _ = self.metrics.oldest_unfinished.remove_label_values(&labels);
        let _ = self.metrics.last_commit.remove_label_values(&labels);
    }

    // ---- routing ------------------------------------------------------------

    /// The envelope rules could not read the event: it goes to the dead-letter topic.
    pub fn event_unroutable(&self, record: &SourceRecord, why: &Unroutable) {
        self.metrics
            .events_unroutable
            .with_label_values(&[why.reason.as_str()])
            .inc();
        warn!(
            topic = %record.topic,
            partition = record.partition,
            offset = record.offset,
            reason = why.reason.as_str(),
            detail = %why.detail,
            "record is not a routable event; sending it to the dead-letter topic"
        );
    }

    /// The payload filters of `webhooks` webhooks subscribed to its type
    /// turned the event of `record` away: no deliveries of theirs.
    pub fn event_filtered(&self, record: &SourceRecord, event_type: &str, webhooks: usize) {
        self.metrics
            .deliveries_filtered
            .with_label_values(&[&record.topic])
            .inc_by(webhooks as u64);
        debug!(topic = %record.topic, offset = record.offset, event_type, webhooks, "webhooks' payload filters turned this event away");
    }

    /// No webhook subscribes to the event.
    pub fn event_unmatched(&self, record: &SourceRecord, event_type: &str) {
        self.metrics.events_unmatched.with_label_values(&[&record.topic]).inc();
        debug!(topic = %record.topic, offset = record.offset, event_type, "no webhook subscribes to this event");
    }

    // ---- delivery -----------------------------------------------------------

    /// One delivery (an event to one webhook) started.
    pub fn delivery_started(&self) {
        self.metrics.deliveries_in_flight.inc();
    }

    /// A delivery attempt ended; `tenant` holds the series of the webhook's
    /// tenant ([`Telemetry::tenant`]); `from` is where a retry came from: its
    /// tier, or the redrive topic.
    pub fn delivery_finished(
        &self,
        webhook_id: &str,
        tenant: &TenantMetrics,
        event_type: &str,
        from: Option<RetryFrom>,
        attempt: &impl AttemptReport,
    ) {
        self.metrics.deliveries_in_flight.dec();
        let result = attempt.result();
        let outcome = if result.is_ok() { "succeeded" } else { "failed" };
        if let Some(from) = from {
            self.metrics
                .retry_attempts
                .with_label_values(&[&from.label(), outcome])
                .inc();
        }
        self.metrics
            .deliveries
            .with_label_values(&[outcome, attempt.class()])
            .inc();
        let seconds = attempt.duration().as_secs_f64();
        self.metrics
            .delivery_duration
            .with_label_values(&[outcome])
            .observe(seconds);
        tenant.attempted(outcome, attempt.class(), seconds);
        match result {
            Ok(status) => debug!(
                webhook = webhook_id,
                delivery = %attempt.delivery_id(),
                attempt = attempt.number(),
                event_type,
                status,
                duration_ms = attempt.duration().as_millis() as u64,
                "delivered"
            ),
            Err(error) => warn!(
                webhook = webhook_id,
                delivery = %attempt.delivery_id(),
                attempt = attempt.number(),
                event_type,
                class = attempt.class(),
                error = %error,
                duration_ms = attempt.duration().as_millis() as u64,
                "delivery failed"
            ),
        }
    }

    /// A delivery was not attempted (its webhook is paused or disabled) and
    /// is kept in the dead-letter topic; `tenant` is the webhook's.
    pub fn delivery_not_attempted(&self, webhook_id: &str, tenant: Option<&str>, status: &'static str, detail: &str) {
        self.metrics.deliveries_not_attempted.with_label_values(&[status]).inc();
        self.metrics.tenants.of(tenant).not_attempted(status);
        debug!(
            webhook = webhook_id,
            status, detail, "delivery not attempted; kept in the dead-letter topic"
        );
    }

    // ---- dead letters ---------------------------------------------------------

    /// The broker acknowledged a dead letter, `took` after it was sent.
    pub fn dead_lettered(&self, reason: &str, took: Duration) {
        self.metrics.dead_letters.with_label_values(&[reason]).inc();
        self.metrics.failure_record_produce_duration.observe(took.as_secs_f64());
        debug!(reason, "dead-letter record acknowledged");
    }

    /// The broker acknowledged a retry record for `tier`, due at `due_at`.
    pub fn retry_scheduled(&self, tier: usize, due_at: std::time::SystemTime, took: Duration) {
        self.metrics
            .retries_scheduled
            .with_label_values(&[&(tier + 1).to_string()])
            .inc();
        self.metrics.failure_record_produce_duration.observe(took.as_secs_f64());
        let in_ms = due_at
            .duration_since(std::time::SystemTime::now())
            .map_or(0, |d| d.as_millis() as u64);
        debug!(tier = tier + 1, due_in_ms = in_ms, "retry scheduled");
    }

    /// The broker acknowledged a redrive record (a manual retry or a replay).
    pub fn redrive_written(&self, took: Duration) {
        self.metrics.redrives.inc();
        self.metrics.failure_record_produce_duration.observe(took.as_secs_f64());
        debug!("redrive record acknowledged");
    }

    /// A retry came due that a retry-pending run had re-driven (at `cut`):
    /// finished, not delivered again.
    pub fn retry_finished(&self, webhook: &str, delivery_id: &str, cut: time::OffsetDateTime) {
        self.metrics.retries_finished.inc();
        debug!(
            webhook,
            delivery_id,
            %cut,
            "retry finished without an attempt: retry pending re-drove it"
        );
    }

    /// A waiting retry was moved to the end of a wait topic.
    pub fn retry_requeued(&self, from_topic: &str) {
        self.metrics.retry_requeued.with_label_values(&[from_topic]).inc();
        debug!(
            topic = from_topic,
            "retry held out of order moved to the end of a wait topic"
        );
    }

    /// The broker refused a failure record for good; it is written as `to`.
    pub fn failure_record_downgraded(&self, to: &'static str, topic: &str, error: &dyn std::fmt::Display) {
        self.metrics.failure_record_downgrades.with_label_values(&[to]).inc();
        let what = match to {
            "lean" => "writing it again without its optional diagnostics",
            "stub" => "dead-lettering a stub that points at the event's source position instead",
            _ => "keeping the delivery in the dead-letter topic instead",
        };
        warn!(topic, %error, to, "the broker refused a failure record; {what}");
    }

    /// Even a stub of a failure record was refused for what it is: the
    /// record at `source` (topic, partition, offset) is committed past with
    /// no dead letter. Final, counted and logged with where the event is.
    pub fn failure_record_unwritable(&self, source: (&str, i32, i64), topic: &str, error: &dyn std::fmt::Display) {
        self.metrics.failure_records_unwritable.inc();
        let (source_topic, source_partition, source_offset) = source;
        error!(
            topic,
            %error,
            source_topic,
            source_partition,
            source_offset,
            "the broker refused even a stub of a failure record; moving on without a dead letter: the event \
             is at the source position named here while its topic retains it"
        );
    }

    /// The producer failed fatally and was replaced.
    pub fn producer_recreated(&self, code: &dyn std::fmt::Display, reason: &str) {
        self.metrics.producer_recreated.inc();
        error!(%code, reason, "the Kafka producer failed fatally; replaced it with a new one (unacknowledged records are written again)");
    }

    /// An ordered delivery took `step` (one of [`metrics::ORDERING_STEPS`]).
    pub fn ordering_step(&self, step: &'static str) {
        self.metrics.ordering_steps.with_label_values(&[step]).inc();
    }

    /// A Redis command of an ordered delivery failed; it is tried again.
    pub fn ordering_store_failed(&self, op: &str, error: &dyn std::fmt::Display) {
        self.metrics.ordering_store_errors.inc();
        tracing::warn!(op, %error, "ordering: Redis did not answer; the key's deliveries wait and it is tried again");
    }

    /// A receiver answered `429`: its webhook's rate is now `per_second`.
    pub fn rate_slowed(&self, webhook: &str, per_second: f64) {
        self.metrics.rate_slowdowns.inc();
        tracing::info!(
            webhook,
            per_second,
            "the receiver answered 429: its rate is lowered for a while"
        );
    }

    /// A step of shutting down failed (`step`: the task or the flush).
    pub fn shutdown_failed(&self, step: &str, error: &dyn std::fmt::Display) {
        self.metrics.shutdown_failures.with_label_values(&[step]).inc();
        error!(step, %error, "a step of shutting down failed");
    }

    /// The producer failed fatally and its replacement could not be made yet.
    pub fn producer_recreate_failed(&self, error: &dyn std::fmt::Display) {
        error!(%error, "the Kafka producer failed fatally and could not be replaced; retrying");
    }

    /// Records of `topic` were deleted by retention before they were read:
    /// offsets `from` up to the log start `to`.
    pub fn records_expired(&self, of: Expired, topic: &str, partition: i32, from: i64, to: i64) {
        let n = (to - from).max(0) as u64;
        let (counter, what) = match of {
            Expired::Retries => (
                &self.metrics.retry_records_expired,
                "records expired before they were read: retention deleted them; raise the topic's retention.ms",
            ),
            Expired::Events => (
                &self.metrics.source_records_expired,
                "source records expired before they were read: retention deleted them, and their events were \
                 never delivered; replay them from where the publisher keeps them, and keep records longer than \
                 Herald may be stopped",
            ),
        };
        counter.with_label_values(&[topic]).inc_by(n);
        error!(
            topic,
            partition,
            expired = n,
            from_offset = from,
            log_start = to,
            "{what}"
        );
    }

    /// Herald failed on `record` with a panic (a bug): it is dead-lettered.
    pub fn event_panicked(&self, consumer: &'static str, record: &SourceRecord, panic: &str) {
        self.metrics.event_panics.with_label_values(&[consumer]).inc();
        tracing::error!(
            consumer,
            topic = %record.topic,
            partition = record.partition,
            offset = record.offset,
            panic,
            "Herald failed on this record (a bug); sending it to the dead-letter topic as internal_error"
        );
    }

    /// A record in a wait topic cannot be read as a retry record: it is dead-lettered.
    pub fn retry_record_invalid(&self, record: &SourceRecord, error: &dyn std::fmt::Display) {
        self.metrics.retry_records_invalid.inc();
        warn!(
            topic = %record.topic,
            partition = record.partition,
            offset = record.offset,
            %error,
            "retry record cannot be used; sending it to the dead-letter topic"
        );
    }

    /// Herald disabled a webhook (`kind`: why, as a label).
    pub fn webhook_disabled(&self, webhook_id: &str, kind: &'static str, reason: &str) {
        self.metrics.webhooks_disabled.with_label_values(&[kind]).inc();
        warn!(webhook = webhook_id, kind, reason, "webhook disabled");
    }

    // ---- management API -----------------------------------------------------

    /// A management API request was answered (`route`: its template).
    pub fn admin_request(&self, method: &str, route: &str, status: u16, took: Duration) {
        self.metrics
            .admin_requests
            .with_label_values(&[method, route, &status.to_string()])
            .inc();
        self.metrics
            .admin_request_duration
            .with_label_values(&[route])
            .observe(took.as_secs_f64());
        debug!(
            method,
            route,
            status,
            took_ms = took.as_millis() as u64,
            "admin request"
        );
    }

    /// A management API request came without a known token.
    pub fn admin_unauthorized(&self) {
        debug!("admin request without a valid token");
    }

    /// A webhook changed through the management API.
    pub fn admin_change(&self, action: &'static str, webhook_id: &str, caller: &str) {
        self.metrics.admin_changes.with_label_values(&[action]).inc();
        info!(action, webhook = webhook_id, by = caller, "webhook changed");
    }

    /// A tenant, or one of its tokens (`token`), changed through the
    /// management API.
    pub fn tenant_change(&self, action: &'static str, tenant: &str, token: Option<&str>, caller: &str) {
        self.metrics.admin_changes.with_label_values(&[action]).inc();
        info!(action, tenant, token, by = caller, "tenant changed");
    }

    /// The history queue was full: one attempt's record was dropped.
    pub fn history_dropped(&self) {
        self.metrics.history_records.with_label_values(&["dropped"]).inc();
        debug!("delivery history queue full: record dropped");
    }

    /// An attempt not written because newer attempts of its webhook replaced
    /// it (Redis keeps only the newest `history.max_per_webhook`).
    pub fn history_superseded(&self) {
        self.history_superseded_by(1);
    }

    /// `n` queued history records were replaced by newer ones before being written.
    pub fn history_superseded_by(&self, n: usize) {
        self.metrics
            .history_records
            .with_label_values(&["superseded"])
            .inc_by(n as u64);
    }

    /// `n` history records were written to Redis.
    pub fn history_written(&self, n: usize) {
        self.metrics
            .history_records
            .with_label_values(&["written"])
            .inc_by(n as u64);
    }

    /// `n` history records could not be written to Redis.
    pub fn history_write_failed(&self, n: usize, error: &dyn std::fmt::Display) {
        self.metrics
            .history_records
            .with_label_values(&["write_failed"])
            .inc_by(n as u64);
        warn!(records = n, %error, "delivery history not written to Redis");
    }

    /// A history record could not be published to `history.topic`.
    pub fn history_topic_failed(&self, error: &dyn std::fmt::Display) {
        self.metrics.history_records.with_label_values(&["topic_failed"]).inc();
        warn!(%error, "delivery history record not published");
    }

    /// A system event (`webhook.created`, ...) was given up: logged with
    /// its body, so an operator can publish it by hand.
    pub fn system_event_lost(&self, event: &str, webhook_id: &str, body: &str, why: &dyn std::fmt::Display) {
        self.metrics.system_event_errors.inc();
        error!(event, webhook = webhook_id, body, %why, "system event not published; given up");
    }

    /// An attempt to publish a system event failed; it will be tried again.
    pub fn system_event_retry(&self, event: &str, webhook_id: &str, error: &dyn std::fmt::Display) {
        self.metrics.system_event_retries.inc();
        warn!(event, webhook = webhook_id, %error, "system event not acknowledged; trying again");
    }

    /// A status change Herald decided (auto-disable) could not be written.
    pub fn lifecycle_error(&self, webhook_id: &str, error: &dyn std::fmt::Display) {
        self.metrics.lifecycle_errors.inc();
        error!(webhook = webhook_id, %error, "could not apply a webhook status change");
    }

    /// A due retry was taken up `late` after its due time.
    pub fn retry_taken_up(&self, from: RetryFrom, late: Duration) {
        self.metrics
            .retry_lateness
            .with_label_values(&[&from.label()])
            .observe(late.as_secs_f64());
    }

    /// Retries held until due, and of those, held aside out of order.
    pub fn retry_records_waiting(&self, all: usize, out_of_order: usize) {
        self.metrics.retry_records_waiting.set(all as i64);
        self.metrics.retry_records_out_of_order.set(out_of_order as i64);
    }

    /// A consumer's fetcher was woken to fetch a resumed partition at once.
    pub fn consumer_woke(&self, consumer: &'static str) {
        self.metrics.consumer_wakeups.with_label_values(&[consumer]).inc();
    }

    /// A retry or dead-letter record was not written; it is sent again after `retry_in` unless `permanent`.
    pub fn failure_record_produce_failed(
        &self,
        reason: &str,
        error: &dyn std::fmt::Display,
        permanent: bool,
        retry_in: Duration,
    ) {
        self.metrics.failure_record_produce_errors.inc();
        if permanent {
            error!(
                reason,
                %error,
                retry_in_ms = retry_in.as_millis() as u64,
                "the broker refuses the dead-letter topic for good (authorization? deleted topic?); \
                 retrying, its source offset stays uncommitted until it is fixed"
            );
        } else {
            error!(
                reason,
                %error,
                retry_in_ms = retry_in.as_millis() as u64,
                "could not write a failure record (to a retry tier or the dead-letter topic); retrying, its \
                 source offset stays uncommitted"
            );
        }
    }

    // ---- subscriptions --------------------------------------------------------

    /// The index was brought up to date (`kind`: how); `counts` are its webhooks by status.
    pub fn subscriptions_synced(&self, kind: &'static str, counts: [(&'static str, usize); 3]) {
        self.metrics.subscription_syncs.with_label_values(&[kind]).inc();
        for (status, n) in counts {
            self.metrics.webhooks.with_label_values(&[status]).set(n as i64);
        }
        if kind == "full" {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            self.metrics.subscription_last_sync.set(now);
        }
        debug!(kind, ?counts, "subscription index updated");
    }

    /// Documents read from Redis in one batch: `[unchanged, changed,
    /// invalid, missing]`, and how many webhooks are held prepared.
    pub fn subscription_documents_read(&self, counts: [u64; 4], prepared: usize) {
        for (result, n) in ["unchanged", "changed", "invalid", "missing"].into_iter().zip(counts) {
            if n > 0 {
                self.metrics.subscription_reads.with_label_values(&[result]).inc_by(n);
            }
        }
        self.metrics.webhooks_prepared.set(prepared as i64);
    }

    /// A webhook document cannot be used; `kept` when the last good version
    /// of it goes on being used.
    pub fn subscription_record_invalid(&self, key: &str, reason: &str, kept: bool) {
        self.metrics.subscription_records_invalid.inc();
        if kept {
            error!(
                key,
                reason,
                "webhook document cannot be read; delivering with its last good version until it is fixed or deleted"
            );
        } else {
            warn!(key, reason, "skipping malformed webhook record");
        }
    }

    /// The subscription sync failed at `stage`; it delivers from the index it has and tries again after `retry_in`.
    pub fn subscription_error(&self, stage: &'static str, error: &dyn std::fmt::Display, retry_in: Option<Duration>) {
        self.metrics.subscription_errors.with_label_values(&[stage]).inc();
        warn!(
            stage,
            %error,
            retry_in_ms = retry_in.map(|d| d.as_millis() as u64),
            "subscription sync error; delivering from the last loaded index"
        );
    }

    /// The change feed's Redis connection came up or went down.
    pub fn redis_connected(&self, up: bool) {
        let was = self.metrics.redis_up.get();
        self.metrics.redis_up.set(i64::from(up));
        if up && was == 0 {
            info!("subscription change feed connected to Redis");
        } else if !up && was == 1 {
            warn!("subscription change feed lost its Redis connection");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Report(Result<u16, String>, &'static str);

    impl AttemptReport for Report {
        fn delivery_id(&self) -> &str {
            "d1"
        }
        fn number(&self) -> u32 {
            1
        }
        fn duration(&self) -> Duration {
            Duration::from_millis(20)
        }
        fn class(&self) -> &'static str {
            self.1
        }
        fn result(&self) -> Result<u16, String> {
            self.0.clone()
        }
    }

    /// The sum of every series of `family` whose labels include all of `labels`.
    fn sum(telemetry: &Telemetry, family: &str, labels: &[(&str, &str)]) -> f64 {
        let families = telemetry.metrics.registry().gather();
        let f = families.iter().find(|f| f.name() == family).unwrap();
        f.get_metric()
            .iter()
            .filter(|m| {
                labels
                    .iter()
                    .all(|(k, v)| m.get_label().iter().any(|l| l.name() == *k && l.value() == *v))
            })
            .map(|m| match f.get_field_type() {
                prometheus::proto::MetricType::HISTOGRAM => m.get_histogram().get_sample_count() as f64,
                _ => m.get_counter().get_value(),
            })
            .sum()
    }

    #[test]
    fn the_tenant_series_sum_to_the_totals_whatever_the_cap() {
        let telemetry = Telemetry::new(&[], 1);
        let caches: Vec<(Option<&str>, TenantSeriesCache)> = [Some("acme"), Some("globex"), None, Some("acme")]
            .into_iter()
            .map(|t| (t, TenantSeriesCache::default()))
            .collect();
        for (i, (tenant, cache)) in caches.iter().cycle().take(20).enumerate() {
            let report = match i % 3 {
                0 => Report(Ok(204), "2xx"),
                1 => Report(Err("HTTP 503".into()), "5xx"),
                _ => Report(Err("timed out".into()), "timeout"),
            };
            telemetry.delivery_started();
            telemetry.delivery_finished("wh", telemetry.tenant(cache, *tenant), "order.paid", None, &report);
            telemetry.delivery_not_attempted("wh", *tenant, "paused", "paused");
        }
        for (outcome, class) in [("succeeded", "2xx"), ("failed", "5xx"), ("failed", "timeout")] {
            let labels = [("outcome", outcome), ("class", class)];
            let total = sum(&telemetry, "herald_deliveries_total", &labels);
            assert!(total > 0.0);
            assert_eq!(sum(&telemetry, "herald_tenant_deliveries_total", &labels), total);
        }
        for outcome in metrics::OUTCOMES {
            let labels = [("outcome", outcome)];
            assert_eq!(
                sum(&telemetry, "herald_tenant_delivery_duration_seconds", &labels),
                sum(&telemetry, "herald_delivery_duration_seconds", &labels),
            );
        }
        assert_eq!(
            sum(&telemetry, "herald_tenant_deliveries_not_attempted_total", &[]),
            sum(&telemetry, "herald_deliveries_not_attempted_total", &[]),
        );
        // acme first, globex beyond the cap of 1, the webhooks of no tenant apart.
        let of = |tenant| sum(&telemetry, "herald_tenant_deliveries_total", &[("tenant", tenant)]);
        assert_eq!((of("acme"), of("(other)"), of("(none)")), (10.0, 5.0, 5.0));
        assert_eq!(of("globex"), 0.0);
    }
}
