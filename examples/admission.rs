//! What sharing the delivery slots fairly costs per delivery: the replica's
//! slot taken and given back through one FIFO semaphore (how it was done
//! before tenants and hosts had shares), against the host's slot and the
//! tenant's share (what a delivery takes now besides its endpoint's slot),
//! in the same run. Two workers on a multi-thread runtime contend for the
//! slots, many tenants and hosts or one of each.
//!
//!   cargo run --release --example admission [-- DELIVERIES]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::delivery::shares::{host_key, tenant_key, HostSlots, TenantSlots};
use tokio::sync::Semaphore;

const WORKERS: usize = 64;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let per_worker = n / WORKERS;
    // Keys as each compiled webhook holds them.
    let urls: Vec<_> = (0..100)
        .map(|i| host_key(&url::Url::parse(&format!("https://host{i}.example/hook")).unwrap()))
        .collect();
    let tenants: Vec<_> = (0..100).map(|i| tenant_key(Some(&format!("tenant{i}")))).collect();

    let fifo = Arc::new(Semaphore::new(512));
    let baseline = run(per_worker, {
        let fifo = fifo.clone();
        move |_| {
            let fifo = fifo.clone();
            async move {
                let _slot = fifo.acquire().await.unwrap();
                tokio::task::yield_now().await;
            }
        }
    })
    .await;

    let mut lines = vec![format!("FIFO semaphore (before): {:.0} ns per delivery", baseline)];
    for (label, spread) in [("100 tenants, 100 hosts", 100), ("one tenant, one host", 1)] {
        let tenant_slots = TenantSlots::new(512, 256);
        let host_slots = HostSlots::new(128, HashMap::new());
        let (urls, tenants) = (urls.clone(), tenants.clone());
        let shared = run(per_worker, move |i| {
            let (tenant_slots, host_slots) = (tenant_slots.clone(), host_slots.clone());
            let url = urls[i % spread].clone();
            let tenant = tenants[i % spread].clone();
            async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
                let _host = host_slots.acquire_key(&url, deadline).await.unwrap();
                let _tenant = tenant_slots.acquire_key(&tenant, deadline).await.unwrap();
                tokio::task::yield_now().await;
            }
        })
        .await;
        lines.push(format!(
            "host slot + tenant share, {label}: {shared:.0} ns per delivery ({:.2}x the FIFO semaphore)",
            shared / baseline
        ));
    }
    for line in lines {
        println!("{line}");
    }
}

/// Runs `WORKERS` tasks making `per_worker` deliveries each; ns per delivery.
async fn run<F, Fut>(per_worker: usize, delivery: F) -> f64
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..WORKERS)
        .map(|w| {
            let delivery = delivery.clone();
            tokio::spawn(async move {
                for i in 0..per_worker {
                    delivery(w * per_worker + i).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    started.elapsed().as_nanos() as f64 / (WORKERS * per_worker) as f64
}
