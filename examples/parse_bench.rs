//! What recognising an event's envelope costs, per event, on one core: the
//! JSON parse (validation, the duplicate-key check, the top-level index) and
//! the lookups of the preset's fields. Prints a table; needs no broker.
//!
//!     cargo run --release --example parse_bench [-- --iterations 200000]
//!
//! The events: the first of each `examples/events/*.jsonl` in its own
//! envelope, the 1 KB record of the end-to-end benchmark, a 16 KB event with
//! nested data, and an event whose data is one object of 1,000 keys.

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use herald::event::{RecordHeader, SourceRecord};
use herald::routing::envelope::{EnvelopeRules, Preset, Recogniser};

/// Runs per event; the median is printed.
const RUNS: usize = 5;

fn recogniser(preset: Preset) -> Recogniser {
    EnvelopeRules {
        preset: Some(preset),
        ..Default::default()
    }
    .compile()
    .expect("a preset compiles")
}

fn record(value: Vec<u8>, content_type: Option<&str>) -> SourceRecord {
    SourceRecord {
        topic: "bench".into(),
        partition: 0,
        offset: 0,
        timestamp_ms: None,
        key: None,
        value: Bytes::from(value),
        headers: content_type
            .map(|ct| RecordHeader {
                name: "content-type".into(),
                value: Some(Bytes::copy_from_slice(ct.as_bytes())),
            })
            .into_iter()
            .collect(),
    }
}

fn first_line(file: &str) -> Vec<u8> {
    let path = format!("{}/examples/events/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    text.lines().next().expect("an event").as_bytes().to_vec()
}

/// The end-to-end benchmark's record: 1 KB, mostly one padding string.
fn one_kb() -> Vec<u8> {
    let mut out = br#"{"event":"bench.tick","version":"0","n":1,"pad":""#.to_vec();
    out.resize(1024 - 2, b'x');
    out.extend_from_slice(b"\"}");
    out
}

/// About 16 KB: 100 nested objects of 8 members each.
fn nested() -> Vec<u8> {
    let items: Vec<String> = (0..100)
        .map(|i| {
            format!(
                r#"{{"id":"item-{i}","qty":{i},"price":{i}.5,"sku":"SKU-{i:06}","tags":["a","b"],"meta":{{"k":"v","n":null}},"ok":true,"note":"lorem ipsum dolor sit amet, consectetur adipiscing elit"}}"#
            )
        })
        .collect();
    format!(
        r#"{{"event":"order.paid","version":"0","time":1740133769000,"data":{{"items":[{}]}}}}"#,
        items.join(",")
    )
    .into_bytes()
}

/// Data that is one object of 1,000 members.
fn wide() -> Vec<u8> {
    let members: Vec<String> = (0..1000).map(|i| format!(r#""field_{i}":{i}"#)).collect();
    format!(
        r#"{{"event":"profile.updated","version":"0","data":{{{}}}}}"#,
        members.join(",")
    )
    .into_bytes()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut iterations: usize = 200_000;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--iterations" => {
                iterations = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--iterations takes a number")
            }
            other => panic!("unknown argument `{other}`"),
        }
    }
    let cases = [
        ("jimo", recogniser(Preset::Jimo), record(first_line("jimo.jsonl"), None)),
        ("iam", recogniser(Preset::Iam), record(first_line("iam.jsonl"), None)),
        ("jam", recogniser(Preset::Jam), record(first_line("jam.jsonl"), None)),
        (
            "cloudevents",
            recogniser(Preset::Cloudevents),
            record(
                first_line("cloudevents-structured.jsonl"),
                Some("application/cloudevents+json"),
            ),
        ),
        (
            "1 KB (end-to-end bench)",
            recogniser(Preset::Jimo),
            record(one_kb(), None),
        ),
        ("16 KB nested", recogniser(Preset::Jimo), record(nested(), None)),
        ("1,000-key object", recogniser(Preset::Jimo), record(wide(), None)),
    ];
    println!("{:<26} {:>7} {:>12} {:>10}", "event", "bytes", "ns/event", "MB/s");
    for (name, recogniser, record) in &cases {
        recogniser.recognise(record).expect("the event is recognised");
        let per_event = (iterations * 1000 / record.value.len().max(1)).clamp(1_000, iterations);
        let mut runs: Vec<f64> = (0..RUNS)
            .map(|_| {
                let started = Instant::now();
                for _ in 0..per_event {
                    black_box(recogniser.recognise(black_box(record)).ok());
                }
                started.elapsed().as_nanos() as f64 / per_event as f64
            })
            .collect();
        runs.sort_by(f64::total_cmp);
        let ns = runs[RUNS / 2];
        let mb_s = record.value.len() as f64 / ns * 1e9 / 1e6;
        println!("{name:<26} {:>7} {ns:>12.0} {mb_s:>10.0}", record.value.len());
    }
}
