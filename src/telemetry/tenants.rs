//! Delivery series by tenant, with a bounded number of tenants.
//!
//! `herald_deliveries_total` and its kin say how deliveries go, not whose:
//! the `tenant_` families repeat them with a `tenant` label (the tenant of
//! the webhook delivered to), so an SRE sees which tenant's endpoints fail.
//! They are families of their own, so the existing series and every query
//! on them stay as they were, and summed over `tenant` they equal them.
//!
//! A label per tenant is unbounded, so only the first `max` tenants a
//! replica delivers for get series of their own, in the order their first
//! delivery finished on this replica since it started, and keep them until
//! it stops: a series never moves to another bucket, so counters never
//! reset under a running replica. Every other tenant is counted under
//! [`OTHER_TENANTS`], webhooks without a tenant under [`NO_TENANT`]; neither
//! counts towards `max`. Both are written with parentheses, which no tenant
//! made through the management API can contain; a tenant named like either
//! anyway is counted under [`OTHER_TENANTS`], so that `(none)` only ever
//! holds webhooks without a tenant.
//!
//! The hot path resolves a tenant's series once per prepared webhook
//! ([`TenantSeriesCache`]): a delivery then only increments atomics, with no
//! lock, lookup nor allocation.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};

use super::metrics::{CLASSES, NOT_ATTEMPTED, OUTCOMES};

/// The `tenant` label of deliveries to webhooks without a tenant.
pub const NO_TENANT: &str = "(none)";
/// The `tenant` label of the tenants beyond `ops.max_tenant_series`.
pub const OTHER_TENANTS: &str = "(other)";

/// The per-tenant families and which tenants have series of their own.
pub struct TenantSeries {
    deliveries: IntCounterVec,
    duration: HistogramVec,
    not_attempted: IntCounterVec,
    max: usize,
    /// The tenants with series of their own; never more than `max`.
    named: RwLock<HashMap<Box<str>, Arc<TenantMetrics>>>,
    none: Arc<TenantMetrics>,
    other: Arc<TenantMetrics>,
}

/// One `tenant` label's series, resolved: counting a delivery touches only
/// these handles.
pub struct TenantMetrics {
    label: Box<str>,
    /// By class, with the outcome each class has (`2xx` succeeded, the rest failed).
    deliveries: [IntCounter; CLASSES.len()],
    /// By outcome, in the order of [`OUTCOMES`].
    duration: [Histogram; OUTCOMES.len()],
    /// By status, in the order of [`NOT_ATTEMPTED`].
    not_attempted: [IntCounter; NOT_ATTEMPTED.len()],
    /// For an outcome and class that go together otherwise (never, today).
    families: (IntCounterVec, IntCounterVec),
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric registered once");
    metric
}

/// The outcome a class of attempts has.
fn outcome_of(class: &str) -> &'static str {
    if class == "2xx" {
        OUTCOMES[0]
    } else {
        OUTCOMES[1]
    }
}

impl TenantSeries {
    /// Registers the families in `registry`, with the series of
    /// [`NO_TENANT`] and [`OTHER_TENANTS`] made at once, so that dashboards
    /// and alerts see zeros, not gaps; `buckets` are the latency
    /// histogram's, as `herald_delivery_duration_seconds` has them.
    pub fn new(registry: &Registry, max: usize, buckets: Vec<f64>) -> TenantSeries {
        let deliveries = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "herald_tenant_deliveries_total",
                    "herald_deliveries_total by the tenant of the webhook delivered to: (none) for webhooks \
                     without a tenant, (other) for tenants beyond ops.max_tenant_series.",
                ),
                &["tenant", "outcome", "class"],
            )
            .expect("valid metric definition"),
        );
        let duration = register(
            registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "herald_tenant_delivery_duration_seconds",
                    "herald_delivery_duration_seconds by the tenant of the webhook delivered to.",
                )
                .buckets(buckets),
                &["tenant", "outcome"],
            )
            .expect("valid metric definition"),
        );
        let not_attempted = register(
            registry,
            IntCounterVec::new(
                Opts::new(
                    "herald_tenant_deliveries_not_attempted_total",
                    "herald_deliveries_not_attempted_total by the tenant of the webhook.",
                ),
                &["tenant", "status"],
            )
            .expect("valid metric definition"),
        );
        let label = |name: &str| Arc::new(TenantMetrics::new(name, &deliveries, &duration, &not_attempted));
        TenantSeries {
            none: label(NO_TENANT),
            other: label(OTHER_TENANTS),
            deliveries,
            duration,
            not_attempted,
            max,
            named: RwLock::default(),
        }
    }

    /// The series of `tenant` (the webhook's; `None`: it has none): its
    /// own while fewer than `max` tenants have theirs or it has them
    /// already, else the shared ones of [`OTHER_TENANTS`].
    pub fn of(&self, tenant: Option<&str>) -> Arc<TenantMetrics> {
        let Some(tenant) = tenant else {
            return self.none.clone();
        };
        if tenant == NO_TENANT || tenant == OTHER_TENANTS {
            return self.other.clone();
        }
        {
            let named = self.named.read();
            if let Some(found) = named.get(tenant) {
                return found.clone();
            }
            if named.len() >= self.max {
                return self.other.clone();
            }
        }
        let mut named = self.named.write();
        if let Some(found) = named.get(tenant) {
            return found.clone();
        }
        if named.len() >= self.max {
            return self.other.clone();
        }
        let own = Arc::new(TenantMetrics::new(
            tenant,
            &self.deliveries,
            &self.duration,
            &self.not_attempted,
        ));
        named.insert(tenant.into(), own.clone());
        own
    }

    /// How many tenants have series of their own.
    pub fn named(&self) -> usize {
        self.named.read().len()
    }
}

