//! Herald's Prometheus metrics, in a registry owned by the application.
//!
//! Names end in their unit (`_total`, `_seconds`); labels are drawn from small
//! closed sets (outcome, status class, reason, status, configured topics) and
//! never carry a URL, webhook id or event id. Label series known in advance
//! are created at start so dashboards and alerts see zeros, not gaps. The
//! one label drawn from an open set, `tenant`, is on families of its own and
//! bounded by `ops.max_tenant_series` ([`super::tenants`]).

use std::sync::Arc;

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use super::tenants::TenantSeries;

/// Every metric Herald exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub events_consumed: IntCounterVec,
    pub events_unroutable: IntCounterVec,
    pub events_unmatched: IntCounterVec,
    pub deliveries_filtered: IntCounterVec,
    pub events_completed: IntCounter,
    pub events_in_flight: IntGauge,
    pub deliveries: IntCounterVec,
    pub deliveries_not_attempted: IntCounterVec,
    pub delivery_duration: HistogramVec,
    pub deliveries_in_flight: IntGauge,
    pub dead_letters: IntCounterVec,
    pub retries_scheduled: IntCounterVec,
    pub retry_attempts: IntCounterVec,
    pub retry_records_waiting: IntGauge,
    pub retry_lateness: HistogramVec,
    pub retry_records_invalid: IntCounter,
    pub event_panics: IntCounterVec,
    pub retry_records_out_of_order: IntGauge,
    pub retry_requeued: IntCounterVec,
    pub retry_records_expired: IntCounterVec,
    pub source_records_expired: IntCounterVec,
    pub redrives: IntCounter,
    pub retries_finished: IntCounter,
    pub failure_record_downgrades: IntCounterVec,
    pub failure_records_unwritable: IntCounter,
    pub producer_recreated: IntCounter,
    pub rate_slowdowns: IntCounter,
    pub ordering_steps: IntCounterVec,
    pub ordering_store_errors: IntCounter,
    pub shutdown_failures: IntCounterVec,
    pub consumer_wakeups: IntCounterVec,
    pub records_repeated: IntCounterVec,
    pub webhooks_disabled: IntCounterVec,
    pub lifecycle_errors: IntCounter,
    pub failure_record_produce_errors: IntCounter,
    pub failure_record_produce_duration: Histogram,
    pub partitions_assigned: IntGauge,
    pub partitions_paused: IntGauge,
    pub partition_pauses: IntCounter,
    pub rebalances: IntCounterVec,
    pub partition_stalls: IntCounterVec,
    pub http_connections: IntGaugeVec,
    pub http_connections_refused: IntCounterVec,
    pub revoke_abandoned_events: IntCounter,
    pub offset_commits: IntCounterVec,
    pub consumer_errors: IntCounter,
    pub kafka_brokers: IntGaugeVec,
    pub consumer_lag: IntGaugeVec,
    pub oldest_unfinished: GaugeVec,
    pub in_flight_bytes: IntGaugeVec,
    pub last_commit: GaugeVec,
    pub webhooks: IntGaugeVec,
    pub subscription_syncs: IntCounterVec,
    pub subscription_errors: IntCounterVec,
    pub subscription_records_invalid: IntCounter,
    pub subscription_reads: IntCounterVec,
    pub webhooks_prepared: IntGauge,
    pub subscription_last_sync: IntGauge,
    pub redis_up: IntGauge,
    pub build_info: IntGaugeVec,
    pub admin_requests: IntCounterVec,
    pub admin_request_duration: HistogramVec,
    pub admin_changes: IntCounterVec,
    pub system_event_errors: IntCounter,
    pub system_event_retries: IntCounter,
    pub system_events_pending: IntGauge,
    pub history_records: IntCounterVec,
    /// Deliveries by tenant, for a bounded number of tenants.
    pub tenants: Arc<TenantSeries>,
}

/// Delivery outcomes (`outcome` label).
pub const OUTCOMES: [&str; 2] = ["succeeded", "failed"];

