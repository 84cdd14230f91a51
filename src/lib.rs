//! chaff: per-user Bayesian spam training and scoring.
//!
//! # Layout
//!
//! | module       | concern                                                     | names   |
//! |--------------|-------------------------------------------------------------|---------|
//! | [`types`]    | the shared nouns: `UserId`, `MessageId`, `Label`, `Verdict` | —       |
//! | [`tokenize`] | raw message bytes → token ids (MIME via `mail-parser`)     | —       |
//! | [`classify`] | per-user counts, the shared model, the Robinson–Fisher score and the blend | — |
//! | [`mail`]     | facts read from headers: authentication, From, unsubscribe  | —       |
//! | [`policy`]   | settings, allow/block lists, score → action and reason      | —       |
//! | [`decisions`]| the decision log support queries (background writer)        | —       |
//! | [`store`]    | durable ledger, journal and model snapshots                 | sled    |
//! | [`engine`]   | use cases: score, train, forget, describe/delete a user, seed | —     |
//! | [`service`]  | gRPC adapter, health, reflection                            | tonic   |
//! | [`error`]    | the library's error enum                                    | —       |
//! | [`auth`]     | API keys, scopes per RPC, tenants, per-caller limits        | —       |
//! | [`metrics`]  | lock-free latency histograms (read by `service::metrics`)   | —       |
//!
//! # Dependency rules
//!
//! `tokenize` and `classify` are pure (no I/O, no locks): they are the
//! scoring hot path and are benchmarked on their own. Only `store` names
//! sled; only `service` names tonic. `engine` composes the pure parts with
//! the store and knows nothing of the wire. The binary (`main.rs`) parses the
//! command line and is the only place `anyhow` is used.

pub mod auth;
pub mod classify;
pub mod decisions;
pub mod engine;
pub mod error;
pub mod eval;
pub mod mail;
pub mod metrics;
pub mod policy;
pub mod service;
pub mod store;
pub mod tokenize;
pub mod types;

/// Generated protobuf and gRPC types for `chaff.v1`.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("chaff.v1");
}
