//! Wiring: builds every part from the configuration and runs them until
//! shutdown.
//!
//! Start-up order matters for at-least-once: the subscription index must be
//! loaded before the first record is consumed (routing against an empty index
//! would finish events without delivering them), and the dead-letter topic
//! must exist before a failure needs it. Shutdown runs the other way: intake
//! stops and drains first, then the producer is flushed, then the side tasks
//! stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admin::{AdminParts, AdminState};
use crate::config::redis::RedisConfig;
use crate::config::system_events::SystemEnvelope;
use crate::config::Config;
use crate::delivery::target::EndpointDefaults;
use crate::delivery::Deliverer;
use crate::history::HistoryStore;
use crate::intake::consumer::{ConsumerSpec, Intake};
use crate::intake::flow::{Flow, FlowLimits};
use crate::intake::hold::Holding;
use crate::kafka::{SharedProducer, TopicSpec};
use crate::ops::{self, OpsState};
use crate::pipeline::{Pipeline, RetryDispatch, SourceDispatch};
use crate::retry::failures::{Failures, Journal};
use crate::retry::policy::Policy;
use crate::retry::sink::FailureSink;
use crate::routing::envelope::Envelopes;
use crate::subscriptions::lifecycle::Lifecycle;
use crate::subscriptions::live::SubscriptionIndex;
use crate::subscriptions::store::SubscriptionStore;
use crate::subscriptions::sync::SyncTask;
use crate::subscriptions::system::SystemEvents;
use crate::subscriptions::system::TenantStyle;
use crate::telemetry::Telemetry;

/// The parts the pipeline and the management API share, built once per
/// process: one Redis connection (webhook writes, the delivery history,
/// replay jobs), one Kafka producer (failure records, system events, the
/// history topic), one HTTP client with its request slots, one set of
/// envelope rules. The subscription sync task alone has connections of its
/// own, so its bulk reads never hold up a write or a page of the API.
pub struct Shared {
    redis: redis::Client,
    conn: redis::aio::ConnectionManager,
    store: SubscriptionStore,
    history: Option<HistoryStore>,
    producer: SharedProducer,
    envelopes: Envelopes,
    deliverer: Arc<Deliverer>,
    failures: FailureSink,
    events: SystemEvents,
    telemetry: Telemetry,
}

impl Shared {
    /// Builds the parts without waiting for Kafka or Redis: the producer
    /// and the Redis connection connect in the background, and commands
    /// sent before they have fail as they would during an outage. Starts
    /// the task publishing system events (on the current runtime).
    pub fn build(config: &Config, telemetry: Telemetry) -> anyhow::Result<Shared> {
        let redis = config.redis.client().context("invalid redis.url")?;
        let conn = RedisConfig::lazy_connection(&redis).context("cannot set up the Redis connection")?;
        let prefix = &config.redis.prefix;
        let history = config.history.enabled.then(|| {
            HistoryStore::over(
                conn.clone(),
                prefix,
                config.history.max_per_webhook,
                config.history.max_age,
            )
            .keeping_deliveries(config.history.max_deliveries_per_webhook)
        });
        let producer = SharedProducer::new(&config.kafka).context("cannot create the Kafka producer")?;
        let mut deliverer = Deliverer::new(&config.delivery)
            .map_err(|e| anyhow::anyhow!("cannot build the HTTP client: {e}"))?
            .with_rate_leases(crate::delivery::rate::Leases::new(
                conn.clone(),
                prefix,
                config.delivery.rate_recovery,
                telemetry.clone(),
            ));
        if config.history.enabled {
            deliverer = deliverer.keeping_response_headers();
        }
        Ok(Shared {
            store: SubscriptionStore::over(&redis, conn.clone(), prefix),
            history,
            envelopes: Envelopes::new(&config.envelope).context("invalid envelope rules")?,
            deliverer: Arc::new(deliverer),
            failures: FailureSink::new(
                producer.clone(),
                &config.dead_letter,
                crate::retry::sink::Topics::of(config),
                telemetry.clone(),
            ),
            events: SystemEvents::start(
                producer.clone(),
                &config.system_events,
                Some(tenant_style(config, conn.clone())),
                telemetry.clone(),
            ),
            producer,
            redis,
            conn,
            telemetry,
        })
    }