/// Steps of ordered deliveries (`herald_ordering_steps_total{step}`):
/// `parked` (written to a tier behind an earlier delivery of its key),
/// `waited` (came due before its turn and went back to wait), `released`
/// (its turn came after waiting), `skipped` (found done already: a replay
/// or a second copy).
pub const ORDERING_STEPS: [&str; 4] = ["parked", "waited", "released", "skipped"];
/// Status classes (`class` label).
pub const CLASSES: [&str; 9] = [
    "2xx",
    "3xx",
    "4xx",
    "5xx",
    "timeout",
    "network",
    "blocked",
    "saturated",
    "rate_limited",
];
/// Why a delivery was not attempted (`status` label).
pub const NOT_ATTEMPTED: [&str; 5] = ["paused", "disabled", "deleted", "unsubscribed", "invalid"];

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric registered once");
    metric
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let metric = IntCounter::new(name, help).expect("valid metric definition");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric registered once");
    metric
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let metric = IntGauge::new(name, help).expect("valid metric definition");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric registered once");
    metric
}

fn float_gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let metric = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric registered once");
    metric
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric registered once");
    metric
}

impl Metrics {
    /// Creates and registers every metric. `topics` are the configured source
    /// topics, whose series are created up front; `max_tenant_series` the
    /// tenants given delivery series of their own (`ops.max_tenant_series`).
    pub fn new(topics: &[String], max_tenant_series: usize) -> Metrics {
        let registry = Registry::new();
        let r = &registry;
        let latency_buckets = vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ];
        let delivery_duration = HistogramVec::new(
            HistogramOpts::new(
                "herald_delivery_duration_seconds",
                "Time from sending a webhook request to having its response (or failure).",
            )
            .buckets(latency_buckets.clone()),
            &["outcome"],
        )
        .expect("valid metric definition");
        registry
            .register(Box::new(delivery_duration.clone()))
            .expect("metric registered once");
        let retry_lateness = HistogramVec::new(
            HistogramOpts::new(
                "herald_retry_lateness_seconds",
                "How long after its due time a retry was taken up, by tier: grows when tier consumers fall behind.",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0]),
            &["tier"],
        )
        .expect("valid metric definition");
        registry
            .register(Box::new(retry_lateness.clone()))
            .expect("metric registered once");
        let failure_record_produce_duration = Histogram::with_opts(
            HistogramOpts::new(
                "herald_failure_record_produce_duration_seconds",
                "Time from producing a failure record (to a retry tier or the dead-letter topic) to the broker's \
                 acknowledgement.",
            )
            .buckets(latency_buckets.clone()),
        )
        .expect("valid metric definition");
        registry
            .register(Box::new(failure_record_produce_duration.clone()))
            .expect("metric registered once");
        let admin_request_duration = HistogramVec::new(
            HistogramOpts::new(
                "herald_admin_request_duration_seconds",
                "Management API request latency, by route template.",
            )
            .buckets(latency_buckets.clone()),
            &["route"],
        )
        .expect("valid metric definition");
        registry
            .register(Box::new(admin_request_duration.clone()))
            .expect("metric registered once");

        let tenants = Arc::new(TenantSeries::new(&registry, max_tenant_series, latency_buckets));
        let m = Metrics {
            tenants,
            events_consumed: counter_vec(r, "herald_events_consumed_total", "Records consumed from source topics.", &["topic"]),
            events_unroutable: counter_vec(
                r,
                "herald_events_unroutable_total",
                "Records that are not usable events, by reason; each is dead-lettered.",
                &["reason"],
            ),
            events_unmatched: counter_vec(
                r,
                "herald_events_unmatched_total",
                "Events no webhook subscribes to.",
                &["topic"],
            ),
            deliveries_filtered: counter_vec(
                r,
                "herald_deliveries_filtered_total",
                "Deliveries not made because the webhook's payload filter turned the event away (one per event and webhook).",
                &["topic"],
            ),
            events_completed: counter(
                r,
                "herald_events_completed_total",
                "Events whose every delivery finished, so their offset may be committed.",
            ),
            events_in_flight: gauge(r, "herald_events_in_flight", "Events consumed and not yet finished."),
            deliveries: counter_vec(
                r,
                "herald_deliveries_total",
                "Delivery attempts by outcome and status class (2xx, 3xx, 4xx, 5xx, timeout, network, blocked, saturated, rate_limited).",
                &["outcome", "class"],
            ),
            deliveries_not_attempted: counter_vec(
                r,
                "herald_deliveries_not_attempted_total",
                "Deliveries not attempted because the webhook is paused or disabled; each is dead-lettered.",
                &["status"],
            ),
            delivery_duration,
            deliveries_in_flight: gauge(r, "herald_deliveries_in_flight", "HTTP requests in progress."),
            dead_letters: counter_vec(
                r,
                "herald_dead_letters_total",
                "Records written to the dead-letter topic and acknowledged, by reason.",
                &["reason"],
            ),
            retries_scheduled: counter_vec(
                r,
                "herald_retries_scheduled_total",
                "Failed deliveries written to a retry tier and acknowledged, by tier (1 = first).",
                &["tier"],
            ),
            retry_attempts: counter_vec(
                r,
                "herald_retry_attempts_total",
                "Delivery attempts made from a retry tier, by tier and outcome.",
                &["tier", "outcome"],
            ),
            retry_records_waiting: gauge(
                r,
                "herald_retry_records_waiting",
                "Retry records held in memory until due (at most about one per tier partition).",
            ),
            retry_lateness,
            records_repeated: counter_vec(
                r,
                "herald_records_repeated_total",
                "Records a broker handed over twice within one assignment (a broker fault), dropped, by consumer.",
                &["consumer"],
            ),
            retry_records_out_of_order: gauge(
                r,
                "herald_retry_records_out_of_order",
                "Of the retries held until due, those held aside because they are due later than their topic's \
                 band (a long Retry-After): their partitions are read on meanwhile.",
            ),
            retry_requeued: counter_vec(
                r,
                "herald_retry_requeued_total",
                "Retries held out of order that were moved to the end of a wait topic (retry.max_out_of_order), \
                 by the topic they were read from: the extra broker writes of keeping every retry on time.",
                &["topic"],
            ),
            retry_records_expired: counter_vec(
                r,
                "herald_retry_records_expired_total",
                "Records of a retry, redrive or dead-letter topic deleted by retention before Herald read them: \
                 retries lost. The topic's retention.ms is shorter than the schedule needs.",
                &["topic"],
            ),
            source_records_expired: counter_vec(
                r,
                "herald_source_records_expired_total",
                "Records of a source topic deleted by retention before Herald read them (the group's committed \
                 offset was behind the partition's log start when it was assigned): events never delivered.",
                &["topic"],
            ),
            redrives: counter(
                r,
                "herald_redrives_total",
                "Deliveries written to the redrive topic and acknowledged (manual retries, replays).",
            ),
            retries_finished: counter(
                r,
                "herald_retries_finished_total",
                "Retries that came due in a tier after a retry-pending run had re-driven them: finished \
                 without an attempt, since the re-driven copy is the one delivered.",
            ),
            failure_record_downgrades: counter_vec(
                r,
                "herald_failure_record_downgrades_total",
                "Failure records the broker refused for good and that were written another way: \
                 lean (optional diagnostics dropped), stub (too large even so: a dead letter pointing at the \
                 source position), dead_letter (the retry topic refused it).",
                &["to"],
            ),
            failure_records_unwritable: counter(
                r,
                "herald_failure_records_unwritable_total",
                "Failure records the broker refused even as a stub (no value, no key, bounded headers): committed \
                 past with no dead letter, the source position logged.",
            ),
            producer_recreated: counter(
                r,
                "herald_producer_recreated_total",
                "Times the Kafka producer failed fatally and was replaced by a new one.",
            ),
            rate_slowdowns: counter(
                r,
                "herald_rate_slowdowns_total",
                "429 answers that lowered a rate-limited webhook's rate (halved, back over delivery.rate_recovery).",
            ),
            ordering_steps: counter_vec(
                r,
                "herald_ordering_steps_total",
                "Steps of ordered deliveries (ordering): parked behind an earlier delivery of their key, waited again, released, skipped as already done.",
                &["step"],
            ),
            ordering_store_errors: counter(
                r,
                "herald_ordering_store_errors_total",
                "Redis commands of ordered deliveries that failed (retried until they succeed; the key's deliveries wait meanwhile).",
            ),
            shutdown_failures: counter_vec(
                r,
                "herald_shutdown_failures_total",
                "Steps of a shutdown that failed: a task that panicked, or the final producer flush.",
                &["step"],
            ),
            retry_records_invalid: counter(
                r,
                "herald_retry_records_invalid_total",
                "Records in a retry tier that lack Herald's headers (dead-lettered).",
            ),
            event_panics: counter_vec(
                r,
                "herald_event_panics_total",
                "Records Herald failed on with a panic (a bug), by consumer; each is dead-lettered as internal_error.",
                &["consumer"],
            ),
            consumer_wakeups: counter_vec(
                r,
                "herald_consumer_wakeups_total",
                "Times a consumer loop woke up (a record, a due timer, or finished work), by consumer.",
                &["consumer"],
            ),
            webhooks_disabled: counter_vec(
                r,
                "herald_webhooks_disabled_total",
                "Webhooks Herald disabled, by reason (gone = the endpoint answered 410; auto = failing too long).",
                &["reason"],
            ),
            lifecycle_errors: counter(
                r,
                "herald_lifecycle_errors_total",
                "Failures to apply a webhook status change.",
            ),
            failure_record_produce_errors: counter(
                r,
                "herald_failure_record_produce_errors_total",
                "Failed attempts to produce a failure record to a retry tier or the dead-letter topic (each is \
                 retried).",
            ),
            failure_record_produce_duration,
            partitions_assigned: gauge(r, "herald_partitions_assigned", "Source partitions assigned to this replica."),
            partitions_paused: gauge(
                r,
                "herald_partitions_paused",
                "Source partitions paused because their in-flight limit is reached.",
            ),
            partition_pauses: counter(
                r,
                "herald_partition_pauses_total",
                "Times a partition was paused because an in-flight limit was reached (back-pressure).",
            ),
            rebalances: counter_vec(r, "herald_rebalances_total", "Consumer group rebalance events.", &["kind"]),
            http_connections: gauge_vec(
                r,
                "herald_http_connections",
                "Connections open on each listener (admin: the management API and portal; ops), at most its \
                 max_connections.",
                &["listener"],
            ),
            http_connections_refused: counter_vec(
                r,
                "herald_http_connections_refused_total",
                "Connections closed as soon as accepted because their listener held max_connections already.",
                &["listener"],
            ),
            partition_stalls: counter_vec(
                r,
                "herald_partition_stalls_total",
                "Partitions the progress check found stalled and repaired, by consumer and cause: not_read (meant \
                 to be read, records waiting, nothing read for kafka.progress_check_interval: resumed), \
                 held_past_due (a retry held that long past its due time: released). Any is a bug.",
                &["consumer", "cause"],
            ),
            revoke_abandoned_events: counter(
                r,
                "herald_revoke_abandoned_events_total",
                "In-flight events left unfinished when their partition was revoked (redelivered by the next owner).",
            ),
            offset_commits: counter_vec(r, "herald_offset_commits_total", "Offset commits by result.", &["result"]),
            consumer_errors: counter(r, "herald_consumer_errors_total", "Errors reported by the Kafka consumer."),
            kafka_brokers: gauge_vec(
                r,
                "herald_kafka_brokers",
                "The cluster's brokers as each consumer's client sees them, by state: up (connected), \
                 unreachable (needed, and its connection is down or being set up again, or requests to it \
                 have waited 10 s with no answer: a broker frozen or overloaded).",
                &["consumer", "state"],
            ),
            consumer_lag: gauge_vec(
                r,
                "herald_consumer_lag_messages",
                "Records between the committed offset (the log start when the group never committed) and the \
                 end of each assigned partition, by consumer (source, or retry: waiting retries are lag there \
                 by design).",
                &["consumer", "topic", "partition"],
            ),
            in_flight_bytes: gauge_vec(
                r,
                "herald_in_flight_bytes",
                "Bytes of the events in flight (key, value and headers), by consumer; bounded by \
                 kafka.max_in_flight_bytes.",
                &["consumer"],
            ),
            oldest_unfinished: float_gauge_vec(
                r,
                "herald_oldest_unfinished_seconds",
                "Age of the oldest event in flight on each assigned partition (0 when none); for the retry \
                 consumer counted from when it came due. A stuck event holds its partition's commit.",
                &["consumer", "topic", "partition"],
            ),
            last_commit: float_gauge_vec(
                r,
                "herald_partition_last_commit_timestamp_seconds",
                "When an offset of each assigned partition was last committed (its assignment time when none \
                 was since): with lag, no commit for long means a partition that does not progress.",
                &["consumer", "topic", "partition"],
            ),
            webhooks: gauge_vec(r, "herald_webhooks", "Webhooks in the subscription index, by status.", &["status"]),
            subscription_syncs: counter_vec(
                r,
                "herald_subscription_syncs_total",
                "Subscription index updates from Redis (full reloads and announced changes).",
                &["kind"],
            ),
            subscription_errors: counter_vec(
                r,
                "herald_subscription_errors_total",
                "Errors talking to Redis for subscriptions, by stage.",
                &["stage"],
            ),
            subscription_reads: counter_vec(
                r,
                "herald_subscription_documents_read_total",
                "Webhook documents read from Redis, by what they were: unchanged (same bytes as indexed, not parsed again), changed, invalid, missing.",
                &["result"],
            ),
            webhooks_prepared: gauge(
                r,
                "herald_webhooks_prepared",
                "Webhooks held prepared for delivery (subscriptions.prepared_webhooks bounds it, except for webhooks being delivered to).",
            ),
            subscription_records_invalid: counter(
                r,
                "herald_subscription_records_invalid_total",
                "Webhook records skipped because they are malformed (the key is in the log line).",
            ),
            subscription_last_sync: gauge(
                r,
                "herald_subscription_last_sync_timestamp_seconds",
                "When the subscription index last completed a full reload from Redis.",
            ),
            redis_up: gauge(r, "herald_redis_up", "1 while the subscription change feed is connected to Redis."),
            build_info: gauge_vec(r, "herald_build_info", "Herald's version.", &["version"]),
            admin_requests: counter_vec(
                r,
                "herald_admin_requests_total",
                "Management API requests, by method, route template and status code.",
                &["method", "route", "status"],
            ),
            admin_request_duration,
            admin_changes: counter_vec(
                r,
                "herald_admin_changes_total",
                "Changes made through the management API to webhooks, tenants and tenant tokens, by action.",
                &["action"],
            ),
            history_records: counter_vec(
                r,
                "herald_history_records_total",
                "Delivery history records, by result: written (to Redis), superseded (by newer attempts \
                 of the same webhook, beyond history.max_per_webhook), dropped (queue full), \
                 write_failed (Redis error), topic_failed (not acknowledged on history.topic).",
                &["result"],
            ),
            system_event_errors: counter(
                r,
                "herald_system_event_errors_total",
                "System events (webhook.created, ...) given up: not acknowledged within \
                 system_events.retry_for, refused while system_events.max_pending waited, or still \
                 waiting at shutdown. Each is logged with its body.",
            ),
            system_event_retries: counter(
                r,
                "herald_system_event_retries_total",
                "Failed attempts to publish a system event that was then tried again.",
            ),
            system_events_pending: gauge(
                r,
                "herald_system_events_pending",
                "System events waiting to be published (retried ones included).",
            ),
            registry,
        };
        m.build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        #[cfg(target_os = "linux")]
        m.registry
            .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .expect("process collector registered once");
        for topic in topics {
            m.events_consumed.with_label_values(&[topic]);
            m.events_unmatched.with_label_values(&[topic]);
            m.deliveries_filtered.with_label_values(&[topic]);
            m.source_records_expired.with_label_values(&[topic]);
        }
        for step in ORDERING_STEPS {
            m.ordering_steps.with_label_values(&[step]);
        }
        for outcome in OUTCOMES {
            m.delivery_duration.with_label_values(&[outcome]);
        }
        for class in CLASSES {
            let outcome = if class == "2xx" { "succeeded" } else { "failed" };
            m.deliveries.with_label_values(&[outcome, class]);
        }
        for status in NOT_ATTEMPTED {
            m.deliveries_not_attempted.with_label_values(&[status]);
        }
        for to in ["lean", "stub", "dead_letter"] {
            m.failure_record_downgrades.with_label_values(&[to]);
        }
        for result in ["written", "superseded", "dropped", "write_failed", "topic_failed"] {
            m.history_records.with_label_values(&[result]);
        }
        for listener in ["admin", "ops"] {
            m.http_connections.with_label_values(&[listener]);
            m.http_connections_refused.with_label_values(&[listener]);
        }
        for consumer in ["source", "retry"] {
            m.records_repeated.with_label_values(&[consumer]);
            m.event_panics.with_label_values(&[consumer]);
            for cause in ["not_read", "held_past_due"] {
                m.partition_stalls.with_label_values(&[consumer, cause]);
            }
        }
        m.webhooks_disabled.with_label_values(&["gone"]);
        m.webhooks_disabled.with_label_values(&["auto"]);
        for result in ["ok", "error"] {
            m.offset_commits.with_label_values(&[result]);
        }
        for step in [
            "subscription_sync",
            "history_writer",
            "producer_flush",
            "consumer_close",
            "system_events",
        ] {
            m.shutdown_failures.with_label_values(&[step]);
        }
        for stage in ["connect", "subscribe", "load"] {
            m.subscription_errors.with_label_values(&[stage]);
        }
        for kind in ["full", "change"] {
            m.subscription_syncs.with_label_values(&[kind]);
        }
        for result in ["unchanged", "changed", "invalid", "missing"] {
            m.subscription_reads.with_label_values(&[result]);
        }
        m
    }

    /// Creates the series of the reasons a record is unroutable (each also
    /// a dead-letter reason) and of the webhook statuses, so dashboards and
    /// alerts see zeros, not gaps.
    pub fn preregister_routing(&self, unroutable: &[&str], statuses: &[&str]) {
        for reason in unroutable {
            self.events_unroutable.with_label_values(&[reason]);
            self.dead_letters.with_label_values(&[reason]);
        }
        for status in statuses {
            self.webhooks.with_label_values(&[status]);
        }
    }

    /// Creates the series of the management API's `actions`, so dashboards
    /// and alerts see zeros, not gaps.
    pub fn preregister_admin(&self, actions: &[&str]) {
        for action in actions {
            self.admin_changes.with_label_values(&[action]);
        }
    }

    /// Creates the per-tier series of `tiers` retry tiers, the per-topic
    /// series of the wait and dead-letter `topics`, and those of every
    /// dead-letter reason (`failure_reasons` and the unroutable ones), so
    /// dashboards and alerts see zeros, not gaps.
    pub fn preregister_retry(&self, tiers: usize, topics: &[String], failure_reasons: &[&str]) {
        let labels = (1..=tiers).map(|t| t.to_string()).chain(["redrive".to_owned()]);
        for tier in labels {
            if tier != "redrive" {
                self.retries_scheduled.with_label_values(&[&tier]);
            }
            self.retry_lateness.with_label_values(&[&tier]);
            for outcome in OUTCOMES {
                self.retry_attempts.with_label_values(&[&tier, outcome]);
            }
        }
        for topic in topics {
            self.retry_requeued.with_label_values(&[topic]);
            self.retry_records_expired.with_label_values(&[topic]);
        }
        for reason in failure_reasons {
            self.dead_letters.with_label_values(&[reason]);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let families = self.registry.gather();
        TextEncoder::new()
            .encode(&families, &mut buf)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }

    /// The registry, for collectors added elsewhere (e.g. process metrics).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}
