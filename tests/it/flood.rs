//! No client exhausts a replica: thousands of idle connections and hundreds
//! of half-sent requests against the management API of a Herald process,
//! while events flow. The listener holds no more than its cap, closes what
//! does not finish within its header timeout, answers again afterwards, and
//! deliveries go on; the process's memory stays bounded.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::api::*;
use crate::helpers::*;

const IDLE: usize = 3000;
const HALF_SENT: usize = 300;
const CAP: usize = 500;

/// Resident memory of `pid`, now and at its peak, in MB.
fn rss_mb(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_and_half_sent_connections_take_neither_the_api_nor_deliveries() {
    let env = TestEnv::new("flood", &["events"], 1).await;
    let receiver = receiving_all(&env, "all").await;
    let admin = admin_overlay("24h").replace(
        "[admin]\n",
        &format!("[admin]\nmax_connections = {CAP}\nheader_read_timeout = \"2s\"\nrequest_timeout = \"5s\"\n"),
    );
    let herald = HeraldProcess::spawn(&format!("{}{admin}", env.config_toml()));
    herald.wait_ready().await;
    let pid = herald.pid();
    let (rss_before, _) = rss_mb(pid);

    // Events flow throughout, each to be delivered.
    let topic = env.topic().to_owned();
    let producing = tokio::spawn(async move {
        let publisher = Publisher::new();
        for n in 0..200 {
            publisher
                .json(&topic, &format!(r#"{{"event":"flood.tick","version":"0","n":{n}}}"#))
                .await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });

    // The flood: connections that send nothing, and requests whose head never ends.
    let started = Instant::now();
    let mut held = Vec::with_capacity(IDLE + HALF_SENT);
    for i in 0..IDLE + HALF_SENT {
        let Ok(mut stream) = TcpStream::connect(herald.admin).await else {
            continue;
        };
        if i >= IDLE {
            let _ = stream
                .write_all(b"GET /v1/webhooks HTTP/1.1\r\nhost: herald\r\nauthorization: Bearer x")
                .await;
        }
        held.push(stream);
    }
    let open = metric_at(herald.ops, r#"herald_http_connections{listener="admin"}"#).await;
    assert!(open <= CAP as f64, "{open} connections held, over the cap of {CAP}");
    assert!(
        metric_at(herald.ops, r#"herald_http_connections_refused_total{listener="admin"}"#).await > 0.0,
        "connections past the cap are refused"
    );

    // Deliveries go on while the flood is held.
    let at_flood = receiver.count();
    let delivered_during = eventually(Duration::from_secs(10), "a delivery during the flood", || async {
        let now = receiver.count();
        (now > at_flood).then_some(now - at_flood)
    })
    .await;

    // Every held connection is closed by Herald: refused at once past the
    // cap, or at the header timeout.
    // (A read that returns at all: end of stream, a reset, or the 408 sent
    // before closing a half-sent request.)
    let closed = futures::future::join_all(held.iter_mut().map(|s| async move {
        let mut byte = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(30), s.read(&mut byte))
            .await
            .is_ok()
    }))
    .await;
    let closed_in = started.elapsed();
    assert!(
        closed.iter().all(|c| *c),
        "a connection stayed open past the header timeout"
    );

    // The API answers again, and every event arrives.
    let api = Api::at(herald.admin);
    let reply = api.call(reqwest::Method::GET, "/v1/webhooks", OPS, None).await;
    assert_eq!(reply.status, 200);
    producing.await.unwrap();
    receiver.wait_for(200, Duration::from_secs(60)).await;
    let (rss_after, peak) = rss_mb(pid);
    println!(
        "flood: {IDLE} idle + {HALF_SENT} half-sent connections, cap {CAP}: all closed within {closed_in:.1?}; \
         deliveries went on during it ({delivered_during} more within the first check); RSS {rss_before:.0} MB before, {rss_after:.0} MB after, \
         peak {peak:.0} MB"
    );
    assert!(peak < 256.0, "peak RSS {peak:.0} MB");
}
