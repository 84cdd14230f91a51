//! The scoring hot path and the cost of a durable click.
//!
//! Run: `cargo bench --bench score` (figures and their context in
//! docs/PERFORMANCE.md). The message is generated here — a realistic 10 KB
//! mixed text/HTML newsletter — never taken from a corpus.
//!
//! With `CHAFF_BENCH_CORPUS` set to a TREC index (for example
//! `target/corpus/trec06p/index`), the `real mail` group also scores real
//! messages against a model learned from the corpus's first half: what
//! the header's veto costs depends on how often real headers are
//! confident, which generated mail cannot show.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use chaff::classify::{Model, Params};
use chaff::engine::{Engine, Settings};
use chaff::store::Store;
use chaff::tokenize::{TokenId, Tokenizer};
use chaff::types::{Label, MessageId, UserId};

#[path = "common/mod.rs"]
mod common;
use common::{Rng, message};

/// A warm model of about `tokens` distinct tokens, including the bench
/// message's own tokens so lookups hit as they would for a real user.
fn model(tokens: usize, message_ids: &[TokenId]) -> Model {
    model_with(tokens, message_ids, false)
}

/// [`model`], its ham learned from delivery (`delivered`) or clicked:
/// a delivered ham side is scored with the pooled prior on its ham rate
/// (`robinson::ham_prior_weight`), a clicked one without.
fn model_with(tokens: usize, message_ids: &[TokenId], delivered: bool) -> Model {
    let mut m = Model::default();
    let mut r = Rng(42);
    let per_message = 300;
    let mut i = 0;
    while m.token_count() < tokens {
        let ids: Vec<TokenId> = (0..per_message)
            .map(|_| TokenId(r.next() % (tokens as u64 * 4)))
            .collect();
        if i % 3 == 0 {
            m.learn(&ids, Label::Spam);
        } else if delivered {
            m.learn_delivered(&ids, chaff::classify::Weight::FULL);
        } else {
            m.learn(&ids, Label::Ham);
        }
        i += 1;
    }
    m.learn(message_ids, Label::Ham);
    m
}

