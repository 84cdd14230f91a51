//! Integration tests: the real server on a loopback port, real sled data
//! directories, real gRPC clients.

mod common;

mod api;
mod cli;
mod decode;
mod durability;
mod errors;
mod eval;
mod full_disk;
mod hostile;
mod ledger;
mod loadtest;
mod mailgen;
mod metrics;
mod nasty;
mod one_sided;
mod panics;
mod policy;
mod shared;
mod stats;
mod trust;
mod wire;
