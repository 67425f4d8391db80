//! Retention follows the schedule: topics Herald creates keep records as
//! long as they may wait, and a topic that would let a retry expire stops
//! Herald at start (and `herald check-config --broker` says so). Records
//! that retention deletes before Herald reads them anyway (a topic changed
//! behind its back, an outage longer than a source keeps records) are
//! counted, by topic, never skipped in silence.

use std::time::Duration;

use herald::kafka::TopicSpec;
use herald::Application;
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

const EVENT: &str = r#"{"event":"invoice.paid","version":"0","time":1740133769000}"#;

fn kafka() -> herald::config::kafka::KafkaConfig {
    herald::config::Config::from_toml_overlay(&format!("[kafka]\nbrokers = \"{}\"", brokers()))
        .unwrap()
        .kafka
}

async fn tier_topic(env: &TestEnv, retention: Duration) -> String {
    let topic = format!("{}.retry.1h", env.dlq.trim_end_matches(".dlq"));
    let spec = TopicSpec {
        name: topic.clone(),
        create_retention: Some(retention),
        min_retention: None,
    };
    herald::kafka::create_topics_with(&kafka(), &[spec], 1).await.unwrap();
    topic
}

/// Why Herald, started with `env`'s configuration, refuses to run.
async fn refusal(env: &TestEnv) -> String {
    let app = Application::build(env.config("")).await.unwrap();
    let err = app
        .run_until_stopped(CancellationToken::new())
        .await
        .expect_err("Herald refuses to start");
    format!("{err:#}")
}

