//! The brokers a consumer's client knows, as its statistics tell every
//! `kafka.statistics_interval`: which it is connected to and which it cannot
//! reach, and since when. A broker that dies, freezes or is cut off shows
//! here (on `/status` and in `herald_kafka_brokers`) while the cluster moves
//! its partitions' leadership elsewhere.
use std::time::Duration;

use parking_lot::Mutex;
use rdkafka::statistics::Statistics;

/// One broker as the client last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerSeen {
    /// Its `node.id`.
    pub id: i32,
    /// The address the client connects to (`host:port`).
    pub address: String,
    /// librdkafka's connection state (`UP`, `DOWN`, `CONNECT`, ...).
    pub state: String,
    /// How long it has been in that state.
    pub for_time: Duration,
    /// Requests sent to it and not answered yet.
    pub waiting: i64,
    /// How long since it last answered anything on this connection (`None`
    /// when it has not yet).
    pub silent: Option<Duration>,
}

/// Requests waiting this long with no answer at all mark a connected broker
/// unresponsive (frozen, or too overloaded to serve): none of the requests
/// Herald's clients make waits at the broker for more than a second
/// (`fetch.wait.max.ms` is 500 ms by default), and librdkafka gives up on a
/// request only after `socket.timeout.ms` (60 s).
pub const SILENT_AFTER: Duration = Duration::from_secs(10);

impl BrokerSeen {
    /// The client has a working connection to it.
    pub fn up(&self) -> bool {
        self.state == "UP"
    }

    /// The client needs it and cannot reach it: its connection is down or
    /// being set up again, or it is connected and has left requests
    /// unanswered for [`SILENT_AFTER`] (a broker frozen keeps its
    /// connections open). `INIT` is a broker the client has not needed yet
    /// (it connects to brokers only as it needs them): neither up nor
    /// unreachable.
    pub fn unreachable(&self) -> bool {
        if self.up() {
            return self.waiting > 0 && self.silent.is_some_and(|s| s >= SILENT_AFTER);
        }
        self.state != "INIT"
    }
}

/// The brokers of the cluster (learned from metadata, by node id; bootstrap
/// entries left out), in node id order.
///
/// librdkafka talks to the group coordinator over a connection of its own, a
/// logical broker (`GroupCoordinator`, source `logical`) that names the
/// node it is connected to. Heartbeats, joins and offset commits go there
/// alone, so a frozen coordinator that leads none of this consumer's
/// partitions shows only on that connection: each node's entry takes the
/// logical connections to it into account, and the worst of its connections
/// (requests waiting longest unanswered) is what it reports.
pub fn seen_in(statistics: &Statistics) -> Vec<BrokerSeen> {
    let connection = |b: &rdkafka::statistics::Broker, id: i32| BrokerSeen {
        id,
        address: b.nodename.clone(),
        state: b.state.clone(),
        for_time: Duration::from_micros(b.stateage.max(0) as u64),
        waiting: b.waitresp_cnt,
        silent: (b.rxidle >= 0).then(|| Duration::from_micros(b.rxidle as u64)),
    };
    let logical: Vec<&rdkafka::statistics::Broker> = statistics
        .brokers
        .values()
        .filter(|b| b.source == "logical" && !b.nodename.is_empty())
        .collect();
    let mut brokers: Vec<BrokerSeen> = statistics
        .brokers
        .values()
        .filter(|b| b.nodeid >= 0 && b.source == "learned")
        .map(|b| {
            let mut seen = connection(b, b.nodeid);
            for other in logical
                .iter()
                .filter(|l| l.nodename == b.nodename || (l.nodeid >= 0 && l.nodeid == b.nodeid))
                .map(|l| connection(l, b.nodeid))
            {
                seen = worse(seen, other);
            }
            seen
        })
        .collect();
    brokers.sort_by_key(|b| b.id);
    brokers
}