fn bench(c: &mut Criterion) {
    let msg = message(7, 10 * 1024);
    let tokenizer = Tokenizer::default();
    let tokens = tokenizer.tokenize(&msg);

    let mut g = c.benchmark_group("score");
    g.throughput(Throughput::Bytes(msg.len() as u64));
    g.bench_function("tokenize 10KB", |b| {
        b.iter(|| tokenizer.tokenize(black_box(&msg)))
    });
    g.bench_function("tokenize 10KB keeping names", |b| {
        b.iter(|| tokenizer.tokenize_named(black_box(&msg)))
    });
    g.bench_function("header facts 10KB", |b| {
        b.iter(|| {
            chaff::mail::sender::HeaderFacts::from_message(
                black_box(&msg),
                64 * 1024,
                &Default::default(),
            )
        })
    });
    let params = Params::default();
    let m = model(50_000, &tokens.ids);
    g.bench_function("classify 50k-token model", |b| {
        b.iter(|| m.score(black_box(&tokens.ids), &params))
    });
    // The same counts with the ham delivered: every score also takes the
    // ham side's pooled prior (a Params copy, a ratio per token).
    let delivered = model_with(50_000, &tokens.ids, true);
    assert!(chaff::classify::robinson::ham_prior_weight(&delivered, &params) > 0.0);
    g.bench_function("classify 50k-token model, delivered ham side", |b| {
        b.iter(|| delivered.score(black_box(&tokens.ids), &params))
    });

    // End to end through the engine: tokenize + lookup + combine, for a
    // user whose 50k-token model is in memory.
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::new(
        Store::open(dir.path(), 64 << 20).unwrap(),
        Settings::default(),
    )
    .unwrap();
    let user = UserId::new("bench").unwrap();
    // A warm user with a 50k-token model, learned from generated mail
    // (about 700 messages; the bench message itself is not among them).
    let mut i = 0u64;
    while engine.user_summary(&user).unwrap().tokens < 50_000 {
        let label = if i.is_multiple_of(3) {
            Label::Spam
        } else {
            Label::Ham
        };
        engine
            .train(&user, &message(1000 + i, 10 * 1024), label, None)
            .unwrap();
        i += 1;
    }
    g.bench_function("engine score 10KB (warm user)", |b| {
        b.iter(|| engine.score(&user, black_box(&msg)).unwrap())
    });
    // The same user and mail scored as before session 15 (issue #19):
    // header and body pooled, one prior for both, where the default now
    // has the header's veto and the header's own prior. Its own engine,
    // trained on the same messages, so only the classifier's parameters
    // differ (docs/PERFORMANCE.md, "The header's veto: its cost"; the
    // `real mail` group below measures it on real headers).
    let pooled_dir = tempfile::tempdir().unwrap();
    let pooled_engine = Engine::new(
        Store::open(pooled_dir.path(), 64 << 20).unwrap(),
        Settings {
            params: Params {
                parts: chaff::classify::Parts::Pooled,
                header_veto_at: 0.0,
                header_strength: None,
                header_strength_ramp: 0.0,
                ..Params::default()
            },
            ..Settings::default()
        },
    )
    .unwrap();
    for j in 0..i {
        let label = if j.is_multiple_of(3) {
            Label::Spam
        } else {
            Label::Ham
        };
        pooled_engine
            .train(&user, &message(1000 + j, 10 * 1024), label, None)
            .unwrap();
    }
    g.bench_function("engine score 10KB (warm user, header pooled)", |b| {
        b.iter(|| pooled_engine.score(&user, black_box(&msg)).unwrap())
    });
    // What the Score RPC runs: the score plus delivery policy, the named
    // top features and a decision-log entry (queued, written off-thread).
    let envelope = chaff::engine::Envelope::default();
    g.bench_function("engine evaluate 10KB (score + policy + explanation)", |b| {
        b.iter(|| engine.evaluate(&user, black_box(&msg), &envelope).unwrap())
    });
    // The same user once the operator has seeded a 50k-token shared model
    // (other generated mail): every token is looked up in both models and
    // blended (src/classify/blend.rs).
    let mut i = 0u64;
    while engine.shared_summary().tokens < 50_000 {
        let label = if i.is_multiple_of(3) {
            Label::Spam
        } else {
            Label::Ham
        };
        engine
            .seed(&message(100_000 + i, 10 * 1024), label, None)
            .unwrap();
        i += 1;
    }
    g.bench_function("engine score 10KB (warm user + 50k shared)", |b| {
        b.iter(|| engine.score(&user, black_box(&msg)).unwrap())
    });
    g.bench_function("engine evaluate 10KB (warm user + 50k shared)", |b| {
        b.iter(|| engine.evaluate(&user, black_box(&msg), &envelope).unwrap())
    });
    g.finish();

    // Batch scoring: the same 64 messages one after another, and through
    // rayon (all cores), in one run.
    let batch: Vec<(UserId, Vec<u8>)> = (0..64u64)
        .map(|i| (user.clone(), message(500 + i, 10 * 1024)))
        .collect();
    let mut g = c.benchmark_group("batch of 64 x 10KB");
    g.throughput(Throughput::Elements(batch.len() as u64));
    g.sample_size(20);
    g.bench_function("one by one", |b| {
        b.iter(|| {
            batch
                .iter()
                .map(|(u, m)| engine.score(u, black_box(m)).unwrap().probability)
                .sum::<f64>()
        })
    });
    g.bench_function("score_batch (rayon)", |b| {
        use rayon::prelude::*;
        b.iter(|| {
            black_box(&batch)
                .par_iter()
                .map(|(u, m)| engine.score(u, m).unwrap())
                .collect::<Vec<_>>()
                .len()
        })
    });
    g.finish();

    // A durable click: tokenize, ledger read, one batch, flush.
    let mut g = c.benchmark_group("train");
    g.sample_size(30);
    let mut n = 0u64;
    let train_msg = message(9, 10 * 1024);
    g.bench_function("engine train 10KB durable", |b| {
        b.iter(|| {
            n += 1;
            let id = MessageId::new(format!("m{n}")).unwrap();
            engine
                .train(&user, &train_msg, Label::Spam, Some(id))
                .unwrap()
        })
    });
    g.finish();
}

