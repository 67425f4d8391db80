//! Hostile and broken records on the source topics: every one is
//! dead-lettered with its reason and counted (or, where it is an event,
//! delivered where its envelope says), and the events around it are
//! delivered. The corpus and what each item yields are listed in
//! docs/dead-letter.md ("Bad input").

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use herald::retry::codec::headers as h;
use rdkafka::message::{BorrowedHeaders, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::ClientConfig;

use crate::helpers::*;

/// The source topics' limit, raised for the 10 MB record.
const TOPIC_MAX_MESSAGE_BYTES: usize = 16 << 20;
/// Herald's producer writes records of at most this many bytes (librdkafka's
/// `message.max.bytes` default): a dead letter larger than it is a stub.
const PRODUCER_MAX_MESSAGE_BYTES: usize = 1_000_000;

/// The envelope each test topic is read with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Topic {
    /// The `jimo` preset, no tenant.
    Jimo,
    /// The `iam` preset, tenant at `/current_context/tenant_id`.
    Iam,
    /// The `jam` preset, tenant at `/data/tenant`.
    Jam,
    /// The `cloudevents` preset, no tenant.
    Ce,
    /// The `jimo` preset, tenant in the `tenant` header, event id in the key.
    Hdr,
}

const TOPICS: [Topic; 5] = [Topic::Jimo, Topic::Iam, Topic::Jam, Topic::Ce, Topic::Hdr];

impl Topic {
    fn suffix(self) -> &'static str {
        match self {
            Topic::Jimo => "jimo",
            Topic::Iam => "iam",
            Topic::Jam => "jam",
            Topic::Ce => "ce",
            Topic::Hdr => "hdr",
        }
    }
}

