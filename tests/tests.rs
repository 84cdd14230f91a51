//! Integration tests: the real server on a loopback port, real sled data
//! directories, real gRPC clients. The server-level semantics tests run on
//! both stores, sled and a real Redis Cluster (`on_both_stores!` in
//! `common.rs`; docs/SCALING.md, "Tests").

mod common;

mod api;
mod backends;
mod backup;
mod cli;
mod compact;
mod connections;
mod corruption;
mod decode;
mod delivered;
mod durability;
mod errors;
mod eval;
mod export;
mod full_disk;
mod hostile;
mod ledger;
mod loadtest;
mod mailgen;
mod metrics;
mod nasty;
mod one_sided;
mod overload;
mod panics;
mod policy;
mod quota;
mod redis_cluster;
mod redis_ops;
mod redis_store;
mod shared;
mod soak;
mod stats;
mod trust;
mod users;
mod wire;
