//! Figures of the Redis Cluster store (docs/SCALING.md): bytes per token
//! of a user who learned a corpus, and durable clicks/s with `WAIT 1`.
//!
//! ```sh
//! scripts/redis-cluster.sh start target/tmp/rc 31000      # prints NODES
//! cargo run --release --example redis_figures -- NODES CORPUS_INDEX [SECONDS [REPLICAS [corpus|load|both]]]
//! scripts/redis-cluster.sh stop target/tmp/rc 31000
//! ```
//!
//! 1. One user learns every message of the corpus (TREC index), one click
//!    at a time, each acknowledged after `WAIT 1`: sequential clicks/s and
//!    latency. Then `MEMORY USAGE` of the user's keys, per model token,
//!    before and after the journal is folded into a snapshot.
//! 2. For SECONDS (default 10) each at concurrency 1, 8 and 32: that many
//!    users click corpus messages as fast as replies come back (each its
//!    own mailbox, so spread over the shards): clicks/s, p50, p99.
//!
//! REPLICAS (default 1) is what each click waits for (`WAIT`); 0 measures
//! the same clicks without the wait. The last argument picks the parts.

use std::time::{Duration, Instant};

use chaff::classify::Weight;
use chaff::store::LedgerEntry;
use chaff::store::redis_cluster::{RedisConfig, RedisStore};
use chaff::tokenize::{Limits, TOKENIZER_VERSION, TokenId, Tokenizer};
use chaff::types::{Label, MessageId, UserId};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn entry(label: Label, tokens: &[TokenId]) -> LedgerEntry {
    LedgerEntry {
        label,
        tokenizer_version: TOKENIZER_VERSION,
        tokens: tokens.to_vec(),
        weight: Weight::FULL,
        shared: 0,
        implicit: false,
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [nodes, index, rest @ ..] = &args[..] else {
        eprintln!(
            "usage: redis_figures NODES(comma-separated redis:// URLs) CORPUS_INDEX [SECONDS]"
        );
        std::process::exit(2);
    };
    let seconds: u64 = rest.first().map_or(10, |s| s.parse().expect("SECONDS"));
    let replicas: u32 = rest.get(1).map_or(1, |s| s.parse().expect("REPLICAS"));
    let parts = rest.get(2).map_or("both", String::as_str);
    let dir = std::path::Path::new(index).parent().unwrap().to_path_buf();
    let tokenizer = Tokenizer::new(Limits::default());
    let corpus: Vec<(Label, Vec<TokenId>)> = std::fs::read_to_string(index)
        .expect("read the index")
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(label, path)| {
            let label = if label == "spam" {
                Label::Spam
            } else {
                Label::Ham
            };
            let raw = std::fs::read(dir.join(path)).expect("read a message");
            (label, tokenizer.tokenize(&raw).ids)
        })
        .collect();
    let mut config = RedisConfig::new(nodes.split(','));
    config.replicas = replicas;
    let store = RedisStore::connect(config).await.expect("connect");
    println!("clicks wait for {replicas} replica(s)");
    let run = std::process::id();

    if parts != "load" {
        corpus_user(&store, &corpus, run).await;
    }
    if parts != "corpus" {
        load(&store, &corpus, run, seconds).await;
    }
}

/// 1. One user learns the corpus, one click at a time.
async fn corpus_user(store: &RedisStore, corpus: &[(Label, Vec<TokenId>)], run: u32) {
    let user = UserId::new(format!("corpus-{run}")).unwrap();
    let mut lat = Vec::with_capacity(corpus.len());
    let started = Instant::now();
    for (i, (label, ids)) in corpus.iter().enumerate() {
        let t = Instant::now();
        store
            .train(
                &user,
                &MessageId::new(format!("m{i}")).unwrap(),
                &entry(*label, ids),
            )
            .await
            .expect("click");
        lat.push(t.elapsed());
    }
    let took = started.elapsed();
    lat.sort();
    println!(
        "learn corpus, 1 user, sequential: {} clicks in {:.1} s = {:.0} clicks/s; p50 {:?} p99 {:?}",
        corpus.len(),
        took.as_secs_f64(),
        corpus.len() as f64 / took.as_secs_f64(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    let held = store.load_model(&user).await.unwrap().unwrap();
    let tokens = held.model.token_count() as f64;
    let ids: usize = corpus.iter().map(|(_, ids)| ids.len()).sum();
    let before = store.memory_usage(&user).await.unwrap();
    store
        .checkpoint(&user, &held.model, held.version)
        .await
        .unwrap();
    let after = store.memory_usage(&user).await.unwrap();
    println!(
        "model: {tokens} tokens; ledger: {ids} token ids in {} messages",
        corpus.len()
    );
    for (when, b) in [("before folding", before), ("after folding", after)] {
        println!(
            "MEMORY USAGE {when}: all keys {} B ({:.1} B/model token); snapshot {} B ({:.1} B/model token), \
             journal {} B, ledger {} B ({:.1} B/ledger id), meta {} B",
            b.total(),
            b.total() as f64 / tokens,
            b.snapshot,
            b.snapshot as f64 / tokens,
            b.journal,
            b.ledger,
            b.ledger as f64 / ids as f64,
            b.meta
        );
    }
}

/// 2. Users clicking concurrently, each its own mailbox.
async fn load(store: &RedisStore, corpus: &[(Label, Vec<TokenId>)], run: u32, seconds: u64) {
    let corpus = std::sync::Arc::new(corpus.to_vec());
    for concurrency in [1usize, 8, 32] {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut tasks = Vec::new();
        for c in 0..concurrency {
            let store = store.clone();
            let corpus = corpus.clone();
            tasks.push(tokio::spawn(async move {
                let user = UserId::new(format!("load-{run}-{concurrency}-{c}")).unwrap();
                let mut lat = Vec::new();
                let mut i = c * 97;
                while Instant::now() < deadline {
                    let (label, ids) = &corpus[i % corpus.len()];
                    let t = Instant::now();
                    store
                        .train(
                            &user,
                            &MessageId::new(format!("m{i}")).unwrap(),
                            &entry(*label, ids),
                        )
                        .await
                        .expect("click");
                    lat.push(t.elapsed());
                    i += 1;
                }
                lat
            }));
        }
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await.unwrap());
        }
        lat.sort();
        println!(
            "{concurrency} users in flight, {seconds} s: {} clicks = {:.0} clicks/s; p50 {:?} p99 {:?}",
            lat.len(),
            lat.len() as f64 / seconds as f64,
            percentile(&lat, 0.5),
            percentile(&lat, 0.99)
        );
    }
}
