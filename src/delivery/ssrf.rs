//! SSRF protection: which addresses Herald may connect to.
//!
//! A webhook URL is written by a customer, so a delivery must never become a
//! way into Herald's own network (cloud metadata at 169.254.169.254, Redis on
//! loopback, internal services on private ranges). Checking the URL is not
//! enough: a name can resolve to anything, and differently on each lookup.
//! So the check runs on the addresses actually connected to: the client
//! resolves names through [`GuardedResolver`], which only returns permitted
//! addresses, and IP-literal URLs (which it does not resolve) are checked by
//! [`AddressPolicy::check_url`] before the request is made. Redirects are not
//! followed and proxies are not used, so nothing else picks a destination.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use hyper_util::client::legacy::connect::dns::Name;
use ipnet::IpNet;
use url::{Host, Url};

use crate::config::delivery::{DeliveryConfig, PortRange};

/// A destination refused by the policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("destination {ip} is a {range} address, refused by the SSRF policy")]
pub struct Blocked {
    pub ip: IpAddr,
    pub range: &'static str,
}

/// A destination port outside `delivery.allow_ports`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("destination port {port} is not in delivery.allow_ports")]
pub struct PortRefused {
    pub port: u16,
}

/// Why a URL may not be delivered to, known before connecting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(transparent)]
    Address(#[from] Blocked),
    #[error(transparent)]
    Port(#[from] PortRefused),
}

/// Which addresses may be connected to: everything public, plus the
/// configured allowlist; and on which ports.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    allow: Vec<IpNet>,
    /// `None` allows every port.
    ports: Option<Vec<PortRange>>,
}

impl AddressPolicy {
    /// Public addresses and `allow`, on any port.
    pub fn new(allow: Vec<IpNet>) -> Self {
        AddressPolicy { allow, ports: None }
    }

    /// The same, on `ports` only.
    pub fn on_ports(mut self, ports: Vec<PortRange>) -> Self {
        self.ports = Some(ports);
        self
    }

    /// Whether `ip` may be connected to.
    pub fn check(&self, ip: IpAddr) -> Result<(), Blocked> {
        let Some(range) = special_range(ip) else {
            return Ok(());
        };
        let embedded = embedded_v4(ip).map(IpAddr::V4);
        let allowed = self
            .allow
            .iter()
            .any(|net| net.contains(&ip) || embedded.is_some_and(|v4| net.contains(&v4)));
        if allowed {
            Ok(())
        } else {
            Err(Blocked { ip, range })
        }
    }

    /// Checks a URL's port, and its host when it is an IP literal; names
    /// are checked when resolved.
    pub fn check_url(&self, url: &Url) -> Result<(), Refused> {
        if let Some(ports) = &self.ports {
            let port = url.port_or_known_default().unwrap_or(0);
            if !ports.iter().any(|range| range.contains(port)) {
                return Err(PortRefused { port }.into());
            }
        }
        match url.host() {
            Some(Host::Ipv4(v4)) => Ok(self.check(IpAddr::V4(v4))?),
            Some(Host::Ipv6(v6)) => Ok(self.check(IpAddr::V6(v6))?),
            _ => Ok(()),
        }
    }
}

/// The SSRF policy of each tenant: the shared allowlist
/// (`delivery.allow_cidrs`) plus the tenant's own
/// (`delivery.tenant_allow_cidrs`), on `delivery.allow_ports`.
#[derive(Debug, Clone)]
pub struct Egress {
    shared: Arc<AddressPolicy>,
    tenants: HashMap<String, Arc<AddressPolicy>>,
}

impl Egress {
    /// The global policy and each tenant's own, from `delivery.*`.
    pub fn new(config: &DeliveryConfig) -> Egress {
        let policy = |allow: Vec<IpNet>| Arc::new(AddressPolicy::new(allow).on_ports(config.allow_ports.clone()));
        let tenants = config
            .tenant_allow_cidrs
            .iter()
            .map(|(tenant, own)| {
                let mut allow = config.allow_cidrs.clone();
                allow.extend(own.iter().copied());
                (tenant.clone(), policy(allow))
            })
            .collect();
        Egress {
            shared: policy(config.allow_cidrs.clone()),
            tenants,
        }
    }

    /// The policy of `tenant`'s webhooks.
    pub fn policy(&self, tenant: Option<&str>) -> &Arc<AddressPolicy> {
        tenant.and_then(|t| self.tenants.get(t)).unwrap_or(&self.shared)
    }

    /// The policy of webhooks without an allowlist of their tenant's own.
    pub fn shared(&self) -> &Arc<AddressPolicy> {
        &self.shared
    }

