//! `herald replay`: re-drives dead letters straight from the dead-letter
//! topic, without the management API (for a whole tenant, reason or time
//! range at once).

use std::sync::Arc;

use crate::config::Config;
use crate::retry::replay::{ReplayFilter, ReplayOptions, ReplaySummary};

use super::tables::ReplayProgress;

/// Replays what `filter` selects, showing progress, and prints the outcome.
pub async fn run(config: &Config, filter: &ReplayFilter, options: ReplayOptions) -> anyhow::Result<()> {
    let shown = Arc::new(ReplayProgress::new());
    let progress = {
        let shown = shown.clone();
        move |s: &ReplaySummary| shown.update(s.total, s.scanned, s.matched, s.replayed, false)
    };
    let producer: rdkafka::producer::FutureProducer = crate::kafka::producer_config(&config.kafka).create()?;
    let summary = crate::retry::replay::replay(config, &producer, filter, options, progress).await?;
    shown.update(summary.total, summary.scanned, summary.matched, summary.replayed, true);
    println!("{}", outcome(&summary, options));
    Ok(())
}

/// The line printed at the end.
fn outcome(summary: &ReplaySummary, options: ReplayOptions) -> String {
    if options.dry_run {
        format!(
            "dry run: {} of {} dead letters match; {} would be replayed \
             ({} are not deliveries, {} were re-driven before{})",
            summary.matched,
            summary.scanned,
            summary.would_replay(),
            summary.skipped,
            summary.already_redriven,
            if options.force { " and would be again" } else { "" }
        )
    } else {
        format!(
            "replayed {} of {} matching dead letters ({} scanned; {} are not deliveries; \
             {} were re-driven before, skipped: --force re-drives them)",
            summary.replayed, summary.matched, summary.scanned, summary.skipped, summary.already_redriven
        )
    }
}