impl TenantMetrics {
    /// Makes (and so exports, at zero) the series of `label` that occur:
    /// each class with its outcome, both latency histograms, every status
    /// of a delivery not attempted.
    fn new(label: &str, deliveries: &IntCounterVec, duration: &HistogramVec, not_attempted: &IntCounterVec) -> Self {
        TenantMetrics {
            label: label.into(),
            deliveries: CLASSES.map(|class| deliveries.with_label_values(&[label, outcome_of(class), class])),
            duration: OUTCOMES.map(|outcome| duration.with_label_values(&[label, outcome])),
            not_attempted: NOT_ATTEMPTED.map(|status| not_attempted.with_label_values(&[label, status])),
            families: (deliveries.clone(), not_attempted.clone()),
        }
    }

    /// The `tenant` label these series carry.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// An attempt ended with `outcome` (one of [`OUTCOMES`]) and `class`, after `seconds`.
    pub fn attempted(&self, outcome: &'static str, class: &'static str, seconds: f64) {
        match CLASSES.iter().position(|c| *c == class) {
            Some(i) if outcome_of(class) == outcome => self.deliveries[i].inc(),
            _ => self.families.0.with_label_values(&[&self.label, outcome, class]).inc(),
        }
        let i = usize::from(outcome != OUTCOMES[0]);
        self.duration[i].observe(seconds);
    }

    /// A delivery was not attempted, its webhook being `status`.
    pub fn not_attempted(&self, status: &str) {
        match NOT_ATTEMPTED.iter().position(|s| *s == status) {
            Some(i) => self.not_attempted[i].inc(),
            None => self.families.1.with_label_values(&[&self.label, status]).inc(),
        }
    }
}

/// Where a prepared webhook keeps its tenant's series once resolved, so
/// that its deliveries find them without a lookup.
#[derive(Default)]
pub struct TenantSeriesCache(OnceLock<Arc<TenantMetrics>>);

impl TenantSeriesCache {
    /// The series of `tenant`, resolved in `series` on the first call.
    pub fn get(&self, series: &TenantSeries, tenant: Option<&str>) -> &TenantMetrics {
        self.0.get_or_init(|| series.of(tenant))
    }
}