    /// Tenants with networks of their own, and their policies.
    pub fn tenants(&self) -> impl Iterator<Item = (&str, &Arc<AddressPolicy>)> {
        self.tenants.iter().map(|(t, p)| (t.as_str(), p))
    }
}

/// Whether a destination the policy let through was reachable only because
/// an allowlist opened it (its address is in a range refused by default).
pub fn opened_by_allowlist(ip: IpAddr) -> bool {
    special_range(ip).is_some()
}

/// The name of the special-purpose range `ip` is in, or `None` for a
/// globally routable unicast address.
pub fn special_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "unspecified",
        (10, _, _) => "private",
        (100, 64..=127, _) => "CGNAT",
        (127, _, _) => "loopback",
        (169, 254, _) => "link-local",
        (172, 16..=31, _) => "private",
        (192, 0, 0) => "IETF protocol",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (192, 88, 99) => "6to4 relay",
        (192, 168, _) => "private",
        (198, 18..=19, _) => "benchmarking",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved",
        _ => return None,
    })
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = embedded_v4(IpAddr::V6(ip)) {
        // Mapped, NAT64 or 6to4 addresses reach the embedded IPv4 address.
        return special_v4(v4);
    }
    let s = ip.segments();
    Some(match s {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        [0, 0, 0, 0, 0, 0, _, _] => "IPv4-compatible",
        [0x64, 0xff9b, 1, ..] => "NAT64 local",
        [0x100, 0, 0, 0, ..] => "discard",
        [0x2001, 0, ..] => "Teredo",
        [0x2001, 0xdb8, ..] => "documentation",
        // IETF protocol assignments (2001::/23: benchmarking, ORCHID, AMT...).
        [0x2001, x, ..] if x < 0x200 => "IETF protocol",
        // 3fff::/20, documentation (RFC 9637).
        [0x3fff, y, ..] if y & 0xf000 == 0 => "documentation",
        [0x5f00, ..] => "segment routing",
        [x, ..] if x & 0xfe00 == 0xfc00 => "unique local",
        [x, ..] if x & 0xffc0 == 0xfe80 => "link-local",
        [x, ..] if x & 0xffc0 == 0xfec0 => "site-local",
        [x, ..] if x & 0xff00 == 0xff00 => "multicast",
        _ => return None,
    })
}

/// The IPv4 address an IPv6 address leads to: IPv4-mapped (`::ffff:a.b.c.d`),
/// IPv4-translated (`::ffff:0:a.b.c.d`, SIIT), NAT64 (`64:ff9b::a.b.c.d`) and
/// 6to4 (`2002:aabb:ccdd::`).
fn embedded_v4(ip: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = ip else { return None };
    let s = v6.segments();
    let from = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, hi, lo] => Some(from(hi, lo)),
        [0, 0, 0, 0, 0xffff, 0, hi, lo] => Some(from(hi, lo)),
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(from(hi, lo)),
        [0x2002, hi, lo, ..] => Some(from(hi, lo)),
        _ => None,
    }
}

/// How a name is looked up (the system resolver, or a test's).
type Lookup =
    Arc<dyn Fn(String) -> futures::future::BoxFuture<'static, std::io::Result<Vec<SocketAddr>>> + Send + Sync>;

/// Names kept resolved at once, per client; past it the least used go.
const RESOLVED_NAMES: usize = 10_000;

/// A name's permitted addresses, as one lookup found them, and the one
/// requests to it connect to now: each request connects to exactly one
/// address, the one its host slot was counted under (see
/// `delivery::shares`), and moves on to the next when that one refuses.
#[derive(Debug)]
pub struct Resolved {
    addrs: Box<[SocketAddr]>,
    current: AtomicUsize,
    expires: Instant,
}

impl Resolved {
    /// The address requests connect to now.
    pub fn current(&self) -> SocketAddr {
        self.addrs[self.current.load(Ordering::Relaxed) % self.addrs.len()]
    }

    /// How many addresses the name has.
    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    /// Whether it has none (never: a name with none is an error).
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    /// Moves requests on from `failed` (which refused a connection) to the
    /// next address, unless another request already did.
    pub fn move_past(&self, failed: IpAddr) {
        let now = self.current.load(Ordering::Relaxed);
        if self.addrs[now % self.addrs.len()].ip() == failed {
            let _ =
                self.current
                    .compare_exchange(now, (now + 1) % self.addrs.len(), Ordering::Relaxed, Ordering::Relaxed);
        }
    }
}

