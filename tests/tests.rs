//! Integration tests: the real server on a loopback port, real sled data
//! directories, real gRPC clients.

mod common;

mod api;
mod decode;
mod durability;
mod errors;
mod loadtest;
mod policy;
mod shared;
mod stats;
mod trust;
mod wire;
