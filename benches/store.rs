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
use chaff::store::{CHECKPOINT_EVERY, LedgerEntry, Op, Store};
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

/// Learns messages through the store as clicks would (ledger + journal)
/// until the model has `tokens` tokens, snapshots it, then writes `tail`
/// more clicks that stay in the journal. Returns the user and the model
/// a load must reproduce.
fn build(store: &Store, name: &str, tokens: usize, tail: u64) -> (UserId, Model) {
    let user = UserId::new(name).unwrap();
    let mut r = Rng(7);
    let vocabulary: Vec<TokenId> = (0..tokens * 3).map(|_| TokenId(r.next())).collect();
    let mut model = Model::default();
    let mut n = 0u64;
    let mut click = |model: &mut Model, n: &mut u64| {
        let ids = message_tokens(&mut r, &vocabulary);
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
    let mut seq = 0;
    while model.token_count() < tokens {
        seq = click(&mut model, &mut n);
        if n.is_multiple_of(CHECKPOINT_EVERY) {
            store.checkpoint(&user, &model, seq).unwrap();
        }
    }
    store.checkpoint(&user, &model, seq).unwrap();
    for _ in 0..tail {
        click(&mut model, &mut n);
    }
    store.flush().unwrap();
    (user, model)
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 64 << 20).unwrap();
    let worst_tail = CHECKPOINT_EVERY - 1;
    let (fresh, fresh_model) = build(&store, "snapshotted", 50_000, 0);
    let (tailed, tailed_model) = build(&store, "with-journal", 50_000, worst_tail);
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
        format!("50k-token model, snapshot + {worst_tail} journal records"),
        |b| b.iter(|| store.load_model(black_box(&tailed)).unwrap()),
    );
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