/// A DNS resolver for the delivery client that drops addresses the policy refuses, and
/// fails with [`Blocked`] when none is left. A lookup that takes longer than
/// its timeout fails, so a slow or hostile name server cannot hold a
/// delivery slot.
///
/// What a lookup found is kept for `delivery.resolve_cache_ttl`, so that the
/// address a request's host slot is counted under ([`GuardedResolver::resolve_name`],
/// before the request) is the address it connects to (the connector asks
/// again when it connects, and is given only [`Resolved::current`]).
#[derive(Clone)]
pub struct GuardedResolver {
    policy: Arc<AddressPolicy>,
    timeout: Duration,
    ttl: Duration,
    lookup: Lookup,
    cache: Arc<quick_cache::sync::Cache<String, Arc<Resolved>>>,
}

impl std::fmt::Debug for GuardedResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedResolver")
            .field("policy", &self.policy)
            .field("timeout", &self.timeout)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl GuardedResolver {
    /// Resolves with the system resolver, for at most `timeout`, and keeps
    /// each answer for `ttl`.
    pub fn new(policy: Arc<AddressPolicy>, timeout: Duration, ttl: Duration) -> Self {
        let lookup: Lookup = Arc::new(|name: String| {
            Box::pin(async move { Ok(tokio::net::lookup_host((name.as_str(), 0)).await?.collect()) })
        });
        GuardedResolver {
            policy,
            timeout,
            ttl,
            lookup,
            cache: Arc::new(quick_cache::sync::Cache::new(RESOLVED_NAMES)),
        }
    }

    /// Resolves with `lookup` instead (tests).
    #[cfg(test)]
    fn with_lookup(mut self, lookup: Lookup) -> Self {
        self.lookup = lookup;
        self
    }

    /// `name`'s permitted addresses: kept from a lookup less than the TTL
    /// ago, or looked up now. Each is in its canonical form (an IPv4-mapped
    /// IPv6 address as the IPv4 one), so that one address has one key. The
    /// name is taken as the host slots know it (lower case, without a final
    /// dot), so that a URL's `host.` and the slot counted for it are one
    /// entry, looked up once.
    pub async fn resolve_name(&self, name: &str) -> Result<Arc<Resolved>, Box<dyn StdError + Send + Sync>> {
        let name = crate::delivery::shares::host_name(name);
        let name = name.as_str();
        if let Some(kept) = self.cache.get(name).filter(|r| r.expires > Instant::now()) {
            return Ok(kept);
        }
        let resolved: Vec<SocketAddr> = match tokio::time::timeout(self.timeout, (self.lookup)(name.to_owned())).await {
            Ok(found) => found?,
            Err(_) => {
                return Err(format!(
                    "resolving {name} took longer than delivery.resolve_timeout ({})",
                    humantime::format_duration(self.timeout)
                )
                .into());
            }
        };
        let mut first_refusal = None;
        let mut allowed: Vec<SocketAddr> = Vec::with_capacity(resolved.len());
        for addr in resolved {
            let canonical = SocketAddr::new(addr.ip().to_canonical(), addr.port());
            match self.policy.check(addr.ip()).and(self.policy.check(canonical.ip())) {
                Ok(()) if !allowed.contains(&canonical) => allowed.push(canonical),
                Ok(()) => {}
                Err(blocked) => {
                    first_refusal.get_or_insert(blocked);
                }
            }
        }
        if allowed.is_empty() {
            return Err(match first_refusal {
                Some(blocked) => Box::new(blocked),
                None => format!("{name} resolved to no address").into(),
            });
        }
        let entry = Arc::new(Resolved {
            addrs: allowed.into_boxed_slice(),
            current: AtomicUsize::new(0),
            expires: Instant::now() + self.ttl,
        });
        self.cache.insert(name.to_owned(), entry.clone());
        Ok(entry)
    }
}

/// What a connection to `name` is given: the one address its request was
/// counted under.
type Resolving = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<std::iter::Once<SocketAddr>, Box<dyn StdError + Send + Sync>>> + Send>,
>;

impl GuardedResolver {
    /// The address a connection to `name` is made to: [`Resolved::current`].
    pub fn resolve(&self, name: Name) -> Resolving {
        let resolver = self.clone();
        Box::pin(async move {
            let resolved = resolver.resolve_name(name.as_str()).await?;
            Ok(std::iter::once(resolved.current()))
        })
    }
}

/// The connector's resolver (hyper-util's `HttpConnector` resolves through
/// any such service).
impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::iter::Once<SocketAddr>;
    type Error = Box<dyn StdError + Send + Sync>;
    type Future = Resolving;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Resolving {
        GuardedResolver::resolve(self, name)
    }
}