/// What Herald must make of a record.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Yields {
    /// A dead letter with this reason.
    DeadLetter(&'static str),
    /// Too large to dead-letter whole: a `record_too_large` stub whose
    /// detail names this reason.
    Stub(&'static str),
    /// An event after all: delivered to the webhook of no tenant, and to
    /// acme's when `acme`.
    Delivered { acme: bool },
}

/// One record of the corpus.
struct Item {
    name: &'static str,
    topic: Topic,
    key: Option<Vec<u8>>,
    /// `None`: a record without a value (a tombstone).
    value: Option<Vec<u8>>,
    /// Names and values, as bytes: a name need not be UTF-8.
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    yields: Yields,
}

fn item(name: &'static str, topic: Topic, value: &[u8], yields: Yields) -> Item {
    Item {
        name,
        topic,
        key: None,
        value: Some(value.to_vec()),
        headers: Vec::new(),
        yields,
    }
}

impl Item {
    fn header(mut self, name: &str, value: &[u8]) -> Item {
        self.headers.push((name.as_bytes().to_vec(), value.to_vec()));
        self
    }

    fn raw_header(mut self, name: &[u8], value: &[u8]) -> Item {
        self.headers.push((name.to_vec(), value.to_vec()));
        self
    }

    fn key(mut self, key: Vec<u8>) -> Item {
        self.key = Some(key);
        self
    }
}

use Yields::{DeadLetter, Delivered, Stub};

/// The 10 MB record: the start of an event whose string never ends.
const TEN_MB_START: &[u8] = br#"{"event":"big.event","pad":""#;

fn ten_mb_len() -> usize {
    10 << 20
}

const STRUCTURED: &[u8] = b"application/cloudevents+json";

/// The corpus. An item that is delivered carries `"seq":0` (or a `ce_id`
/// of `seq-0`), replaced by its sequence number when published.
fn corpus() -> Vec<Item> {
    use Topic::*;
    let deep = {
        let mut v = br#"{"event":"deep.event","x":"#.to_vec();
        v.extend(std::iter::repeat_n(b'[', 100_000));
        v.extend(std::iter::repeat_n(b']', 100_000));
        v.push(b'}');
        v
    };
    let ten_mb = {
        let mut v = TEN_MB_START.to_vec();
        v.extend(std::iter::repeat_n(b'x', ten_mb_len() - TEN_MB_START.len()));
        v // never closed: not JSON
    };
    let long_type = "t".repeat(10_000);
    let key_at_limit = vec![b'k'; PRODUCER_MAX_MESSAGE_BYTES];
    vec![
        // Not JSON, or not UTF-8.
        item("not json", Jimo, b"hello, world", DeadLetter("invalid_json")),
        item("empty value", Jimo, b"", DeadLetter("invalid_json")),
        Item {
            value: None,
            ..item("no value (tombstone)", Jimo, b"", DeadLetter("invalid_json"))
        },
        item(
            "binary garbage",
            Jimo,
            &[0, 159, 146, 150, 255, 254],
            DeadLetter("invalid_json"),
        ),
        item(
            "invalid UTF-8 in a string",
            Jimo,
            b"{\"event\":\"a\xffb\"}",
            DeadLetter("invalid_json"),
        ),
        item(
            "truncated",
            Jimo,
            br#"{"event":"tour.completed","#,
            DeadLetter("invalid_json"),
        ),
        item(
            "two documents",
            Jimo,
            br#"{"event":"a.b"}{"event":"a.b"}"#,
            DeadLetter("invalid_json"),
        ),
        item("JSON nested 100k deep", Jimo, &deep, DeadLetter("invalid_json")),
        item(
            "a key twice",
            Jimo,
            br#"{"event":"a.b","event":"c.d"}"#,
            DeadLetter("ambiguous_json"),
        ),
        item("10 MB, not JSON", Jimo, &ten_mb, Stub("invalid_json")),
        item(
            "a key at the size limit, value not JSON",
            Jimo,
            b"{not json",
            Stub("invalid_json"),
        )
        .key(key_at_limit.clone()),
        // The event type: wrong types, empty, too long.
        item(
            "type a number",
            Jimo,
            br#"{"event":7}"#,
            DeadLetter("missing_event_type"),
        ),
        item(
            "type an object",
            Jimo,
            br#"{"event":{"name":"a.b"}}"#,
            DeadLetter("missing_event_type"),
        ),
        item(
            "type an array",
            Jimo,
            br#"{"event":["a.b"]}"#,
            DeadLetter("missing_event_type"),
        ),
        item(
            "type null",
            Jimo,
            br#"{"event":null}"#,
            DeadLetter("missing_event_type"),
        ),
        item(
            "type true",
            Jimo,
            br#"{"event":true}"#,
            DeadLetter("missing_event_type"),
        ),
        item("type empty", Jimo, br#"{"event":""}"#, DeadLetter("missing_event_type")),
        item("no type", Jimo, br#"{"version":"0"}"#, DeadLetter("missing_event_type")),
        item(
            "type of 10k characters",
            Jimo,
            format!(r#"{{"event":"{long_type}"}}"#).as_bytes(),
            DeadLetter("missing_event_type"),
        ),
        item(
            "root an array",
            Jimo,
            br#"[{"event":"a.b"}]"#,
            DeadLetter("missing_event_type"),
        ),
        item("root a string", Jimo, br#""a.b""#, DeadLetter("missing_event_type")),
        item(
            "iam type a number",
            Iam,
            br#"{"event_type":1}"#,
            DeadLetter("missing_event_type"),
        ),
        item(
            "jam type an object",
            Jam,
            br#"{"id":"e","type":{}}"#,
            DeadLetter("missing_event_type"),
        ),
        // Id, time and tenant of the wrong type.
        item(
            "time an object",
            Jimo,
            br#"{"event":"a.b","time":{"ms":1}}"#,
            DeadLetter("invalid_field"),
        ),
        item(
            "time a string that is not a time",
            Jimo,
            br#"{"event":"a.b","time":"not a time","seq":0}"#,
            Delivered { acme: false },
        ),
        item(
            "time a boolean",
            Jimo,
            br#"{"event":"a.b","time":true,"seq":0}"#,
            Delivered { acme: false },
        ),
        item(
            "iam tenant an object",
            Iam,
            br#"{"event_type":"a.b","current_context":{"tenant_id":{"id":"acme"}}}"#,
            DeadLetter("invalid_field"),
        ),
        item(
            "iam tenant an array",
            Iam,
            br#"{"event_type":"a.b","current_context":{"tenant_id":["acme"]}}"#,
            DeadLetter("invalid_field"),
        ),
        item(
            "iam time an array",
            Iam,
            br#"{"event_type":"a.b","event_time":[2025],"current_context":{"tenant_id":"acme"}}"#,
            DeadLetter("invalid_field"),
        ),
        item(
            "iam tenant a number",
            Iam,
            br#"{"event_type":"a.b","current_context":{"tenant_id":42},"seq":0}"#,
            Delivered { acme: false },
        ),
        item(
            "iam unknown tenant",
            Iam,
            br#"{"event_type":"a.b","current_context":{"tenant_id":"nobody"},"seq":0}"#,
            Delivered { acme: false },
        ),
        item(
            "jam id an array",
            Jam,
            br#"{"id":["e"],"type":"a.b","data":{"tenant":"acme"}}"#,
            DeadLetter("invalid_field"),
        ),
        item(
            "jam id an object",
            Jam,
            br#"{"id":{"v":"e"},"type":"a.b","data":{"tenant":"acme"}}"#,
            DeadLetter("invalid_field"),
        ),
        item(
            "jam time an object",
            Jam,
            br#"{"id":"e","type":"a.b","created_at":{},"data":{"tenant":"acme"}}"#,
            DeadLetter("invalid_field"),
        ),
        item(
            "jam tenant an object",
            Jam,
            br#"{"id":"e","type":"a.b","data":{"tenant":{"name":"acme"}}}"#,
            DeadLetter("invalid_field"),
        ),
        item(
            "jam data not an object",
            Jam,
            br#"{"id":"e-data","type":"a.b","data":"acme","seq":0}"#,
            Delivered { acme: false },
        ),
        // Headers and keys the rules read.
        item(
            "tenant header not UTF-8",
            Hdr,
            br#"{"event":"a.b"}"#,
            DeadLetter("not_utf8"),
        )
        .header("tenant", b"ac\xffme"),
        item(
            "key (event id) not UTF-8",
            Hdr,
            br#"{"event":"a.b"}"#,
            DeadLetter("not_utf8"),
        )
        .header("tenant", b"acme")
        .key(b"\xc3\x28".to_vec()),
        item(
            "unknown tenant header",
            Hdr,
            br#"{"event":"a.b","seq":0}"#,
            Delivered { acme: false },
        )
        .header("tenant", b"nobody"),
        item(
            "a key (event id) at the size limit",
            Hdr,
            br#"{"event":"a.b","seq":0}"#,
            Delivered { acme: true },
        )
        .header("tenant", b"acme")
        .key(key_at_limit),
        item(
            "a header no rule reads, not UTF-8",
            Jimo,
            br#"{"event":"a.b","seq":0}"#,
            Delivered { acme: false },
        )
        .header("trace", b"\xff\xfe"),
        item(
            "a header name not UTF-8",
            Jimo,
            br#"{"event":"a.b","seq":0}"#,
            Delivered { acme: false },
        )
        .raw_header(b"tr\xffce", b"1"),
        // CloudEvents, binary mode.
        item("no ce_ headers", Ce, b"{}", DeadLetter("not_cloudevent")),
        item("batch mode", Ce, b"[]", DeadLetter("not_cloudevent"))
            .header("content-type", b"application/cloudevents-batch+json"),
        item(
            "ce_specversion without ce_type",
            Ce,
            b"{}",
            DeadLetter("missing_event_type"),
        )
        .header("ce_specversion", b"1.0")
        .header("ce_id", b"1")
        .header("ce_source", b"/s"),
        item("ce_type empty", Ce, b"{}", DeadLetter("missing_event_type"))
            .header("ce_specversion", b"1.0")
            .header("ce_type", b""),
        item("ce_type of 10k characters", Ce, b"{}", DeadLetter("missing_event_type"))
            .header("ce_specversion", b"1.0")
            .header("ce_type", long_type.as_bytes()),
        item("ce_type not UTF-8", Ce, b"{}", DeadLetter("not_utf8")).header("ce_type", b"a\xffb"),
        item("ce_source not UTF-8", Ce, b"{}", DeadLetter("not_utf8"))
            .header("ce_type", b"a.b")
            .header("ce_source", b"\xc3\x28"),
        item("content-type not UTF-8", Ce, b"{}", DeadLetter("not_utf8"))
            .header("ce_type", b"a.b")
            .header("content-type", b"\xffapplication/json"),
        item(
            "ce_type only (no id, source, specversion)",
            Ce,
            br#"{"seq":0}"#,
            Delivered { acme: false },
        )
        .header("ce_type", b"a.b"),
        // CloudEvents, structured mode.
        item("structured, not JSON", Ce, b"<event/>", DeadLetter("invalid_json")).header("content-type", STRUCTURED),
        item(
            "structured, no type",
            Ce,
            br#"{"specversion":"1.0","id":"1","source":"/s"}"#,
            DeadLetter("missing_event_type"),
        )
        .header("content-type", STRUCTURED),
        item(
            "structured, type a number",
            Ce,
            br#"{"specversion":"1.0","type":3,"id":"1","source":"/s"}"#,
            DeadLetter("missing_event_type"),
        )
        .header("content-type", STRUCTURED),
        item(
            "structured, id an array",
            Ce,
            br#"{"specversion":"1.0","type":"a.b","id":[1],"source":"/s"}"#,
            DeadLetter("invalid_field"),
        )
        .header("content-type", STRUCTURED),
        item(
            "structured, source an object",
            Ce,
            br#"{"specversion":"1.0","type":"a.b","id":"1","source":{}}"#,
            DeadLetter("invalid_field"),
        )
        .header("content-type", STRUCTURED),
        item(
            "structured, time an object",
            Ce,
            br#"{"specversion":"1.0","type":"a.b","id":"1","source":"/s","time":{}}"#,
            DeadLetter("invalid_field"),
        )
        .header("content-type", STRUCTURED),
        item(
            "structured, type only (no id, source, specversion)",
            Ce,
            br#"{"type":"a.b","seq":0}"#,
            Delivered { acme: false },
        )
        .header("content-type", STRUCTURED),
    ]
}

/// A good event of `topic` with sequence number `seq`: delivered to the
/// webhook of no tenant, and to acme's where the topic has a tenant.
fn good(topic: Topic, seq: usize) -> Item {
    let body = match topic {
        Topic::Jimo => format!(r#"{{"event":"good.event","time":1740133769000,"seq":{seq}}}"#),
        Topic::Iam => format!(r#"{{"event_type":"good.event","current_context":{{"tenant_id":"acme"}},"seq":{seq}}}"#),
        Topic::Jam => {
            format!(
                r#"{{"id":"good-{seq}","type":"good.event","created_at":"2026-01-01T00:00:00Z","data":{{"tenant":"acme"}},"seq":{seq}}}"#
            )
        }
        Topic::Ce => format!(r#"{{"seq":{seq}}}"#),
        Topic::Hdr => format!(r#"{{"event":"good.event","seq":{seq}}}"#),
    };
    let good = item("good", topic, body.as_bytes(), Delivered { acme: false });
    match topic {
        Topic::Jimo => good,
        Topic::Iam | Topic::Jam => Item {
            yields: Delivered { acme: true },
            ..good
        },
        Topic::Ce => good
            .header("ce_specversion", b"1.0")
            .header("ce_type", b"good.event")
            .header("ce_id", format!("good-{seq}").as_bytes())
            .header("ce_source", b"/corpus"),
        Topic::Hdr => Item {
            yields: Delivered { acme: true },
            ..good
        }
        .header("tenant", b"acme")
        .key(format!("good-{seq}").into_bytes()),
    }
}

/// Publishes `item` as it is (raw key, value and header bytes); its offset.
async fn publish(producer: &FutureProducer, topic: &str, item: &Item) -> i64 {
    let headers = OwnedHeaders::new();
    for (name, value) in &item.headers {
        // SAFETY: the native headers of `headers` (rdkafka's borrowed view
        // is at their address), alive for the call; librdkafka copies the
        // name and value. Its Rust API takes only UTF-8 names.
        #[allow(unsafe_code)]
        let err = unsafe {
            rdkafka::bindings::rd_kafka_header_add(
                headers.as_borrowed() as *const BorrowedHeaders as *mut rdkafka::bindings::rd_kafka_headers_t,
                name.as_ptr().cast(),
                name.len() as isize,
                value.as_ptr().cast(),
                value.len() as isize,
            )
        };
        assert_eq!(err, rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR);
    }
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
    if let Some(value) = &item.value {
        record = record.payload(value.as_slice());
    }
    if let Some(key) = &item.key {
        record = record.key(key.as_slice());
    }
    let delivered = producer
        .send(record, Timeout::After(Duration::from_secs(60)))
        .await
        .map_err(|(e, _)| e)
        .unwrap_or_else(|e| panic!("{} published: {e}", item.name));
    assert_eq!(delivered.partition, 0);
    delivered.offset
}

/// The sequence number in a delivered body (`"seq":N`).
fn seq_of(body: &[u8]) -> usize {
    let value: serde_json::Value = serde_json::from_slice(body).expect("a delivered body is JSON");
    value["seq"].as_u64().expect("a delivered body has its seq") as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corpus_of_bad_records_is_dead_lettered_with_reasons_and_the_events_around_each_are_delivered() {
    let suffixes: Vec<&str> = TOPICS.iter().map(|t| t.suffix()).collect();
    let env = TestEnv::new("bad-input", &suffixes, 1).await;
    let topic_name = |t: Topic| env.topics[TOPICS.iter().position(|x| *x == t).unwrap()].clone();
    for t in TOPICS {
        set_max_message_bytes(&topic_name(t), &TOPIC_MAX_MESSAGE_BYTES.to_string()).await;
    }
    let all = receiving_all(&env, "all").await;
    let acme = TestReceiver::ok().await;
    let mut acme_webhook = webhook("acme", &acme.url("/"), &["*"]);
    acme_webhook.tenant = Some("acme".into());
    env.store().await.put(&acme_webhook).await.unwrap();
    let overlay = format!(
        r#"
[envelope.default]
preset = "jimo"
[envelope.topics."{iam}"]
preset = "iam"
tenant = "/current_context/tenant_id"
[envelope.topics."{jam}"]
preset = "jam"
tenant = "/data/tenant"
[envelope.topics."{ce}"]
preset = "cloudevents"
[envelope.topics."{hdr}"]
preset = "jimo"
tenant = "header:tenant"
event_id = "key"
"#,
        iam = topic_name(Topic::Iam),
        jam = topic_name(Topic::Jam),
        ce = topic_name(Topic::Ce),
        hdr = topic_name(Topic::Hdr),
    );
    let app = env.spawn(&overlay).await;
    app.wait_webhooks(2).await;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("message.max.bytes", TOPIC_MAX_MESSAGE_BYTES.to_string())
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    // Each bad record, then a good event on the same partition.
    let mut seq = 0;
    let mut letters_expected: BTreeMap<(String, i64), (&'static str, Yields)> = BTreeMap::new();
    let (mut to_all, mut to_acme) = (BTreeSet::new(), BTreeSet::new());
    let mut delivered = |yields: &Yields, seq: usize| {
        if let Delivered { acme } = yields {
            to_all.insert(seq);
            if *acme {
                to_acme.insert(seq);
            }
        }
    };
    let items = corpus();
    for bad in items {
        seq += 1;
        let mut bad = bad;
        if let (Delivered { .. }, Some(value)) = (&bad.yields, &bad.value) {
            let text = String::from_utf8(value.clone()).unwrap();
            assert!(text.contains(r#""seq":0"#), "{}", bad.name);
            bad.value = Some(text.replace(r#""seq":0"#, &format!(r#""seq":{seq}"#)).into_bytes());
        }
        let topic = topic_name(bad.topic);
        let offset = publish(&producer, &topic, &bad).await;
        match &bad.yields {
            Delivered { .. } => delivered(&bad.yields, seq),
            yields => {
                letters_expected.insert((topic.clone(), offset), (bad.name, yields.clone()));
            }
        }
        seq += 1;
        let good = good(bad.topic, seq);
        publish(&producer, &topic, &good).await;
        delivered(&good.yields, seq);
    }

    // Every dead letter, with its reason.
    let letters = read_topic(&env.dlq, letters_expected.len(), Duration::from_secs(120)).await;
    let mut seen = BTreeMap::new();
    for letter in &letters {
        let at = (
            letter.header(h::SOURCE_TOPIC).to_owned(),
            letter.header(h::SOURCE_OFFSET).parse::<i64>().unwrap(),
        );
        let Some((name, yields)) = letters_expected.get(&at) else {
            panic!("an unexpected dead letter: {letter:?}");
        };
        match yields {
            DeadLetter(reason) => {
                assert_eq!(
                    letter.header(h::REASON),
                    *reason,
                    "{name}: {}",
                    letter.header(h::DETAIL)
                );
                assert!(letter.header(h::STUB).is_empty(), "{name}");
            }
            Stub(reason) => {
                assert_eq!(letter.header(h::REASON), "record_too_large", "{name}");
                assert!(
                    letter.header(h::DETAIL).contains(&format!("({reason}: ")),
                    "{name}: {}",
                    letter.header(h::DETAIL)
                );
                assert!(
                    letter.value.is_empty() && letter.key.is_none(),
                    "{name}: a stub carries neither"
                );
            }
            Delivered { .. } => unreachable!(),
        }
        assert!(!letter.header(h::DETAIL).is_empty(), "{name}");
        // Where the reason alone does not say enough.
        let detail = letter.header(h::DETAIL);
        let expect_in_detail = match *name {
            "JSON nested 100k deep" => "recursion limit exceeded",
            "type of 10k characters" | "ce_type of 10k characters" => "longer than 256 bytes",
            "a key twice" => "the key `event` appears more than once",
            "iam tenant an object" => "the tenant at `/current_context/tenant_id` is an object, not text",
            "jam id an array" => "the event id at `/id` is an array, not text",
            "structured, source an object" => "the source at `/source` is an object, not text",
            "tenant header not UTF-8" => "`tenant` is not UTF-8",
            "key (event id) not UTF-8" => "`key` is not UTF-8",
            "ce_source not UTF-8" => "`ce_source` is not UTF-8",
            "batch mode" => "batch mode",
            _ => "",
        };
        assert!(detail.contains(expect_in_detail), "{name}: {detail}");
        if *name == "a key at the size limit, value not JSON" {
            assert_eq!(
                letter.header(h::SOURCE_KEY_BYTES),
                PRODUCER_MAX_MESSAGE_BYTES.to_string()
            );
        }
        if *name == "10 MB, not JSON" {
            assert!(
                letter.header(h::STUB).contains(&format!("{} bytes", ten_mb_len())),
                "{name}"
            );
        }
        assert!(seen.insert(at, *name).is_none(), "{name}: dead-lettered twice");
    }
    let missing: Vec<_> = letters_expected
        .iter()
        .filter(|(at, _)| !seen.contains_key(*at))
        .map(|(_, (name, _))| *name)
        .collect();
    assert!(missing.is_empty(), "not dead-lettered: {missing:?}");

    // Every good event (and every bad record that is an event after all)
    // delivered, where its tenant says.
    let received = |r: &TestReceiver| r.received().iter().map(|x| seq_of(&x.body)).collect::<BTreeSet<_>>();
    for (receiver, expected, whose) in [(&all, &to_all, "no tenant"), (&acme, &to_acme, "acme")] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while received(receiver) != *expected && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let got = received(receiver);
        let (missing, extra): (Vec<_>, Vec<_>) =
            (expected.difference(&got).collect(), got.difference(expected).collect());
        if !missing.is_empty() || !extra.is_empty() {
            // What else was dead-lettered, and why.
            let others: Vec<String> = read_topic(&env.dlq, usize::MAX, Duration::from_secs(5))
                .await
                .iter()
                .filter(|l| {
                    let at = (
                        l.header(h::SOURCE_TOPIC).to_owned(),
                        l.header(h::SOURCE_OFFSET).parse::<i64>().unwrap_or(-1),
                    );
                    !letters_expected.contains_key(&at)
                })
                .map(|l| format!("{}: {}", l.header(h::REASON), l.header(h::DETAIL)))
                .collect();
            panic!("the webhook of {whose}: missing {missing:?}, unexpected {extra:?}; other dead letters: {others:?}");
        }
    }
    env.wait_finished().await;
    assert_eq!(received(&all), to_all, "nothing else reached the webhook of no tenant");
    assert_eq!(received(&acme), to_acme, "acme's webhook got only acme's events");
    assert!(app.is_running());

    // Counted by reason (a stub's reason is the record's own).
    let mut by_reason: BTreeMap<&str, f64> = BTreeMap::new();
    for (_, yields) in letters_expected.values() {
        if let DeadLetter(reason) | Stub(reason) = yields {
            *by_reason.entry(reason).or_default() += 1.0;
        }
    }
    let mut letters_by_reason: BTreeMap<&str, f64> = BTreeMap::new();
    for (_, yields) in letters_expected.values() {
        if let DeadLetter(reason) = yields {
            *letters_by_reason.entry(reason).or_default() += 1.0;
        }
    }
    for (reason, n) in letters_by_reason {
        assert_eq!(
            app.metric(&format!(r#"herald_dead_letters_total{{reason="{reason}"}}"#))
                .await,
            n,
            "{reason}"
        );
    }
    for (reason, n) in by_reason {
        assert_eq!(
            app.metric(&format!(r#"herald_events_unroutable_total{{reason="{reason}"}}"#))
                .await,
            n,
            "{reason}"
        );
    }
    assert_eq!(
        app.metric(r#"herald_dead_letters_total{reason="record_too_large"}"#)
            .await,
        2.0
    );
    app.stop().await;
}

/// rdkafka's header reader panics on a header name that is not UTF-8: the
/// record would stop its partition, on every replica and at every restart.
/// It is read (its invalid bytes replaced), delivered, and so is the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_name_that_is_not_utf8_neither_crashes_nor_stops_the_partition() {
    let env = TestEnv::new("header-name", &["events"], 1).await;
    let receiver = receiving_all(&env, "all").await;
    let app = env.spawn("").await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let odd = item(
        "a header name not UTF-8",
        Topic::Jimo,
        br#"{"event":"a.b","seq":1}"#,
        Delivered { acme: false },
    )
    .raw_header(b"tr\xffce", b"1")
    .header("after", b"2");
    publish(&producer, env.topic(), &odd).await;
    publish(&producer, env.topic(), &good(Topic::Jimo, 2)).await;
    let received = receiver.wait_for(2, Duration::from_secs(30)).await;
    let seqs: BTreeSet<usize> = received.iter().map(|r| seq_of(&r.body)).collect();
    assert_eq!(seqs, BTreeSet::from([1, 2]));
    env.wait_finished().await;
    assert!(app.is_running());
    app.stop().await;
}
