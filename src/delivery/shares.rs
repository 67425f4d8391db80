//! Sharing the delivery slots fairly between tenants and destination hosts.
//!
//! Every request holds, besides its endpoint's slot, one slot of its
//! destination host (`delivery.max_in_flight_per_host`) and one of the
//! replica's `delivery.max_in_flight`. The overall slots are shared between
//! tenants, not handed out first come first served:
//!
//! - a tenant holds at most `delivery.max_in_flight_per_tenant` of them, so
//!   slots are always left for the others;
//! - when slots are short, a freed slot goes to the waiting tenant that holds
//!   the fewest (max-min fairness), so a tenant with one delivery waiting is
//!   served before another tenant's thousandth, however long that queue is.
//!
//! Webhooks without a tenant (an operator's own) share one bucket.
//!
//! A request never holds one of the shared slots while it waits for the
//! other ([`acquire_shared`]).
//!
//! A hand-written scheduler: tokio's semaphore is strictly FIFO and has no
//! notion of who waits, which is exactly the unfairness this removes. The
//! state is one small map under a mutex held for a few operations per
//! request; a host's slots are plain semaphores, removed when unused so the
//! map holds only the hosts with requests in flight.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// The limit that had no free slot before the delivery's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The webhook's own (`delivery.max_in_flight_per_endpoint` or its `limits.max_in_flight`).
    Endpoint,
    /// The destination host's (`delivery.max_in_flight_per_host`).
    Host,
    /// The tenant's share (`delivery.max_in_flight_per_tenant`).
    Tenant,
    /// The replica's (`delivery.max_in_flight`).
    Overall,
}

impl Limit {
    /// The configuration key an operator would raise.
    pub fn key(self) -> &'static str {
        match self {
            Limit::Endpoint => "delivery.max_in_flight_per_endpoint",
            Limit::Host => "delivery.max_in_flight_per_host",
            Limit::Tenant => "delivery.max_in_flight_per_tenant",
            Limit::Overall => "delivery.max_in_flight",
        }
    }

    /// What had no free slot, for people.
    pub fn describe(self) -> &'static str {
        match self {
            Limit::Endpoint => "this endpoint",
            Limit::Host => "this destination host",
            Limit::Tenant => "this tenant",
            Limit::Overall => "this replica",
        }
    }
}

/// The replica's request slots, shared fairly between tenants.
#[derive(Debug)]
pub struct TenantSlots {
    total: usize,
    per_tenant: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    available: usize,
    tenants: HashMap<Arc<str>, Tenant>,
    /// Tenants that have waiters and room under their cap, by the slots they
    /// hold, then by their oldest waiter: the first is served next.
    ready: BTreeSet<(usize, u64, Arc<str>)>,
    next_waiter: u64,
}

#[derive(Debug, Default)]
struct Tenant {
    in_flight: usize,
    waiters: VecDeque<(u64, oneshot::Sender<()>)>,
    /// Its key in `ready`, when it is there.
    ready_key: Option<(usize, u64)>,
}

/// One of the replica's slots, given back when dropped.
#[derive(Debug)]
pub struct TenantPermit {
    slots: Arc<TenantSlots>,
    tenant: Arc<str>,
}

impl Drop for TenantPermit {
    fn drop(&mut self) {
        self.slots.release(&self.tenant);
    }
}

/// The bucket of webhooks without a tenant.
const NO_TENANT: &str = "";

/// A tenant's key in [`TenantSlots`] (webhooks without one share a bucket).
pub fn tenant_key(tenant: Option<&str>) -> Arc<str> {
    Arc::from(tenant.unwrap_or(NO_TENANT))
}

