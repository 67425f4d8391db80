//! What the subscription index costs per webhook, in process and without
//! Redis: reading a document into its packed form (against reading it as a
//! `Webhook` first), indexing it, and routing an event and preparing its
//! webhook, with 10 webhooks and with `--webhooks` (default 1,000,000), same document mix as `scripts/capacity`.
//!
//!     cargo run --release --example index_cost [-- --webhooks 1000000 --events 200000]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use herald::delivery::target::EndpointDefaults;
use herald::routing::filter::Payload;
use herald::subscriptions::index::Entry;
use herald::subscriptions::live::SubscriptionIndex;
use herald::subscriptions::packed::Packed;
use herald::subscriptions::store::{decode, decode_packed, Loaded};

fn document(i: usize) -> Vec<u8> {
    let tenant = format!("tenant-{:05}", i % 5000);
    let mut events = vec![format!("event.type.{:05}", i % 20000)];
    if i % 10 == 0 {
        events.push("tour.*".into());
    }
    let key: Vec<u8> = (0..32).map(|b| (i * 31 + b * 7) as u8).collect();
    let secret = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(key));
    serde_json::to_vec(&serde_json::json!({
        "id": format!("wh_{i:07}"), "tenant": tenant, "name": format!("webhook {i}"),
        "url": format!("https://hooks.{tenant}.example.com/webhooks/{i}"),
        "events": events, "status": "active", "secrets": [secret],
        "headers": {"x-api-key": format!("key-{i:07}-abcdef")},
        "created_at": "2025-02-21T08:15:03.123456Z", "updated_at": "2025-03-01T10:00:00Z",
    }))
    .unwrap()
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect("a number"))
}

fn per(d: Duration, n: usize) -> f64 {
    d.as_nanos() as f64 / n as f64
}

/// One of the `ROUTED` webhooks every index also holds, each the only
/// subscriber of its own event type (as in `scripts/capacity`).
fn routed(k: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": format!("routed_{k}"), "name": "routed", "url": format!("https://receiver.example.com/{k}"),
        "events": [format!("capacity.routed.{k}")], "status": "active",
        "secrets": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
        "created_at": "2025-02-21T08:15:03Z", "updated_at": "2025-02-21T08:15:03Z",
    }))
    .unwrap()
}

const ROUTED: usize = 10;

/// Loads `n` webhooks and the routed ones; prints the cost of each stage
/// per webhook.
fn load(n: usize, defaults: EndpointDefaults) -> Arc<SubscriptionIndex> {
    let docs: Vec<Vec<u8>> = (0..n).map(document).chain((0..ROUTED).map(routed)).collect();
    let ids: Vec<String> = (0..n)
        .map(|i| format!("wh_{i:07}"))
        .chain((0..ROUTED).map(|k| format!("routed_{k}")))
        .collect();
    let n = docs.len();
    // A document read as the API reads it (a `Webhook`, then packed), for
    // comparison with the path every replica's reads take.
    // Both keep what they read, as the index does.
    let started = Instant::now();
    let kept: Vec<Packed> = docs
        .iter()
        .zip(&ids)
        .map(|(doc, id)| match decode(id, String::new(), Some(doc)) {
            Loaded::Webhook(w) => Packed::pack(&w),
            other => panic!("{other:?}"),
        })
        .collect();
    let through_webhook = started.elapsed();
    drop(black_box(kept));
    let started = Instant::now();
    let entries: Vec<Entry> = docs
        .iter()
        .zip(&ids)
        .map(|(doc, id)| {
            let checked = decode_packed(id, doc).expect("a valid document");
            Entry {
                packed: checked.packed,
                digest: xxhash_rust::xxh3::xxh3_64(doc),
                status: checked.status,
                seen: 1,
                filter: checked.filter,
            }
        })
        .collect();
    let read = started.elapsed();
    let bytes: usize = entries.iter().map(|e| e.packed.len()).sum();
    let live = SubscriptionIndex::new(defaults, 10_000, None);
    let started = Instant::now();
    {
        let mut index = live.write();
        index.reserve(n);
        for entry in entries {
            index.upsert(entry).unwrap();
        }
    }
    let insert = started.elapsed();
    println!(
        "{n:>9} webhooks: read (parse, check, pack) {:>5.0} ns ({:>5.0} ns through a Webhook), {} bytes each; index {:>5.0} ns per webhook",
        per(read, n),
        per(through_webhook, n),
        bytes / n.max(1),
        per(insert, n)
    );
    live
}

/// Routes `events` events of the given types (tenant, type), round robin,
/// after one pass that prepares their webhooks; returns ns per event and
/// how many webhooks the last event reached.
fn route(live: &SubscriptionIndex, events: usize, types: &[(Option<String>, String)]) -> (f64, usize) {
    let mut reached = 0;
    // No webhook here has a payload filter: the body is never parsed.
    let body = Payload::new(b"{}", None);
    for (tenant, event) in types {
        reached = live.route(tenant.as_deref(), event, &body).targets.len();
    }
    let started = Instant::now();
    for i in 0..events {
        let (tenant, event) = &types[i % types.len()];
        black_box(live.route(tenant.as_deref(), event, &body));
    }
    (per(started.elapsed(), events), reached)
}

fn main() {
    let n = arg("--webhooks", 1_000_000);
    let events = arg("--events", 200_000);
    let defaults = EndpointDefaults {
        max_in_flight: 16,
        max_queue_wait: Duration::from_secs(10),
        request_timeout: Duration::from_secs(10),
        default_rate: None,
    };
    let small = load(10, defaults);
    let large = load(n, defaults);
    let routed: Vec<_> = (0..ROUTED).map(|k| (None, format!("capacity.routed.{k}"))).collect();
    let ((a, _), (b, _)) = (route(&small, events, &routed), route(&large, events, &routed));
    println!(
        "routing an event to its one webhook: {a:.0} ns with 10 webhooks, {b:.0} ns with {} ({:.2}x)",
        n + ROUTED,
        b / a
    );
    // Events of the large mix's own types, each reaching the webhooks of its
    // tenant and type: per webhook reached, against the routed case.
    let mix: Vec<_> = (0..2000)
        .map(|i| {
            (
                Some(format!("tenant-{:05}", i % 5000)),
                format!("event.type.{:05}", i % 20000),
            )
        })
        .collect();
    let (c, reached) = route(&large, events / 10, &mix[..100]);
    println!(
        "an event of the mix reaching {reached} webhooks: {c:.0} ns, {:.0} ns per webhook reached",
        c / reached as f64
    );
}