/// Of two connections to one node, the one that says more about its health:
/// one the client has started using over one it has not (`INIT`), and among
/// connected ones, the one with requests waiting longest unanswered. The
/// node's address stays the learned one.
fn worse(node: BrokerSeen, other: BrokerSeen) -> BrokerSeen {
    if node.state == "INIT" && other.state != "INIT" {
        return BrokerSeen {
            address: node.address,
            ..other
        };
    }
    if !(node.up() && other.up()) {
        return node;
    }
    let stuck = |c: &BrokerSeen| (c.waiting > 0).then_some(c.silent.unwrap_or_default());
    match (stuck(&node), stuck(&other)) {
        (Some(a), Some(b)) if b > a => BrokerSeen {
            address: node.address,
            ..other
        },
        (None, Some(_)) => BrokerSeen {
            address: node.address,
            ..other
        },
        _ => node,
    }
}

/// The last view of the brokers, shared by the statistics callback that
/// writes it and `/status` that reads it.
#[derive(Debug, Default)]
pub struct BrokerView(Mutex<Vec<BrokerSeen>>);

impl BrokerView {
    /// Replaces the view.
    pub fn set(&self, brokers: Vec<BrokerSeen>) {
        *self.0.lock() = brokers;
    }

    /// The view as last set (empty before the first statistics).
    pub fn get(&self) -> Vec<BrokerSeen> {
        self.0.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(json: &str) -> Statistics {
        serde_json::from_str(json).expect("statistics as librdkafka writes them")
    }

    /// The broker entries of a client's statistics, trimmed to what
    /// [`Statistics`] requires, with `brokers` as given.
    fn with_brokers(brokers: &str) -> String {
        let fields = |name: &str, id: i32, host: &str, source: &str, state: &str, age: i64, waiting: i64, idle: i64| {
            format!(
                r#""{name}": {{"name":"{name}","nodeid":{id},"nodename":"{host}","source":"{source}","state":"{state}",
                "stateage":{age},"outbuf_cnt":0,"outbuf_msg_cnt":0,"waitresp_cnt":{waiting},"waitresp_msg_cnt":0,"tx":0,
                "txbytes":0,"txerrs":0,"txretries":0,"txidle":0,"req_timeouts":0,"rx":0,"rxbytes":0,"rxerrs":0,
                "rxcorriderrs":0,"rxpartial":0,"rxidle":{idle},"zbuf_grow":0,"buf_grow":0,"wakeups":0,"connects":0,
                "disconnects":0,"req":{{}},"toppars":{{}}}}"#
            )
        };
        let entries: Vec<String> = brokers
            .split(';')
            .filter(|b| !b.is_empty())
            .map(|b| {
                let f: Vec<&str> = b.split(',').collect();
                let n = |i: usize| f[i].parse().unwrap();
                fields(f[0], f[1].parse().unwrap(), f[2], f[3], f[4], n(5), n(6), n(7))
            })
            .collect();
        format!(
            r#"{{"name":"c","client_id":"c","type":"consumer","ts":0,"time":0,"age":0,"replyq":0,"msg_cnt":0,
            "msg_size":0,"msg_max":0,"msg_size_max":0,"tx":0,"tx_bytes":0,"rx":0,"rx_bytes":0,"txmsgs":0,
            "txmsg_bytes":0,"rxmsgs":0,"rxmsg_bytes":0,"simple_cnt":0,"metadata_cache_cnt":0,
            "brokers":{{{}}},"topics":{{}}}}"#,
            entries.join(",")
        )
    }

    #[test]
    fn the_cluster_s_brokers_are_read_by_node_id_without_bootstrap_entries() {
        let s = stats(&with_brokers(
            "127.0.0.1:9092/bootstrap,-1,127.0.0.1:9092,configured,UP,5,0,-1;\
             GroupCoordinator,-1,127.0.0.1:9094,logical,UP,5,0,-1;\
             127.0.0.1:9094/3,3,127.0.0.1:9094,learned,UP,7000000,1,120000;\
             127.0.0.1:9093/2,2,127.0.0.1:9093,learned,CONNECT,12500000,0,-1;\
             127.0.0.1:9092/1,1,127.0.0.1:9092,learned,INIT,1,0,-1",
        ));
        let seen = seen_in(&s);
        assert_eq!(seen.iter().map(|b| b.id).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(seen[1].address, "127.0.0.1:9093");
        assert_eq!(seen[1].for_time, Duration::from_millis(12_500));
        let (up, unreachable): (Vec<bool>, Vec<bool>) = seen.iter().map(|b| (b.up(), b.unreachable())).unzip();
        assert_eq!(up, [false, false, true]);
        assert_eq!(unreachable, [false, true, false], "INIT is a broker not needed yet");
        assert_eq!(seen[2].silent, Some(Duration::from_millis(120)));
    }

    #[test]
    fn a_connected_broker_that_leaves_requests_unanswered_is_unreachable() {
        let connected = |waiting: i64, silent_ms: i64| {
            let s = stats(&with_brokers(&format!(
                "127.0.0.1:9092/1,1,127.0.0.1:9092,learned,UP,60000000,{waiting},{}",
                silent_ms * 1000
            )));
            seen_in(&s)[0].unreachable()
        };
        assert!(!connected(2, 400), "answering");
        assert!(!connected(0, 60_000), "idle: nothing asked of it");
        assert!(
            connected(1, 10_000),
            "frozen: a request waits and nothing came back for 10 s"
        );
        let fresh = stats(&with_brokers("127.0.0.1:9092/1,1,127.0.0.1:9092,learned,UP,5,1,-1"));
        assert!(!seen_in(&fresh)[0].unreachable(), "a new connection's first request");
    }

    #[test]
    fn a_frozen_coordinator_shows_on_its_node_though_only_its_coordinator_connection_waits() {
        // The coordinator's own connection has a heartbeat waiting for 15 s;
        // the node's fetch connection is idle (it leads none of this
        // consumer's partitions), or was never opened.
        for learned in [
            "127.0.0.1:9094/3,3,127.0.0.1:9094,learned,UP,60000000,0,40000000",
            "127.0.0.1:9094/3,3,127.0.0.1:9094,learned,INIT,60000000,0,-1",
        ] {
            let s = stats(&with_brokers(&format!(
                "GroupCoordinator,3,127.0.0.1:9094,logical,UP,60000000,1,15000000;\
                 127.0.0.1:9093/2,2,127.0.0.1:9093,learned,UP,60000000,0,300000;{learned}"
            )));
            let seen = seen_in(&s);
            assert_eq!(seen.iter().map(|b| b.id).collect::<Vec<_>>(), [2, 3], "{learned}");
            assert!(seen[1].unreachable(), "{learned}: {:?}", seen[1]);
            assert_eq!(seen[1].address, "127.0.0.1:9094");
            assert!(!seen[0].unreachable());
        }
        // An answering coordinator connection does not hide a fetch
        // connection that is stuck, nor make an idle one look stuck.
        let stuck_fetch = stats(&with_brokers(
            "GroupCoordinator,-1,127.0.0.1:9094,logical,UP,60000000,1,200000;\
             127.0.0.1:9094/3,3,127.0.0.1:9094,learned,UP,60000000,2,12000000",
        ));
        assert!(seen_in(&stuck_fetch)[0].unreachable());
        let healthy = stats(&with_brokers(
            "GroupCoordinator,-1,127.0.0.1:9094,logical,UP,60000000,1,200000;\
             127.0.0.1:9094/3,3,127.0.0.1:9094,learned,UP,60000000,0,50000000",
        ));
        assert!(!seen_in(&healthy)[0].unreachable());
    }

    #[test]
    fn a_view_holds_the_last_brokers_set() {
        let view = BrokerView::default();
        assert!(view.get().is_empty());
        let b = BrokerSeen {
            id: 1,
            address: "127.0.0.1:9092".into(),
            state: "DOWN".into(),
            for_time: Duration::from_secs(3),
            waiting: 0,
            silent: None,
        };
        view.set(vec![b.clone()]);
        assert_eq!(view.get(), [b]);
    }
}