impl std::fmt::Debug for TenantSeriesCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TenantSeriesCache")
            .field(&self.0.get().map(|m| m.label()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(max: usize) -> (Registry, TenantSeries) {
        let registry = Registry::new();
        let series = TenantSeries::new(&registry, max, vec![0.1, 1.0]);
        (registry, series)
    }

    /// `family`'s counts (a counter's value, a histogram's sample count)
    /// summed by their `tenant` label.
    fn by_tenant(registry: &Registry, family: &str) -> HashMap<String, u64> {
        let mut counts = HashMap::new();
        for f in registry.gather().iter().filter(|f| f.name() == family) {
            for m in f.get_metric() {
                let tenant = m.get_label().iter().find(|l| l.name() == "tenant").unwrap();
                let count = match f.get_field_type() {
                    prometheus::proto::MetricType::HISTOGRAM => m.get_histogram().get_sample_count(),
                    _ => m.get_counter().get_value() as u64,
                };
                *counts.entry(tenant.value().to_owned()).or_default() += count;
            }
        }
        counts
    }

    #[test]
    fn the_first_tenants_up_to_the_cap_get_series_and_the_rest_share_other() {
        let (registry, series) = series(2);
        for tenant in ["acme", "globex", "initech", "acme", "umbrella", "globex"] {
            series.of(Some(tenant)).attempted("failed", "5xx", 0.5);
        }
        series.of(None).attempted("succeeded", "2xx", 0.01);
        assert_eq!(series.named(), 2);
        let counts = by_tenant(&registry, "herald_tenant_deliveries_total");
        let expected = [("acme", 2), ("globex", 2), (OTHER_TENANTS, 2), (NO_TENANT, 1)];
        assert_eq!(
            counts,
            expected.map(|(t, n)| (t.to_owned(), n)).into(),
            "initech and umbrella in other"
        );
        let latencies = by_tenant(&registry, "herald_tenant_delivery_duration_seconds");
        assert_eq!(latencies, counts);

        // A tenant once in `(other)` stays there; a named one keeps its series.
        assert_eq!(series.of(Some("initech")).label(), OTHER_TENANTS);
        assert!(Arc::ptr_eq(&series.of(Some("acme")), &series.of(Some("acme"))));
        assert_eq!(series.named(), 2);
    }

    #[test]
    fn none_and_other_exist_from_the_start_and_take_no_place_under_the_cap() {
        let (registry, series) = series(0);
        let counts = by_tenant(&registry, "herald_tenant_deliveries_total");
        let expected = [(OTHER_TENANTS, 0), (NO_TENANT, 0)];
        assert_eq!(counts, expected.map(|(t, n)| (t.to_owned(), n)).into());
        assert_eq!(
            series.of(Some("acme")).label(),
            OTHER_TENANTS,
            "0: every tenant in other"
        );
        assert_eq!(series.of(None).label(), NO_TENANT);
        assert_eq!(series.named(), 0);
    }

    #[test]
    fn a_tenant_named_like_a_bucket_is_counted_under_other() {
        let (_, series) = series(10);
        assert_eq!(series.of(Some(NO_TENANT)).label(), OTHER_TENANTS);
        assert_eq!(series.of(Some(OTHER_TENANTS)).label(), OTHER_TENANTS);
        assert_eq!(series.named(), 0);
    }

    #[test]
    fn a_cache_resolves_its_tenant_once() {
        let (registry, series) = series(1);
        let (acme, globex) = (TenantSeriesCache::default(), TenantSeriesCache::default());
        acme.get(&series, Some("acme")).attempted("succeeded", "2xx", 0.1);
        globex.get(&series, Some("globex")).attempted("failed", "timeout", 0.1);
        acme.get(&series, Some("acme")).attempted("succeeded", "2xx", 0.1);
        assert_eq!(acme.get(&series, Some("acme")).label(), "acme");
        assert_eq!(globex.get(&series, Some("globex")).label(), OTHER_TENANTS);
        let counts = by_tenant(&registry, "herald_tenant_deliveries_total");
        assert_eq!((counts["acme"], counts[OTHER_TENANTS]), (2, 1));
    }

    #[test]
    fn each_tenant_exports_the_series_that_occur_at_zero() {
        let (registry, series) = series(5);
        series.of(Some("acme"));
        let mut buf = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &registry.gather(), &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        for line in [
            r#"herald_tenant_deliveries_total{class="2xx",outcome="succeeded",tenant="acme"} 0"#,
            r#"herald_tenant_deliveries_total{class="5xx",outcome="failed",tenant="acme"} 0"#,
            r#"herald_tenant_delivery_duration_seconds_count{outcome="failed",tenant="acme"} 0"#,
            r#"herald_tenant_deliveries_not_attempted_total{status="disabled",tenant="acme"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(
            !text.contains(r#"class="2xx",outcome="failed""#),
            "no series that never occurs"
        );
    }

    #[test]
    fn an_outcome_or_status_not_made_in_advance_is_still_counted() {
        let (registry, series) = series(5);
        let acme = series.of(Some("acme"));
        acme.attempted("failed", "2xx", 0.1);
        acme.not_attempted("elsewhere");
        acme.not_attempted("paused");
        assert_eq!(by_tenant(&registry, "herald_tenant_deliveries_total")["acme"], 1);
        assert_eq!(
            by_tenant(&registry, "herald_tenant_deliveries_not_attempted_total")["acme"],
            2
        );
    }
}