fn check_config(config_toml: &str) -> std::process::Output {
    herald_cli(config_toml, &["check-config", "--broker"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_topic_keeping_records_shorter_than_a_retry_may_wait_stops_herald_at_start() {
    let mut env = TestEnv::new("retention-short", &["events"], 1).await;
    // A one-hour tier (a Retry-After may push a retry to three hours) whose
    // topic keeps records for a minute.
    let topic = tier_topic(&env, Duration::from_secs(60)).await;
    env.tiers = vec![(topic.clone(), 3_600_000, None)];

    let message = refusal(&env).await;
    assert!(
        message.contains(&format!("topic `{topic}` keeps records for 1m")),
        "{message}"
    );
    assert!(message.contains("retention.ms = 60000"), "{message}");
    assert!(message.contains("may wait there for up to 3h"), "{message}");

    let output = check_config(&env.config_toml());
    assert!(!output.status.success(), "check-config fails too");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("topic `{topic}` keeps records for 1m")),
        "{stderr}"
    );

    // Kept for a day, it is long enough.
    let long = format!("{topic}.long");
    let spec = TopicSpec {
        name: long.clone(),
        create_retention: Some(Duration::from_secs(86_400)),
        min_retention: None,
    };
    herald::kafka::create_topics_with(&kafka(), &[spec], 1).await.unwrap();
    env.tiers = vec![(long, 3_600_000, None)];
    let output = check_config(&env.config_toml());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("topics are ready"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_herald_creates_keep_records_twice_as_long_as_they_may_wait() {
    let env = TestEnv::new("retention-created", &["events"], 1).await;
    let base = env.dlq.trim_end_matches(".dlq").to_owned();
    let tier = format!("{base}.own.retry.1d");
    let redrive = format!("{base}.own.redrive");
    let dlq = format!("{base}.own.dlq");
    let overlay = format!(
        "[kafka]\ncreate_missing_topics = true\ncreated_topic_partitions = 1\n\
         [dead_letter]\ntopic = \"{dlq}\"\nretention = \"30d\"\n\
         [retry]\nredrive_topic = \"{redrive}\"\ntiers = [{{ topic = \"{tier}\", delay = \"1d\" }}]\n"
    );
    let app = env.spawn(&overlay).await;
    let described = herald::kafka::describe_retention(&kafka(), &[&tier, &redrive, &dlq]).await;
    let ms = |r: &Result<herald::kafka::Retention, String>| r.as_ref().unwrap().ms;
    let day = 86_400_000;
    assert_eq!(
        ms(&described[0]),
        Some(6 * day),
        "1d tier: 3 x 1d under Retry-After, twice"
    );
    assert_eq!(
        ms(&described[1]),
        Some(6 * day),
        "the redrive topic: the longest wait of any tier, twice"
    );
    assert_eq!(ms(&described[2]), Some(30 * day), "dead_letter.retention");
    for r in &described {
        assert_eq!(r.as_ref().unwrap().cleanup_policy.as_deref(), Some("delete"));
    }
    app.stop().await;
    // What it created passes the start-up check.
    env.spawn(&overlay).await.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_topic_made_with_the_clusters_defaults_is_refused_then_fixed_keeping_its_other_settings() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let mut env = TestEnv::new("retention-fix", &["events"], 1).await;
    // Made by an operator with the cluster's default retention (7 days),
    // and a setting of their own.
    let dlq = format!("{}.defaults.dlq", env.dlq.trim_end_matches(".dlq"));
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let topic = NewTopic::new(&dlq, 1, TopicReplication::Fixed(1)).set("max.message.bytes", "2000000");
    admin
        .create_topics(&[topic], &AdminOptions::new())
        .await
        .unwrap()
        .into_iter()
        .for_each(|r| {
            r.unwrap();
        });
    env.overlay = format!("[dead_letter]\ntopic = \"{dlq}\"\n");

    let message = refusal(&env).await;
    assert!(
        message.contains(&format!("topic `{dlq}` keeps records for 7days")),
        "{message}"
    );
    assert!(
        message.contains("herald create-topics --fix-retention"),
        "the way out is named: {message}"
    );

    let config = env.config_toml().replace(
        &format!("[dead_letter]\ntopic = \"{}\"", env.dlq),
        &format!("[dead_letter]\ntopic = \"{dlq}\""),
    );
    let output = herald_cli(&config, &["create-topics", "--fix-retention"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(&format!("raised: {dlq} retention.ms 604800000 -> 2592000000")),
        "{stdout}"
    );
    let described = herald::kafka::describe_retention(&kafka(), &[&dlq]).await;
    let retention = described[0].as_ref().unwrap();
    assert_eq!(retention.ms, Some(30 * 86_400_000));
    assert_eq!(retention.cleanup_policy.as_deref(), Some("delete"));
    let kept = admin
        .describe_configs(&[rdkafka::admin::ResourceSpecifier::Topic(&dlq)], &AdminOptions::new())
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    assert_eq!(
        kept.get("max.message.bytes").and_then(|e| e.value.as_deref()),
        Some("2000000"),
        "the operator's own setting stays"
    );
    // Nothing left to raise; Herald starts.
    let again = herald_cli(&config, &["create-topics", "--fix-retention"]);
    assert!(!String::from_utf8_lossy(&again.stdout).contains("raised"));
    env.spawn("").await.stop().await;
}

fn herald_cli(config_toml: &str, args: &[&str]) -> std::process::Output {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut file, config_toml.as_bytes()).unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("--config")
        .arg(file.path())
        .args(args)
        .output()
        .unwrap()
}

/// Sets `topic`'s retention (and segment roll) to `retention`, replacing
/// the other settings it was given.
async fn set_retention(topic: &str, retention: Duration) {
    use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let ms = retention.as_millis().to_string();
    let segment = retention.min(Duration::from_secs(3600)).as_millis().to_string();
    let config = AlterConfig::new(ResourceSpecifier::Topic(topic))
        .set("retention.ms", &ms)
        .set("segment.ms", &segment)
        .set("cleanup.policy", "delete");
    let result = admin.alter_configs(&[config], &AdminOptions::new()).await.unwrap();
    assert!(result.iter().all(Result::is_ok), "{result:?}");
}

/// Has the broker delete what `topic`'s one partition holds while Herald is
/// stopped, as a retention shorter than the outage does: a second's
/// retention, then `roll` writes one more record (a new segment, so the old
/// one can go). Waits until the log starts at that record, then gives the
/// topic back a day's retention.
async fn expire_all_but_one(topic: &str, roll: impl std::future::Future<Output = ()>) {
    set_retention(topic, Duration::from_secs(1)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    roll.await;
    let end = end_offsets(topic, 1).await[0];
    eventually(
        Duration::from_secs(60),
        "retention to delete the old segment",
        || async {
            let low = tokio::task::spawn_blocking({
                let topic = topic.to_owned();
                move || {
                    use rdkafka::consumer::{BaseConsumer, Consumer};
                    let client: BaseConsumer = rdkafka::ClientConfig::new()
                        .set("bootstrap.servers", brokers())
                        .create()
                        .unwrap();
                    client
                        .fetch_watermarks(&topic, 0, Duration::from_secs(10))
                        .ok()
                        .map(|w| w.0)
                }
            })
            .await
            .unwrap()?;
            (low == end - 1).then_some(())
        },
    )
    .await;
    set_retention(topic, Duration::from_secs(86_400)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_deleted_by_retention_before_they_were_read_are_counted_by_topic() {
    let (env, receiver) = failing_once("expire-tier", 500).await;
    let tier = env.tiers[0].0.clone();
    let publisher = Publisher::new();
    let app = env.spawn("").await;
    let series = format!(r#"herald_retry_records_expired_total{{topic="{tier}"}}"#);
    // At 0 from the start, so that the alert's increase() sees the rise.
    assert_eq!(app.metric(&series).await, 0.0);
    publisher.json(env.topic(), EVENT).await;
    receiver.wait_for(2, Duration::from_secs(30)).await;
    eventually(
        Duration::from_secs(20),
        "the retry group to commit its retry",
        || async { (committed(&format!("{}.retry", env.group), &tier, 1).await == [1]).then_some(()) },
    )
    .await;
    app.stop().await;

    // Five records reach the tier while Herald is stopped, and retention
    // deletes them.
    for n in 0..5 {
        publisher.json(&tier, &format!(r#"{{"expired":{n}}}"#)).await;
    }
    expire_all_but_one(&tier, publisher.json(&tier, r#"{"kept":true}"#)).await;

    let app = env.spawn("").await;
    app.wait_metric(&series, 5.0).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_records_deleted_by_retention_before_they_were_read_are_counted_by_topic() {
    let env = TestEnv::new("expire-source", &["events"], 1).await;
    let receiver = receiving_all(&env, "all").await;
    let publisher = Publisher::new();
    let event = |n: usize| format!(r#"{{"event":"invoice.paid","version":"0","n":{n}}}"#);
    let app = env.spawn("").await;
    let series = format!(r#"herald_source_records_expired_total{{topic="{}"}}"#, env.topic());
    assert_eq!(app.metric(&series).await, 0.0);
    publisher.json(env.topic(), &event(0)).await;
    receiver.wait_for(1, Duration::from_secs(30)).await;
    eventually(Duration::from_secs(20), "the group to commit the event", || async {
        (committed(&env.group, env.topic(), 1).await == [1]).then_some(())
    })
    .await;
    app.stop().await;

    // Herald is stopped longer than the source keeps records.
    for n in 1..=5 {
        publisher.json(env.topic(), &event(n)).await;
    }
    expire_all_but_one(env.topic(), publisher.json(env.topic(), &event(6))).await;

    let app = env.spawn("").await;
    let got = receiver.wait_for(2, Duration::from_secs(30)).await;
    assert!(String::from_utf8_lossy(&got[1].body).contains(r#""n":6"#));
    app.wait_metric(&series, 5.0).await;
    assert_eq!(
        receiver.count(),
        2,
        "events 1-5 were deleted before Herald could read them"
    );
    app.stop().await;
}