    /// What the management API is built from.
    pub fn admin_parts(&self, config: &Config) -> AdminParts {
        AdminParts {
            store: self.store.clone(),
            history: self.history.clone(),
            producer: self.producer.clone(),
            redis: self.conn.clone(),
            telemetry: self.telemetry.clone(),
            deliverer: self.deliverer.clone(),
            envelopes: self.envelopes.clone(),
            failures: self.failures.clone(),
            events: self.events.clone(),
            catalogs: config.admin.catalogs.clone(),
        }
    }
}

/// The envelope of a tenant's catalog, as the management API resolves it:
/// `admin.tenants`, else the tenant registry in Redis, else
/// `admin.default_catalog`.
fn tenant_style(config: &Config, conn: redis::aio::ConnectionManager) -> TenantStyle {
    let registry = crate::admin::tenants::registry::Registry::new(conn, &config.redis.prefix);
    let admin = Arc::new(config.admin.clone());
    Arc::new(move |tenant: String| {
        let (registry, admin) = (registry.clone(), admin.clone());
        Box::pin(async move {
            let name = match admin.tenants.get(&tenant) {
                Some(configured) => configured.catalog.clone(),
                None => match registry.get(&tenant).await.map_err(|e| e.to_string())? {
                    Some(stored) => stored.settings.catalog.unwrap_or_else(|| admin.default_catalog.clone()),
                    None => admin.default_catalog.clone(),
                },
            };
            Ok(admin
                .catalogs
                .get(&name)
                .and_then(|c| SystemEnvelope::of_catalog(&c.envelope)))
        })
    })
}

/// A built, not yet running, Herald.
pub struct Application {
    config: Config,
    listener: TcpListener,
    admin_listener: Option<TcpListener>,
    index: Arc<SubscriptionIndex>,
    flow: Arc<Flow>,
    retry_flow: Arc<Flow>,
    shared: Shared,
}