/// A destination's key in [`HostSlots`] as its URL names it: the address
/// and port of an IP literal, in its canonical form (so `[::ffff:127.0.0.1]`
/// is `127.0.0.1`), or the host name (lower case, no final dot) and port. A
/// named host is counted by the address it resolves to instead
/// ([`address_key`]), unless it has a cap of its own.
pub fn host_key(url: &url::Url) -> Arc<str> {
    let port = url.port_or_known_default().unwrap_or(0);
    match url.host() {
        Some(url::Host::Ipv4(ip)) => address_key(SocketAddr::new(ip.into(), port)),
        Some(url::Host::Ipv6(ip)) => address_key(SocketAddr::new(std::net::IpAddr::V6(ip).to_canonical(), port)),
        Some(url::Host::Domain(name)) => Arc::from(format!("{}:{port}", host_name(name))),
        None => Arc::from(format!(":{port}")),
    }
}

/// A host name as [`HostSlots`] knows it: lower case, without a final dot.
pub fn host_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The key of the address a request connects to.
pub fn address_key(addr: SocketAddr) -> Arc<str> {
    Arc::from(addr.to_string())
}

impl TenantSlots {
    /// `total` slots, at most `per_tenant` of them held by one tenant.
    pub fn new(total: usize, per_tenant: usize) -> Arc<TenantSlots> {
        Arc::new(TenantSlots {
            total,
            per_tenant: per_tenant.min(total).max(1),
            state: Mutex::new(State {
                available: total,
                ..State::default()
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    /// Waits until `deadline` at most for a slot for `tenant`.
    pub async fn acquire(self: &Arc<Self>, tenant: Option<&str>, deadline: Instant) -> Result<TenantPermit, Limit> {
        self.acquire_key(&tenant_key(tenant), deadline).await
    }

    /// Takes a slot for `name` if one is free for it now: a slot free, the
    /// tenant under its share and none of its requests queued before it.
    fn take_now(&self, state: &mut State, name: &Arc<str>) -> bool {
        let available = state.available;
        let t = t_of(state, name);
        if available > 0 && t.in_flight < self.per_tenant && t.waiters.is_empty() {
            t.in_flight += 1;
            state.available -= 1;
            return true;
        }
        false
    }

    /// A slot for the tenant `name` if one is free for it now, without
    /// waiting.
    pub fn try_acquire_key(self: &Arc<Self>, name: &Arc<str>) -> Option<TenantPermit> {
        let mut state = self.lock();
        if self.take_now(&mut state, name) {
            return Some(self.permit(name.clone()));
        }
        // Forgets the entry made for a tenant that holds and waits for nothing.
        self.refresh(&mut state, name);
        None
    }

    /// The same, by the tenant's [`tenant_key`] (made once per webhook).
    pub async fn acquire_key(self: &Arc<Self>, name: &Arc<str>, deadline: Instant) -> Result<TenantPermit, Limit> {
        let (id, rx) = {
            let mut state = self.lock();
            if self.take_now(&mut state, name) {
                return Ok(self.permit(name.clone()));
            }
            let id = state.next_waiter;
            state.next_waiter += 1;
            let (tx, rx) = oneshot::channel();
            t_of(&mut state, name).waiters.push_back((id, tx));
            self.refresh(&mut state, name);
            (id, rx)
        };
        let mut wait = Wait {
            slots: self,
            tenant: name,
            id,
            rx: Some(rx),
        };
        let granted = tokio::time::timeout_at(deadline, wait.rx.as_mut().expect("set above")).await;
        match granted {
            Ok(Ok(())) => {
                wait.rx = None;
                Ok(self.permit(name.clone()))
            }
            // Timed out; `wait`'s drop gives back a slot granted meanwhile.
            _ => {
                // The tenant's share is to blame only when it is below the whole.
                let full = self.per_tenant < self.total && {
                    let state = self.lock();
                    state.tenants.get(name).is_some_and(|t| t.in_flight >= self.per_tenant)
                };
                Err(if full { Limit::Tenant } else { Limit::Overall })
            }
        }
    }

    fn permit(self: &Arc<Self>, tenant: Arc<str>) -> TenantPermit {
        TenantPermit {
            slots: self.clone(),
            tenant,
        }
    }

    fn release(&self, tenant: &Arc<str>) {
        let mut state = self.lock();
        if let Some(t) = state.tenants.get_mut(tenant) {
            t.in_flight = t.in_flight.saturating_sub(1);
        }
        state.available += 1;
        self.refresh(&mut state, tenant);
        self.dispatch(&mut state);
    }

    /// Hands free slots to the waiting tenants that hold the fewest.
    fn dispatch(&self, state: &mut State) {
        while state.available > 0 {
            let Some((_, _, name)) = state.ready.pop_first() else {
                return;
            };
            let t = t_of(state, &name);
            t.ready_key = None;
            if let Some((_, tx)) = t.waiters.pop_front() {
                if tx.send(()).is_ok() {
                    t.in_flight += 1;
                    state.available -= 1;
                }
            }
            self.refresh(state, &name);
        }
    }

    /// Puts `name` in `ready` under its current key (or takes it out), and
    /// forgets a tenant that holds nothing and waits for nothing.
    fn refresh(&self, state: &mut State, name: &Arc<str>) {
        let Some(t) = state.tenants.get_mut(name) else { return };
        let key = match t.waiters.front() {
            Some((id, _)) if t.in_flight < self.per_tenant => Some((t.in_flight, *id)),
            _ => None,
        };
        let idle = t.in_flight == 0 && t.waiters.is_empty();
        if key == t.ready_key {
            if idle {
                state.tenants.remove(name);
            }
            return;
        }
        let old = std::mem::replace(&mut t.ready_key, key);
        if let Some((n, id)) = old {
            state.ready.remove(&(n, id, name.clone()));
        }
        if let Some((n, id)) = key {
            state.ready.insert((n, id, name.clone()));
        }
        if idle {
            state.tenants.remove(name);
        }
    }

    /// Slots held by `tenant` (for tests and diagnostics).
    pub fn held_by(&self, tenant: Option<&str>) -> usize {
        let state = self.lock();
        state
            .tenants
            .get(tenant.unwrap_or(NO_TENANT))
            .map_or(0, |t| t.in_flight)
    }
}

fn t_of<'a>(state: &'a mut State, name: &Arc<str>) -> &'a mut Tenant {
    state.tenants.entry(name.clone()).or_default()
}

/// A queued request for a slot. Dropped before it was granted (timed out,
/// or the delivery abandoned), it leaves the queue; granted but never
/// claimed, it gives the slot back.
struct Wait<'a> {
    slots: &'a Arc<TenantSlots>,
    tenant: &'a Arc<str>,
    id: u64,
    rx: Option<oneshot::Receiver<()>>,
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else { return };
        let mut state = self.slots.lock();
        if let Some(t) = state.tenants.get_mut(self.tenant) {
            if let Some(pos) = t.waiters.iter().position(|(id, _)| *id == self.id) {
                t.waiters.remove(pos);
                self.slots.refresh(&mut state, self.tenant);
                return;
            }
        }
        // Not queued any more: it was granted (under the lock) and not claimed.
        if rx.try_recv().is_ok() {
            drop(state);
            self.slots.release(self.tenant);
        }
    }
}

/// Request slots per destination host (`host:port`).
#[derive(Debug)]
pub struct HostSlots {
    default: usize,
    overrides: HashMap<String, usize>,
    hosts: Mutex<HashMap<Arc<str>, Arc<Semaphore>>>,
}

/// One of a host's slots, given back when dropped.
#[derive(Debug)]
pub struct HostPermit {
    permit: Option<OwnedSemaphorePermit>,
    slots: Arc<HostSlots>,
    host: Arc<str>,
}

impl Drop for HostPermit {
    fn drop(&mut self) {
        drop(self.permit.take());
        let mut hosts = self.slots.hosts.lock();
        // Only the map holds it: nobody uses or waits for this host now.
        if hosts.get(&self.host).is_some_and(|s| Arc::strong_count(s) == 1) {
            hosts.remove(&self.host);
        }
    }
}

impl HostSlots {
    /// `default` slots per host; `overrides` by host name (the port not
    /// included: `hooks.slack.com`).
    pub fn new(default: usize, overrides: HashMap<String, usize>) -> Arc<HostSlots> {
        Arc::new(HostSlots {
            default,
            overrides: overrides.into_iter().map(|(h, n)| (host_name(&h), n)).collect(),
            hosts: Mutex::default(),
        })
    }

