//! Herald on a secured Apache Kafka: TLS, SASL/SCRAM and both together, with
//! ACLs that allow Herald's principal its own topics and groups only (the
//! broker `start_secure_kafka` in scripts/lib.sh makes, with a test CA of
//! its own). Run them with `scripts/test`, which starts that broker and names
//! it in `HERALD_TEST_SECURE_KAFKA` (its super-user listener; the others
//! follow it) and `HERALD_TEST_SECURE_KAFKA_TLS` (its certificates).

// Each binary uses some of the helpers only.
#[allow(dead_code, unused_imports)]
#[path = "../it/helpers/mod.rs"]
mod helpers;

mod secured;
