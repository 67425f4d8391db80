//! Producing test events ([`Publisher`]).

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::ClientConfig;

use super::*;

/// Produces test records.
pub struct Publisher {
    producer: FutureProducer,
}

impl Publisher {
    pub fn new() -> Publisher {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("linger.ms", "5")
            .create()
            .expect("producer");
        Publisher { producer }
    }

    pub async fn send(&self, topic: &str, key: Option<&str>, value: &[u8], headers: &[(&str, &str)]) {
        let mut h = OwnedHeaders::new();
        for (k, v) in headers {
            h = h.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut record = FutureRecord::to(topic).payload(value).headers(h);
        if let Some(key) = key {
            record = record.key(key);
        }
        self.producer
            .send(record, Timeout::After(Duration::from_secs(30)))
            .await
            .map_err(|(e, _)| e)
            .expect("record produced");
    }

    pub async fn json(&self, topic: &str, value: &str) {
        self.send(topic, None, value.as_bytes(), &[]).await
    }

    /// Publishes `value` as an event of `tenant`, in the `tenant` header that
    /// [`TENANT_HEADER_RULES`] read.
    pub async fn tenant_event(&self, topic: &str, tenant: &str, value: &[u8]) {
        self.send(topic, None, value, &[("tenant", tenant)]).await
    }
}

/// Envelope rules for tests of tenants: the Jimo envelope, the tenant in a
/// `tenant` header (see [`Publisher::tenant_event`]).
pub const TENANT_HEADER_RULES: &str = "[envelope.default]\npreset = \"jimo\"\ntenant = \"header:tenant\"\n";