    /// Whether `name` has a cap of its own (`max_in_flight_by_host`): its
    /// requests are counted by name, whatever it resolves to.
    pub fn has_own_cap(&self, name: &str) -> bool {
        !self.overrides.is_empty() && self.overrides.contains_key(name)
    }

    /// Waits until `deadline` at most for a slot at `url`'s host.
    pub async fn acquire(self: &Arc<Self>, url: &url::Url, deadline: Instant) -> Result<HostPermit, Limit> {
        self.acquire_key(&host_key(url), deadline).await
    }

    fn semaphore(&self, host: &Arc<str>) -> Arc<Semaphore> {
        let mut hosts = self.hosts.lock();
        match hosts.get(&**host) {
            Some(semaphore) => semaphore.clone(),
            None => {
                let name = host.rsplit_once(':').map_or(&**host, |(name, _)| name);
                let capacity = self.overrides.get(name).copied().unwrap_or(self.default).max(1);
                let semaphore = Arc::new(Semaphore::new(capacity));
                hosts.insert(host.clone(), semaphore.clone());
                semaphore
            }
        }
    }

    /// Wraps what an attempt got: whatever happened, a permit-like value,
    /// so the map entry is cleaned up by the same drop.
    fn permit(self: &Arc<Self>, host: &Arc<str>, permit: Option<OwnedSemaphorePermit>) -> Option<HostPermit> {
        let permit = HostPermit {
            permit,
            slots: self.clone(),
            host: host.clone(),
        };
        permit.permit.is_some().then_some(permit)
    }

