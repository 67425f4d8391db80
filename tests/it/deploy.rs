//! The dashboards and alerts in deploy/ can never drift from the code: every
//! Herald metric they name must exist in a running Herald's /metrics.

use std::collections::BTreeSet;

use crate::helpers::*;

fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("herald_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let name = &text[start..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|base| base.ends_with("_seconds")))
            .unwrap_or(name);
        names.insert(family.to_owned());
        i = end;
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_in_the_alerts_and_dashboard_exists() {
    let env = TestEnv::new("drift", &["events"], 1)
        .await
        .with_tiers(&[(60_000, None), (120_000, None)], 1)
        .await;
    let app = env.spawn("").await;
    // Lag series appear once the group has committed an offset.
    Publisher::new()
        .json(env.topic(), r#"{"event":"nobody.listens"}"#)
        .await;
    let exposition = eventually(std::time::Duration::from_secs(20), "consumer lag series", || async {
        let text = app.metrics().await;
        text.contains("herald_consumer_lag_messages{").then_some(text)
    })
    .await;
    let exported: BTreeSet<String> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect();

    let mut referenced = BTreeSet::new();
    for file in [
        "deploy/prometheus/alerts.yml",
        "deploy/prometheus/alerts_test.yml",
        "deploy/grafana/dashboards/herald.json",
        "docs/operations.md",
    ] {
        let text = std::fs::read_to_string(repo_path(file)).unwrap();
        let names = metric_names(&text);
        assert!(!names.is_empty(), "{file} names no metric");
        referenced.extend(names);
    }
    let missing: Vec<&String> = referenced.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "named in deploy/ or docs/ but not exported: {missing:?}"
    );
    app.stop().await;
}