/// The [`Blocked`] refusal somewhere in an error's source chain.
pub fn find_blocked<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a Blocked> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(blocked) = e.downcast_ref::<Blocked>() {
            return Some(blocked);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked(ip: &str) -> bool {
        AddressPolicy::default().check(ip.parse().unwrap()).is_err()
    }

    #[test]
    fn refuses_every_special_range() {
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.1.2.3",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.1.2.3",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:0001::",
            "2002:c0a8:0101::1",
            "::127.0.0.1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "2001:0::1",
            "100::1",
            // IPv4-translated (SIIT) forms of loopback and metadata.
            "::ffff:0:7f00:1",
            "::ffff:0:a9fe:a9fe",
            "::ffff:0:a00:1",
            "2001:2::1",
            "2001:10::1",
            "2001:1ff::1",
            "3fff::1",
            "3fff:fff::1",
            "5f00::1",
        ] {
            assert!(blocked(ip), "{ip} should be refused");
        }
    }

    #[test]
    fn allows_public_addresses() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "169.253.0.1",
            "192.169.0.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "::ffff:0:808:808",
            "64:ff9b::808:808",
            "2002:0808:0808::",
            "2001:200::1",
            "3ff0:1::1",
            "3fff:1000::1",
        ] {
            assert!(!blocked(ip), "{ip} should be allowed");
        }
    }

    #[test]
    fn names_the_range_refused() {
        let err = AddressPolicy::default()
            .check("169.254.169.254".parse().unwrap())
            .unwrap_err();
        assert_eq!(err.range, "link-local");
        assert!(err.to_string().contains("169.254.169.254"));
    }

    #[test]
    fn the_allowlist_opens_exactly_its_networks() {
        let policy = AddressPolicy::new(vec!["127.0.0.0/8".parse().unwrap(), "fd00:1::/32".parse().unwrap()]);
        assert!(policy.check("127.0.0.1".parse().unwrap()).is_ok());
        assert!(policy.check("::ffff:127.0.0.1".parse().unwrap()).is_ok());
        assert!(policy.check("fd00:1::5".parse().unwrap()).is_ok());
        assert!(policy.check("::1".parse().unwrap()).is_err());
        assert!(policy.check("10.0.0.1".parse().unwrap()).is_err());
        assert!(policy.check("169.254.169.254".parse().unwrap()).is_err());
    }

    #[test]
    fn ip_literal_urls_are_checked_and_names_deferred() {
        let policy = AddressPolicy::default();
        assert!(policy
            .check_url(&Url::parse("http://127.0.0.1:8080/x").unwrap())
            .is_err());
        assert!(policy.check_url(&Url::parse("http://[::1]/x").unwrap()).is_err());
        assert!(policy
            .check_url(&Url::parse("http://[::ffff:a9fe:a9fe]/").unwrap())
            .is_err());
        assert!(
            policy.check_url(&Url::parse("http://0x7f000001/").unwrap()).is_err(),
            "hex form is normalised"
        );
        assert!(
            policy.check_url(&Url::parse("http://2130706433/").unwrap()).is_err(),
            "decimal form is normalised"
        );
        assert!(policy.check_url(&Url::parse("https://example.com/").unwrap()).is_ok());
    }

    #[test]
    fn only_the_allowed_ports_are_reached() {
        let ports = vec![
            PortRange { first: 80, last: 80 },
            PortRange { first: 443, last: 443 },
            PortRange {
                first: 8000,
                last: 8999,
            },
        ];
        let policy = AddressPolicy::default().on_ports(ports);
        let check = |u: &str| policy.check_url(&Url::parse(u).unwrap());
        assert!(check("https://example.com/").is_ok(), "443 by the scheme");
        assert!(check("http://example.com/").is_ok(), "80 by the scheme");
        assert!(check("https://example.com:8443/").is_ok());
        assert_eq!(
            check("https://example.com:6379/"),
            Err(Refused::Port(PortRefused { port: 6379 }))
        );
        assert_eq!(
            check("http://example.com:22/").unwrap_err().to_string(),
            "destination port 22 is not in delivery.allow_ports"
        );
        assert!(check("http://example.com:9000/").is_err());
        assert!(AddressPolicy::default()
            .check_url(&Url::parse("http://example.com:22/").unwrap())
            .is_ok());
    }

    #[test]
    fn a_tenants_networks_are_open_to_it_alone() {
        let config = crate::config::Config::from_toml_overlays(&[r#"
[delivery]
allow_cidrs = ["192.0.2.0/24"]
tenant_allow_cidrs = { acme = ["10.20.0.0/16"] }
allow_ports = [443]
"#])
        .unwrap();
        let egress = Egress::new(&config.delivery);
        let internal: IpAddr = "10.20.1.2".parse().unwrap();
        let shared: IpAddr = "192.0.2.7".parse().unwrap();
        assert!(egress.policy(Some("acme")).check(internal).is_ok());
        assert!(egress.policy(Some("acme")).check(shared).is_ok(), "the shared list too");
        assert!(egress.policy(Some("globex")).check(internal).is_err());
        assert!(egress.policy(None).check(internal).is_err());
        assert!(egress.policy(Some("globex")).check(shared).is_ok());
        let url = Url::parse("http://10.20.1.2:8080/").unwrap();
        assert!(
            matches!(egress.policy(Some("acme")).check_url(&url), Err(Refused::Port(_))),
            "the ports apply to every tenant"
        );
        assert!(opened_by_allowlist(internal));
        assert!(!opened_by_allowlist("93.184.215.14".parse().unwrap()));
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_of_blocked_addresses() {
        let resolver = GuardedResolver::new(
            Arc::new(AddressPolicy::default()),
            Duration::from_secs(5),
            Duration::from_secs(30),
        );
        let err = resolver
            .resolve("localhost".parse().unwrap())
            .await
            .expect_err("refused");
        let blocked = find_blocked(err.as_ref()).expect("a Blocked error");
        assert_eq!(blocked.range, "loopback");

        let allowing = GuardedResolver::new(
            Arc::new(AddressPolicy::new(vec!["127.0.0.0/8".parse().unwrap()])),
            Duration::from_secs(5),
            Duration::from_secs(30),
        );
        let addrs: Vec<SocketAddr> = allowing.resolve("localhost".parse().unwrap()).await.unwrap().collect();
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.is_ipv4()), "{addrs:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lookup_that_never_answers_fails_at_its_timeout() {
        let never: Lookup = Arc::new(|_| Box::pin(std::future::pending()));
        let resolver = GuardedResolver::new(
            Arc::new(AddressPolicy::default()),
            Duration::from_secs(5),
            Duration::from_secs(30),
        )
        .with_lookup(never);
        let started = tokio::time::Instant::now();
        let err = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            resolver.resolve("slow.example".parse().unwrap()),
        )
        .await
        .expect("the resolver gives up by itself")
        .expect_err("an error");
        assert!(
            err.to_string()
                .contains("took longer than delivery.resolve_timeout (5s)"),
            "{err}"
        );
        assert_eq!(started.elapsed(), std::time::Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_name_is_looked_up_once_per_ttl_its_addresses_canonical_and_one_at_a_time() {
        let lookups = Arc::new(AtomicUsize::new(0));
        let counted = lookups.clone();
        let lookup: Lookup = Arc::new(move |_| {
            counted.fetch_add(1, Ordering::Relaxed);
            Box::pin(async {
                Ok(["127.0.0.2:0", "[::ffff:127.0.0.2]:0", "127.0.0.3:0", "10.0.0.1:0"]
                    .iter()
                    .map(|a| a.parse().unwrap())
                    .collect())
            })
        });
        let resolver = GuardedResolver::new(
            Arc::new(AddressPolicy::new(vec!["127.0.0.0/8".parse().unwrap()])),
            Duration::from_secs(5),
            Duration::from_secs(30),
        )
        .with_lookup(lookup);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let first = resolver.resolve_name("multi.example").await.unwrap();
        // The mapped spelling is the same address; the private one is refused.
        assert_eq!(first.len(), 2);
        assert_eq!(first.current().ip(), ip("127.0.0.2"));
        // The connector is given the one address the request was counted under.
        let given: Vec<SocketAddr> = resolver
            .resolve("multi.example".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert_eq!(given, vec![first.current()]);
        // A URL's spelling with a final dot, or in capitals, is the same entry.
        let dotted: Vec<SocketAddr> = resolver
            .resolve("Multi.Example.".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert_eq!(dotted, vec![first.current()]);
        assert_eq!(lookups.load(Ordering::Relaxed), 1, "no second lookup for it");
        // It refuses: requests move on to the next, once however many saw it.
        first.move_past(ip("127.0.0.2"));
        first.move_past(ip("127.0.0.2"));
        let again = resolver.resolve_name("multi.example").await.unwrap();
        assert_eq!(again.current().ip(), ip("127.0.0.3"));
        assert_eq!(lookups.load(Ordering::Relaxed), 1, "kept for the TTL");
        tokio::time::advance(Duration::from_secs(31)).await;
        let fresh = resolver.resolve_name("multi.example").await.unwrap();
        assert_eq!(lookups.load(Ordering::Relaxed), 2, "looked up again after it");
        assert_eq!(fresh.current().ip(), ip("127.0.0.2"));
    }
}