    /// A slot at `host` if one is free now, without waiting.
    pub fn try_acquire_key(self: &Arc<Self>, host: &Arc<str>) -> Option<HostPermit> {
        let permit = self.semaphore(host).try_acquire_owned().ok();
        self.permit(host, permit)
    }

    /// The same, by the destination's [`host_key`] (made once per webhook).
    pub async fn acquire_key(self: &Arc<Self>, host: &Arc<str>, deadline: Instant) -> Result<HostPermit, Limit> {
        let semaphore = self.semaphore(host);
        let permit = match semaphore.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => tokio::time::timeout_at(deadline, semaphore.acquire_owned())
                .await
                .ok()
                .and_then(Result::ok),
        };
        self.permit(host, permit).ok_or(Limit::Host)
    }

    /// Hosts with requests in flight or waiting.
    pub fn tracked(&self) -> usize {
        self.hosts.lock().len()
    }
}

/// A request's two shared slots, its tenant's (with one of the replica's)
/// and its destination host's, never holding one while it waits for the
/// other: a request that must wait for one lets go of the other, so a tenant
/// at its share cannot hold a host's slots that another tenant's requests
/// could use, and a host with no free slot holds none of the replica's.
pub async fn acquire_shared(
    tenants: &Arc<TenantSlots>,
    hosts: &Arc<HostSlots>,
    tenant: &Arc<str>,
    host: &Arc<str>,
    deadline: Instant,
) -> Result<(TenantPermit, HostPermit), Limit> {
    loop {
        let tenant_permit = tenants.acquire_key(tenant, deadline).await?;
        if let Some(host_permit) = hosts.try_acquire_key(host) {
            return Ok((tenant_permit, host_permit));
        }
        drop(tenant_permit);
        let host_permit = hosts.acquire_key(host, deadline).await?;
        if let Some(tenant_permit) = tenants.try_acquire_key(tenant) {
            return Ok((tenant_permit, host_permit));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn later(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    #[tokio::test(start_paused = true)]
    async fn a_tenant_never_holds_more_than_its_share() {
        let slots = TenantSlots::new(4, 2);
        let a1 = slots.acquire(Some("a"), later(10)).await.unwrap();
        let _a2 = slots.acquire(Some("a"), later(10)).await.unwrap();
        // Two slots are free, but not for a.
        assert_eq!(slots.acquire(Some("a"), later(10)).await.unwrap_err(), Limit::Tenant);
        let _b = slots.acquire(Some("b"), later(10)).await.unwrap();
        let _c = slots.acquire(None, later(10)).await.unwrap();
        assert_eq!(slots.acquire(Some("d"), later(10)).await.unwrap_err(), Limit::Overall);
        drop(a1);
        assert_eq!(slots.held_by(Some("a")), 1);
        let _a3 = slots.acquire(Some("a"), later(10)).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_freed_slot_goes_to_the_tenant_holding_the_fewest() {
        let slots = TenantSlots::new(4, 4);
        let held: Vec<_> = futures::future::join_all((0..3).map(|_| slots.acquire(Some("busy"), later(10))))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let other = slots.acquire(Some("other"), later(10)).await.unwrap();
        // The busy tenant queues many more; another tenant queues one after them.
        let mut busy = Vec::new();
        for _ in 0..5 {
            let s = slots.clone();
            busy.push(tokio::spawn(async move {
                s.acquire(Some("busy"), later(60_000)).await.map(|_| ())
            }));
        }
        tokio::task::yield_now().await;
        let quiet = {
            let s = slots.clone();
            tokio::spawn(async move {
                let permit = s.acquire(Some("quiet"), later(60_000)).await.unwrap();
                tokio::time::sleep(Duration::from_secs(1)).await;
                drop(permit);
            })
        };
        tokio::task::yield_now().await;
        let mut held = held.into_iter();
        drop(held.next());
        tokio::task::yield_now().await;
        assert_eq!(slots.held_by(Some("quiet")), 1, "the quiet tenant is served first");
        assert_eq!(slots.held_by(Some("busy")), 2);
        quiet.await.unwrap();
        drop(held);
        drop(other);
        for b in busy {
            b.await.unwrap().unwrap();
        }
        assert_eq!(slots.held_by(Some("busy")), 0);
        assert!(slots.lock().tenants.is_empty(), "idle tenants are forgotten");
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_wait_leaves_no_slot_behind() {
        let slots = TenantSlots::new(1, 1);
        let held = slots.acquire(Some("a"), later(10)).await.unwrap();
        let waiter = {
            let s = slots.clone();
            tokio::spawn(async move { s.acquire(Some("b"), later(60_000)).await.map(|_| ()) })
        };
        tokio::task::yield_now().await;
        waiter.abort();
        let _ = waiter.await;
        drop(held);
        assert_eq!(slots.lock().available, 1);
        {
            let state = slots.lock();
            assert!(state.tenants.is_empty() && state.ready.is_empty(), "{state:?}");
        }
        // And a wait that times out leaves the queue.
        let held = slots.acquire(Some("a"), later(10)).await.unwrap();
        let started = Instant::now();
        assert_eq!(slots.acquire(Some("b"), later(500)).await.unwrap_err(), Limit::Overall);
        assert_eq!(started.elapsed(), Duration::from_millis(500));
        drop(held);
        assert_eq!(slots.lock().available, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn hosts_have_their_own_slots_and_are_forgotten_when_idle() {
        let hosts = HostSlots::new(2, HashMap::from([("big.example".to_owned(), 3)]));
        let url = |u: &str| url::Url::parse(u).unwrap();
        let a1 = hosts
            .acquire(&url("https://victim.example/a"), later(10))
            .await
            .unwrap();
        let _a2 = hosts
            .acquire(&url("https://VICTIM.example/b?x"), later(10))
            .await
            .unwrap();
        assert_eq!(
            hosts
                .acquire(&url("https://victim.example:443/c"), later(10))
                .await
                .unwrap_err(),
            Limit::Host
        );
        // Another port is another destination.
        let _other = hosts
            .acquire(&url("https://victim.example:8443/"), later(10))
            .await
            .unwrap();
        for _ in 0..3 {
            std::mem::forget(hosts.acquire(&url("https://big.example/"), later(10)).await.unwrap());
        }
        assert!(hosts.acquire(&url("https://big.example/"), later(10)).await.is_err());
        drop(a1);
        let _a3 = hosts.acquire(&url("https://victim.example/"), later(10)).await.unwrap();
        assert_eq!(hosts.tracked(), 3);
        drop(_a3);
        drop(_a2);
        drop(_other);
        assert_eq!(hosts.tracked(), 1, "only the host with (leaked) permits is left");
    }

    #[test]
    fn an_ip_literal_is_counted_by_its_canonical_address() {
        let key = |u: &str| host_key(&url::Url::parse(u).unwrap());
        for spelling in [
            "http://127.0.0.1:8080/a",
            "http://127.1:8080/",
            "http://0x7f.0.0.1:8080/",
            "http://[::ffff:127.0.0.1]:8080/",
            "http://[::ffff:7f00:1]:8080/b?c",
        ] {
            assert_eq!(&*key(spelling), "127.0.0.1:8080", "{spelling}");
        }
        assert_eq!(&*key("https://[::1]/"), "[::1]:443");
        assert_eq!(&*key("https://Hooks.Example.COM./x"), "hooks.example.com:443");
        let hosts = HostSlots::new(2, HashMap::from([("Big.Example.".to_owned(), 3)]));
        assert!(hosts.has_own_cap(&host_name("BIG.example.")));
        assert!(!hosts.has_own_cap("small.example"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_tenant_at_its_share_holds_no_host_slot_another_tenant_could_use() {
        let tenants = TenantSlots::new(8, 1);
        let hosts = HostSlots::new(1, HashMap::new());
        let (acme, globex, shared) = (tenant_key(Some("acme")), tenant_key(Some("globex")), Arc::from("h:443"));
        // acme's one slot is taken by a request elsewhere that hangs.
        let _hung = tenants.acquire_key(&acme, later(10)).await.unwrap();
        let waiting = {
            let (tenants, hosts, acme, shared) = (tenants.clone(), hosts.clone(), acme.clone(), Arc::clone(&shared));
            tokio::spawn(async move {
                acquire_shared(&tenants, &hosts, &acme, &shared, later(60_000))
                    .await
                    .map(|_| ())
            })
        };
        tokio::task::yield_now().await;
        // acme's next request to the shared host waits for its tenant slot
        // without holding the host's only slot.
        let got = acquire_shared(&tenants, &hosts, &globex, &shared, later(10)).await;
        assert!(got.is_ok(), "{:?}", got.err());
        waiting.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_waiting_for_its_host_holds_none_of_the_replica_s_slots() {
        let tenants = TenantSlots::new(1, 1);
        let hosts = HostSlots::new(1, HashMap::new());
        let (a, b) = (tenant_key(Some("a")), tenant_key(Some("b")));
        let (busy, free): (Arc<str>, Arc<str>) = (Arc::from("busy:443"), Arc::from("free:443"));
        let _busy = hosts.acquire_key(&busy, later(10)).await.unwrap();
        let waiting = {
            let (tenants, hosts, a, busy) = (tenants.clone(), hosts.clone(), a.clone(), busy.clone());
            tokio::spawn(async move {
                acquire_shared(&tenants, &hosts, &a, &busy, later(60_000))
                    .await
                    .map(|_| ())
            })
        };
        tokio::task::yield_now().await;
        let got = acquire_shared(&tenants, &hosts, &b, &free, later(10)).await;
        assert!(got.is_ok(), "the replica's only slot is free: {:?}", got.err());
        drop(got);
        drop(_busy);
        assert!(waiting.await.unwrap().is_ok(), "served once the host frees");
    }
}