impl Application {
    /// Checks the configuration against the world (listeners, clients) and
    /// builds the parts, without yet waiting for Kafka or Redis.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let listener = TcpListener::bind(config.ops.listen)
            .await
            .with_context(|| format!("cannot listen on ops.listen = {}", config.ops.listen))?;
        let admin_listener = if config.admin.enabled() {
            Some(
                TcpListener::bind(config.admin.listen)
                    .await
                    .with_context(|| format!("cannot listen on admin.listen = {}", config.admin.listen))?,
            )
        } else {
            tracing::info!("management API off: admin.tokens is empty");
            None
        };
        let mut listeners = vec![crate::serve::Limits::of_ops(&config.ops)];
        if admin_listener.is_some() {
            listeners.push(crate::serve::Limits::of_admin(&config.admin));
        }
        crate::serve::reserve_descriptors(&listeners, config.delivery.max_in_flight);
        let telemetry = Telemetry::new(&config.kafka.topics, config.ops.max_tenant_series);
        let mut retry_topics = config.retry.wait_topics().names();
        retry_topics.push(config.dead_letter.topic.clone());
        telemetry.metrics.preregister_retry(
            config.retry.tiers.len(),
            &retry_topics,
            &crate::retry::reason::Reason::ALL
                .iter()
                .filter(|r| r.of_delivery())
                .map(|r| r.as_str())
                .collect::<Vec<_>>(),
        );
        telemetry.metrics.preregister_admin(&crate::admin::ACTIONS);
        let unroutable: Vec<&str> = <crate::routing::envelope::UnroutableReason as strum::IntoEnumIterator>::iter()
            .map(|r| r.as_str())
            .collect();
        let statuses = crate::webhook::WebhookStatus::ALL.map(|s| s.as_str());
        telemetry.metrics.preregister_routing(&unroutable, &statuses);
        let shared = Shared::build(&config, telemetry.clone())?;
        if let Some(system) = config.system_events.topic() {
            if config.kafka.topics.iter().any(|t| t == system) && !shared.envelopes.for_topic(system).finds_tenant() {
                tracing::warn!(
                    topic = system,
                    "system events are consumed without a tenant rule: tenants' webhooks receive none of them \
                     and webhooks of no tenant receive every tenant's (docs/envelopes.md#system-events)"
                );
            }
        }
        // Each consumer has its own limits, so a burst of retries never
        // takes the source's slots, nor the source the retries'.
        let limits = FlowLimits::of(&config.kafka);
        Ok(Application {
            index: SubscriptionIndex::new(
                EndpointDefaults::from(&config.delivery),
                config.subscriptions.prepared_webhooks,
                Some(telemetry),
            ),
            flow: Flow::new(limits),
            retry_flow: Flow::new(limits),
            listener,
            admin_listener,
            shared,
            config,
        })
    }

    /// The address `/metrics`, `/healthz` and `/readyz` are served on.
    pub fn ops_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// The address the management API is served on, when it is on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Runs until `shutdown` is cancelled, then drains and stops.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Application {
            config,
            listener,
            admin_listener,
            index,
            flow,
            retry_flow,
            shared,
        } = self;
        let telemetry = shared.telemetry.clone();
        let side_tasks = CancellationToken::new();

        let admin = match admin_listener {
            Some(listener) => {
                let state = AdminState::new(Arc::new(config.clone()), shared.admin_parts(&config));
                tracing::info!(admin = %listener.local_addr()?, portal = config.portal.enabled(), "management API listening");
                let portal = crate::portal::router(state.clone());
                Some(tokio::spawn(crate::admin::serve(
                    listener,
                    state,
                    portal,
                    side_tasks.clone(),
                )))
            }
            None => None,
        };

        let ops = tokio::spawn(ops::serve(
            listener,
            OpsState {
                metrics: telemetry.metrics.clone(),
                index: index.clone(),
                flow: flow.clone(),
                consumers: vec![("source", flow.clone()), ("retry", retry_flow.clone())],
                stall_after: config.ops.stall_after,
            },
            crate::serve::Limits::of_ops(&config.ops),
            side_tasks.clone(),
        ));
        let sync = tokio::spawn(
            SyncTask {
                client: shared.redis.clone(),
                prefix: config.redis.prefix.clone(),
                config: config.subscriptions.clone(),
                index: index.clone(),
                telemetry: telemetry.clone(),
            }
            .run(side_tasks.clone()),
        );

        let flows = (flow, retry_flow);
        let events = shared.events.clone();
        let result = Self::run_pipeline(&config, shared, index, flows, &shutdown).await;

        side_tasks.cancel();
        if let Err(e) = sync.await {
            telemetry.shutdown_failed("subscription_sync", &e);
        }
        if let Some(admin) = admin {
            match admin.await {
                Ok(Err(e)) => tracing::warn!(error = %e, "management API stopped with an error"),
                Err(e) => tracing::warn!(error = %e, "management API task failed"),
                Ok(Ok(())) => {}
            }
        }
        // Nothing announces anything more: publish what is still queued.
        events.close().await;
        match ops.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "ops listener stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "ops listener task failed"),
            Ok(Ok(())) => {}
        }
        result
    }

    async fn run_pipeline(
        config: &Config,
        shared: Shared,
        index: Arc<SubscriptionIndex>,
        (flow, retry_flow): (Arc<Flow>, Arc<Flow>),
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let Shared {
            store,
            history,
            producer,
            envelopes,
            deliverer,
            failures,
            events,
            telemetry,
            conn,
            ..
        } = shared;
        // The consumers join their groups while the index loads (the two
        // are the bulk of a start): records routed before it has loaded wait
        // for it in the pipeline, and /readyz waits for both. What follows
        // connects to Redis too: it waits until Redis has been reached, as a
        // replica started before Redis should.
        tokio::select! {
            _ = index.wait_reached() => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
        let waits = config.retry.wait_topics();
        for unverified in crate::kafka::ensure_topics(
            &config.kafka,
            &written_topics(config),
            config.kafka.create_missing_topics,
        )
        .await
        .context("dead-letter or retry topics unavailable")?
        {
            tracing::warn!(topic = %unverified.topic, why = %unverified.why, "cannot verify that this topic keeps records long enough; check its retention.ms (docs/dead-letter.md)");
        }
        let lifecycle = Lifecycle {
            store,
            events,
            auto_disable: crate::subscriptions::lifecycle::AutoDisable {
                after: config.auto_disable.after,
                consecutive_failures: config.auto_disable.consecutive_failures,
            },
            telemetry: telemetry.clone(),
        };
        let (history, history_writer) = match history {
            Some(store) => {
                let (recorder, writer) = crate::history::Recorder::new(
                    &config.history,
                    store,
                    config.history.topic().map(|_| producer.clone()),
                    telemetry.clone(),
                );
                let stop = CancellationToken::new();
                (Some(recorder), Some((tokio::spawn(writer.run(stop.clone())), stop)))
            }
            None => (None, None),
        };
        let abort = CancellationToken::new();
        let lifecycle = Arc::new(lifecycle);
        // A key's queue lives as long as a record of it can wait.
        let longest_wait = waits.all().iter().map(|t| t.retention).max().unwrap_or_default();
        let ordering = Arc::new(
            crate::retry::ordering::Ordered::new(
                conn,
                &config.redis.prefix,
                longest_wait,
                config.retry.ordering_recheck,
                telemetry.clone(),
                abort.clone(),
            )
            .with_commits(flow.clone()),
        );
        let failures = Failures {
            sink: failures,
            policy: Policy {
                schedule: crate::retry::schedule::Schedule::of(&config.retry),
                final_statuses: config.retry.final_statuses.clone(),
            },
            waits: waits.clone(),
            lifecycle: Some(lifecycle.clone()),
            journal: history.clone().map(|h| h as Arc<dyn Journal>),
            ordering: Some(ordering),
            telemetry: telemetry.clone(),
            abort: abort.clone(),
        };
        let pipeline = Arc::new(Pipeline {
            history,
            lifecycle: Some(lifecycle),
            envelopes,
            index,
            deliverer,
            failures,
            waits: waits.clone(),
            telemetry: telemetry.clone(),
            abort: abort.clone(),
        });
        let source = ConsumerSpec {
            name: "source",
            group_id: config.kafka.group_id.clone(),
            topics: config.kafka.topics.clone(),
            hold: None,
        };
        let intake =
            Intake::new(&config.kafka, source, flow, telemetry.clone()).context("cannot create the Kafka consumer")?;
        tracing::info!(topics = ?config.kafka.topics, group = %config.kafka.group_id, "consuming");
        let drain = config.shutdown.drain_timeout;
        let source_run = intake.run(Arc::new(SourceDispatch(pipeline.clone())), shutdown.clone(), drain);

        // The tiers and the redrive topic: one group, records held until due.
        let spec = ConsumerSpec {
            name: "retry",
            group_id: config.retry.group_id(&config.kafka),
            topics: waits.names(),
            hold: Some(Holding {
                policy: Arc::new(waits.clone()),
                max_out_of_order: config.retry.max_out_of_order,
                max_out_of_order_bytes: config.retry.max_out_of_order_bytes,
            }),
        };
        let retry_intake = Intake::new(&config.kafka, spec, retry_flow, telemetry.clone())
            .context("cannot create the retry consumer")?;
        tracing::info!(topics = ?waits.names(), "consuming retry tiers and the redrive topic");
        let retry_run = retry_intake.run(Arc::new(RetryDispatch(pipeline)), shutdown.clone(), drain);
        // The consumer loops run as runtime tasks, so the event tasks they
        // spawn start on a worker's own queue rather than waking one from
        // outside the runtime for every record.
        // A loop that panics takes the other down with it (a graceful drain)
        // and makes the process fail, rather than leaving half a consumer.
        let mut runs = tokio::task::JoinSet::new();
        runs.spawn(source_run);
        runs.spawn(retry_run);
        let mut failure = None;
        while let Some(ended) = runs.join_next().await {
            if let Err(e) = ended {
                shutdown.cancel();
                failure.get_or_insert(e);
            }
        }
        abort.cancel();
        // Intake has drained: write the history queued so far, then flush.
        if let Some((writer, stop)) = history_writer {
            stop.cancel();
            if let Err(e) = writer.await {
                telemetry.shutdown_failed("history_writer", &e);
            }
        }
        // Only records nothing waits for (system events, history) can still
        // be queued: every delivery's own records were acknowledged.
        match tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(5))).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => telemetry.shutdown_failed("producer_flush", &e),
            Err(e) => telemetry.shutdown_failed("producer_flush", &e),
        }
        if let Some(e) = failure {
            return Err(anyhow::anyhow!("a consumer loop failed: {e}"));
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Serves only the management API (`herald api`) until `shutdown` is
/// cancelled: its own parts, nothing consumed, and its metrics on
/// `ops.listen`.
pub async fn run_api(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    if !config.admin.enabled() {
        anyhow::bail!("the management API needs at least one token in admin.tokens");
    }
    let listener = TcpListener::bind(config.admin.listen)
        .await
        .with_context(|| format!("cannot listen on admin.listen = {}", config.admin.listen))?;
    let ops = TcpListener::bind(config.ops.listen)
        .await
        .with_context(|| format!("cannot listen on ops.listen = {}", config.ops.listen))?;
    serve_api(config, listener, ops, shutdown).await
}

/// [`run_api`] on listeners already bound (`admin`, `ops`).
pub async fn serve_api(
    config: Config,
    admin: TcpListener,
    ops: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let telemetry = Telemetry::new(&config.kafka.topics, config.ops.max_tenant_series);
    telemetry.metrics.preregister_admin(&crate::admin::ACTIONS);
    let shared = Shared::build(&config, telemetry.clone())?;
    // An API of its own has nothing to wait for: a Redis it cannot reach at
    // start (a wrong URL or password) fails the deployment, where an
    // operator sees it, rather than every request.
    redis::cmd("PING")
        .query_async::<()>(&mut shared.conn.clone())
        .await
        .with_context(|| format!("cannot connect to Redis at {}", config.redis.redacted_url()))?;
    let state = AdminState::new(Arc::new(config.clone()), shared.admin_parts(&config));
    tracing::info!(admin = %admin.local_addr()?, ops = %ops.local_addr()?, "management API listening");
    let metrics = tokio::spawn(ops::serve_router(
        ops,
        ops::api_router(telemetry.metrics.clone()),
        crate::serve::Limits::of_ops(&config.ops),
        telemetry.metrics.clone(),
        shutdown.clone(),
    ));
    let portal = crate::portal::router(state.clone());
    let served = crate::admin::serve(admin, state, portal, shutdown).await;
    shared.events.close().await;
    match metrics.await {
        Ok(Err(e)) => tracing::warn!(error = %e, "ops listener stopped with an error"),
        Err(e) => tracing::warn!(error = %e, "ops listener task failed"),
        Ok(Ok(())) => {}
    }
    Ok(served?)
}

/// Every topic Herald writes, with the retention each needs: the dead-letter
/// topic keeps `dead_letter.retention`; a wait topic, at least the longest a
/// record may wait there (created with twice that, or its configured
/// retention).
pub fn written_topics(config: &Config) -> Vec<TopicSpec> {
    let mut topics = vec![TopicSpec {
        name: config.dead_letter.topic.clone(),
        create_retention: Some(config.dead_letter.retention),
        min_retention: Some(config.dead_letter.retention),
    }];
    for wait in config.retry.wait_topics().all() {
        topics.push(TopicSpec {
            name: wait.topic.clone(),
            create_retention: Some(wait.retention),
            min_retention: Some(wait.longest + crate::config::waits::RANGE_SLACK),
        });
    }
    topics.extend(config.system_events.topic().map(TopicSpec::plain));
    topics.extend(config.history.topic().map(TopicSpec::plain));
    topics
}

/// What `herald check-config --broker` found about the topics Herald writes.
#[derive(Debug, Default)]
pub struct TopicCheck {
    /// Missing, and created at start (`kafka.create_missing_topics`).
    pub to_create: Vec<String>,
    /// What the broker did not say (retention unknown).
    pub unverified: Vec<crate::kafka::Unverified>,
}

/// Checks the topics Herald writes against the cluster, as `herald run`
/// does at start (without creating anything): they exist (or will be
/// created), and keep records at least as long as one may wait there.
pub async fn check_topics(config: &Config) -> Result<TopicCheck, crate::kafka::TopicError> {
    let topics = written_topics(config);
    let names: Vec<&str> = topics.iter().map(|t| t.name.as_str()).collect();
    let missing = crate::kafka::missing_topics(&config.kafka, &names).await?;
    if !missing.is_empty() && !config.kafka.create_missing_topics {
        return Err(crate::kafka::TopicError::Missing(missing.join(", ")));
    }
    let existing: Vec<TopicSpec> = topics.into_iter().filter(|t| !missing.contains(&t.name)).collect();
    let unverified = crate::kafka::verify_retention(&config.kafka, &existing).await?;
    Ok(TopicCheck {
        to_create: missing,
        unverified,
    })
}

/// A token cancelled on SIGTERM or SIGINT.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await
                }
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => tracing::info!("SIGINT received"),
            _ = term => tracing::info!("SIGTERM received"),
        }
        trigger.cancel();
    });
    token
}
