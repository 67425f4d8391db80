//! Retention follows the schedule: topics Herald creates keep records as
//! long as they may wait, and a topic that would let a retry expire stops
//! Herald at start (and `herald check-config --broker` says so).

use std::time::Duration;

use herald::kafka::TopicSpec;
use herald::Application;
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

fn kafka() -> herald::config::KafkaConfig {
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