/// Real mail from `CHAFF_BENCH_CORPUS` (a TREC index), if set: a model
/// learns the first half, every message; every 10th message of the second
/// half is scored with the default parameters and with the header's veto
/// (alone, and with the header's own `s` and its ramp). Tokenizing the
/// same messages is measured beside them, so that the classifier's share
/// of a Score is known.
fn real_mail(c: &mut Criterion) {
    let Some(index) = std::env::var_os("CHAFF_BENCH_CORPUS") else {
        return;
    };
    let corpus = chaff::eval::read_index(std::path::Path::new(&index)).unwrap();
    let tokenizer = Tokenizer::default();
    let half = corpus.len() / 2;
    let mut model = Model::default();
    for m in &corpus[..half] {
        let t = tokenizer.tokenize(&std::fs::read(&m.path).unwrap());
        model.learn(&t.ids, m.gold);
    }
    let raw: Vec<Vec<u8>> = corpus[half..]
        .iter()
        .step_by(10)
        .map(|m| std::fs::read(&m.path).unwrap())
        .collect();
    let tokens: Vec<_> = raw.iter().map(|r| tokenizer.tokenize(r)).collect();
    // Session 14's defaults, and steps from them to today's.
    let pooled = Params {
        parts: chaff::classify::Parts::Pooled,
        header_veto_at: 0.0,
        header_strength: None,
        header_strength_ramp: 0.0,
        ..Params::default()
    };
    let veto = Params {
        parts: chaff::classify::Parts::Fisher,
        header_veto_at: 5.0,
        ..pooled.clone()
    };
    let mut g = c.benchmark_group("real mail");
    g.throughput(Throughput::Elements(raw.len() as u64));
    g.bench_function("tokenize", |b| {
        b.iter(|| {
            for r in &raw {
                black_box(tokenizer.tokenize(black_box(r)));
            }
        })
    });
    for (name, params) in [
        ("classify pooled", pooled),
        ("classify veto 5", veto),
        ("classify veto 5, header s 0.02 ramp 10", Params::default()),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                for t in &tokens {
                    black_box(chaff::classify::robinson::score_parts(
                        &model, &t.ids, &t.header, &params,
                    ));
                }
            })
        });
    }
    g.finish();
}

/// The byte-gram regression of `chaff eval --grams` (research; not in the
/// service): what it would add to a Score, measured beside
/// `score/engine score 10KB (warm user)` in the same run. The regression
/// holds about a million weights, near the size trec06p's replay ends
/// with (1.36 M): learned from the generated newsletters (which share most of
/// their grams) and from 1,000 messages of random letters (which share
/// few), so the lookups miss the cache as a big model's do.
fn grams(c: &mut Criterion) {
    use chaff::classify::grams::{GramModel, GramParams, Grams};
    let params = GramParams::default();
    let msg = message(7, 10 * 1024);
    let mut model = GramModel::default();
    let mut r = Rng(99);
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789 .,ABCDEFGHIJKLMNOPQRSTUVWXYZ<>";
    for i in 0..2_000u64 {
        let m = if i % 2 == 0 {
            message(1_000 + i, 4 * 1024)
        } else {
            (0..1_100)
                .map(|_| alphabet[(r.next() % alphabet.len() as u64) as usize])
                .collect()
        };
        let g = Grams::of(&m, &params);
        let label = if i.is_multiple_of(3) {
            Label::Spam
        } else {
            Label::Ham
        };
        model.learn(&g, model.z(&g, &params), label, 1.0, &params);
    }
    let grams = Grams::of(&msg, &params);
    let mut g = c.benchmark_group("grams");
    g.bench_function(
        format!("grams of 10KB (first {} bytes)", params.bytes),
        |b| b.iter(|| Grams::of(black_box(&msg), &params)),
    );
    g.bench_function(format!("regression z ({} weights)", model.len()), |b| {
        b.iter(|| model.z(black_box(&grams), &params))
    });
    g.bench_function("regression learn and forget", |b| {
        b.iter(|| {
            let step = model.learn(&grams, 0.3, Label::Ham, 1.0, &params);
            model.forget(&grams, step, Label::Ham, 1.0);
        })
    });
    g.finish();
}

criterion_group!(benches, bench, real_mail, grams);
criterion_main!(benches);
