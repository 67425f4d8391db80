//! Cluster tests: Herald on a three-node Apache Kafka cluster (replication
//! factor 3, min.insync.replicas 2) while nodes die, freeze and come back.
//! Run them with `scripts/test`, which starts the cluster and names its nodes
//! in `HERALD_TEST_CLUSTER`. They inject faults into the one cluster they
//! share, so they run one at a time.

// Each binary uses some of the helpers only.
#[allow(dead_code, unused_imports)]
#[path = "../it/helpers/mod.rs"]
mod helpers;

mod broker_failures;
mod nodes;
