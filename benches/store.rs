//! How fast a user's model becomes hot: read its snapshot from a real sled
//! directory and replay the journal written since (issue #7: a 50k-token
//! model in ≤ 5 ms).
//!
//! Run: `cargo bench --bench store` (figures in docs/PERFORMANCE.md).
//! Token ids are random 64-bit values like the tokenizer's hashes, drawn
//! from a vocabulary with a skew, so messages share common tokens as real
//! mail does.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};

use chaff::classify::{Model, Weight};
use chaff::store::{CHECKPOINT_MIN_ENTRIES, LedgerEntry, Op, Store, checkpoint_due};
use chaff::tokenize::{TOKENIZER_VERSION, TokenId};
use chaff::types::{Label, MessageId, UserId};

#[path = "common/mod.rs"]
mod common;
use common::Rng;

/// One message's distinct sorted tokens: 300 draws, skewed towards the
/// start of the vocabulary.
fn message_tokens(r: &mut Rng, vocabulary: &[TokenId]) -> Vec<TokenId> {
    let mut ids: Vec<TokenId> = (0..300)
        .map(|_| {
            let u = (r.next() % 1_000_000) as f64 / 1e6;
            vocabulary[((u * u) * vocabulary.len() as f64) as usize]
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Learns messages through the store as clicks would (ledger + journal,
/// a snapshot whenever the engine would take one: `checkpoint_due`) until
/// the model has `tokens` tokens, snapshots it, then writes clicks that
/// stay in the journal while it holds fewer than `tail_entries` entries.
/// Returns the user, the model a load must reproduce, and the tail's
/// clicks.
fn build(store: &Store, name: &str, tokens: usize, tail_entries: u64) -> (UserId, Model, u64) {
    let user = UserId::new(name).unwrap();
    let mut r = Rng(7);
    let vocabulary: Vec<TokenId> = (0..tokens * 3).map(|_| TokenId(r.next())).collect();
    let mut model = Model::default();
    let mut n = 0u64;
    let click = |model: &mut Model, n: &mut u64, ids: Vec<TokenId>| {
        let label = if n.is_multiple_of(3) {
            Label::Spam
        } else {
            Label::Ham
        };
        let entry = LedgerEntry {
            label,
            tokenizer_version: TOKENIZER_VERSION,
            tokens: ids.clone(),
            weight: Weight::FULL,
            // Not shared: the user's own model only.
            shared: 0,
            implicit: false,
        };
        let op = Op::Learn(label, Weight::FULL, ids);
        let msg = MessageId::new(format!("m{n}")).unwrap();
        let seq = store
            .record(&user, &msg, Some(&entry), std::slice::from_ref(&op))
            .unwrap();
        op.apply(model);
        *n += 1;
        seq
    };
    let (mut seq, mut journal) = (0, 0);
    while model.token_count() < tokens {
        let ids = message_tokens(&mut r, &vocabulary);
        journal += ids.len() as u64 + 1;
        seq = click(&mut model, &mut n, ids);
        if checkpoint_due(journal, model.token_count()) {
            store.checkpoint(&user, &model, seq).unwrap();
            journal = 0;
        }
    }
    store.checkpoint(&user, &model, seq).unwrap();
    let (mut journal, mut clicks) = (0, 0);
    loop {
        let ids = message_tokens(&mut r, &vocabulary);
        journal += ids.len() as u64 + 1;
        if journal >= tail_entries {
            break;
        }
        click(&mut model, &mut n, ids);
        clicks += 1;
    }
    store.flush().unwrap();
    (user, model, clicks)
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 64 << 20).unwrap();
    // The longest journal the engine leaves behind a 50k-token model: one
    // entry short of `checkpoint_due`.
    let worst_tail = CHECKPOINT_MIN_ENTRIES.max(2 * 50_000);
    let (fresh, fresh_model, _) = build(&store, "snapshotted", 50_000, 0);
    let (tailed, tailed_model, tail_clicks) = build(&store, "with-journal", 50_000, worst_tail);
    // Loads must reproduce the models exactly, or the bench measures nothing.
    assert_eq!(
        store.load_model(&fresh).unwrap().unwrap().model,
        fresh_model
    );
    assert_eq!(
        store.load_model(&tailed).unwrap().unwrap().model,
        tailed_model
    );

    let mut g = c.benchmark_group("load");
    g.bench_function("50k-token model, snapshot only", |b| {
        b.iter(|| store.load_model(black_box(&fresh)).unwrap())
    });
    g.bench_function(
        format!(
            "50k-token model, snapshot + {tail_clicks} journal records (< {worst_tail} entries)"
        ),
        |b| b.iter(|| store.load_model(black_box(&tailed)).unwrap()),
    );
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
