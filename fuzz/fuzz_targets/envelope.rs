//! A source record as any producer may write it, read by each envelope's
//! rules (the presets, and rules naming a header, the key and an arbitrary
//! pointer), and an arbitrary JSON pointer into its value. Nothing may
//! panic, and what is recognised obeys the envelope's own limits.
#![no_main]

use std::sync::Arc;

use arbitrary::Arbitrary;
use bytes::Bytes;
use herald::event::{RecordHeader, SourceRecord};
use herald::routing::envelope::{EnvelopeRules, Preset, Source, MAX_EVENT_TYPE_LEN};
use herald::routing::json::{self, Document};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    value: &'a [u8],
    key: Option<&'a [u8]>,
    headers: Vec<(&'a str, Option<&'a [u8]>)>,
    pointer: &'a str,
}

fuzz_target!(|input: Input<'_>| {
    let record = SourceRecord {
        topic: Arc::from("events"),
        partition: 0,
        offset: 0,
        timestamp_ms: None,
        key: input.key.map(Bytes::copy_from_slice),
        value: Bytes::copy_from_slice(input.value),
        headers: input
            .headers
            .iter()
            .map(|(name, value)| RecordHeader {
                name: (*name).to_owned(),
                value: value.map(Bytes::copy_from_slice),
            })
            .collect(),
    };
    let pointer = || Some(Source::Pointer(format!("/{}", input.pointer)));
    let mut rules: Vec<EnvelopeRules> = [Preset::Jimo, Preset::Iam, Preset::Jam, Preset::Cloudevents]
        .into_iter()
        .map(|preset| EnvelopeRules {
            preset: Some(preset),
            tenant: pointer(),
            ..EnvelopeRules::default()
        })
        .collect();
    rules.push(EnvelopeRules {
        event_type: Some(Source::Header("ce_type".into())),
        event_id: Some(Source::Key),
        event_time: pointer(),
        tenant: Some(Source::Header("tenant".into())),
        ..EnvelopeRules::default()
    });
    rules.push(EnvelopeRules {
        event_type: pointer(),
        event_id: Some(Source::Pointer("/id".into())),
        ..EnvelopeRules::default()
    });
    for rules in rules {
        let recogniser = rules.compile().expect("rules with an event type compile");
        if let Ok(meta) = recogniser.recognise(&record) {
            assert!(!meta.event_type.is_empty());
            assert!(meta.event_type.len() <= MAX_EVENT_TYPE_LEN);
        }
    }
    if let Ok(document) = Document::parse(input.value) {
        for p in [input.pointer.to_owned(), format!("/{}", input.pointer)] {
            if let Some(value) = document.pointer(&p) {
                let _ = json::string(value);
                let _ = json::scalar_text(value);
            }
        }
    }
});
