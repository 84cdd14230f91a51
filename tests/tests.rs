//! Integration tests: the real server on a loopback port, real sled data
//! directories, real gRPC clients.

mod common;

mod api;
mod durability;
mod errors;
mod eval;
mod loadtest;
mod policy;
mod shared;
mod stats;
mod wire;
