//! chaff: per-user Bayesian spam training and scoring.
//!
//! # Layout
//!
//! | module       | concern                                                     | names   |
//! |--------------|-------------------------------------------------------------|---------|
//! | [`types`]    | the shared nouns: `UserId`, `MessageId`, `Owner`, `Label`, `Verdict` | — |
//! | [`tokenize`] | raw message bytes → token ids (MIME via `mail-parser`)     | —       |
//! | [`classify`] | per-user counts, the shared model, the Robinson–Fisher score and the blend; which tokens a model past its quota drops | — |
//! | [`mail`]     | facts read from headers: authentication, From, unsubscribe  | —       |
//! | [`policy`]   | settings, allow/block lists, score → action and reason      | —       |
//! | [`decisions`]| the decision log support queries (background writer)        | —       |
//! | [`store`]    | the storage interface the engine runs on (`Backend`); durable ledger, journal and model snapshots on sled; the replay store of `chaff eval`; `StorageError`; the Redis Cluster store (`store::redis_cluster`, feature `redis`; `RedisBackend` for `serve --store redis://`) | sled, redis |
//! | [`engine`]   | use cases, a file each: the scoring pipeline (`score.rs`), clicks, learning from delivered mail in the background, user admin, shared model, quotas, user listing, export/import, backup | — |
//! | [`service`]  | gRPC adapter, wire conversions, panic layer, admission (overload), health, reflection | tonic |
//! | [`error`]    | the library's error enum                                    | —       |
//! | [`auth`]     | API keys, scopes per RPC, tenants, per-caller limits        | —       |
//! | `fault`      | test builds only (feature `fault-injection`): injected panics, a slow Score, slow checkpoints | — |
//! | [`metrics`]  | lock-free latency histograms (read by `service::metrics`)   | —       |
//!
//! # Dependency rules
//!
//! `tokenize` and `classify` are pure (no I/O, no locks): they are the
//! scoring hot path and are benchmarked on their own. Only `store` names
//! sled and redis; only `service` names tonic. `engine` composes the pure parts with
//! the store and knows nothing of the wire. The binary (`main.rs`) parses the
//! command line and is the only place `anyhow` is used.
//!
//! Enforced by the compiler where cheap: sled's and redis's errors reach the
//! rest of the library only as the opaque `store::StorageError` (`error.rs`
//! names neither); the store's key codec and group commit are private to `store`; the
//! engine's slots and locks are private to `engine`. Library errors become
//! gRPC statuses in one place, `service::status` (`From<Error> for Status`).
//!
//! # Panic policy
//!
//! Locks are `parking_lot`'s and do not poison; a request that panics is
//! logged and answered INTERNAL by `service::catch_panic` while the server
//! keeps serving (tested with the `fault-injection` feature, test builds
//! only). The files a Score and a click go through, in order, are drawn in
//! `docs/ARCHITECTURE.md`.

pub mod auth;
pub mod classify;
pub mod decisions;
pub mod engine;
pub mod error;
pub mod eval;
#[cfg(feature = "fault-injection")]
pub mod fault;
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
