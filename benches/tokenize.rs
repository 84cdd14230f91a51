//! Reading messages: realistic ones, hostile ones, and the word splitters.
//!
//! Run: `cargo bench --bench tokenize` (figures in docs/PERFORMANCE.md).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use unicode_segmentation::UnicodeSegmentation;

use chaff::tokenize::Tokenizer;

#[path = "common/mod.rs"]
mod common;

fn realistic(c: &mut Criterion) {
    let tk = Tokenizer::default();
    let mut g = c.benchmark_group("tokenize");
    for (name, msg) in [
        ("newsletter 2KB", common::message(1, 2 * 1024)),
        ("newsletter 10KB", common::message(2, 10 * 1024)),
        ("newsletter 100KB", common::message(3, 100 * 1024)),
        ("japanese 10KB", common::cjk_message(10 * 1024)),
    ] {
        g.throughput(Throughput::Bytes(msg.len() as u64));
        g.bench_function(name, |b| b.iter(|| tk.tokenize(black_box(&msg))));
    }
    g.finish();
}

/// The caps make hostile mail cost about what large ordinary mail costs.
fn hostile(c: &mut Criterion) {
    let tk = Tokenizer::default();
    let mut ten_mib = b"Subject: big\r\nContent-Type: text/plain\r\n\r\n".to_vec();
    while ten_mib.len() < 10 * 1024 * 1024 {
        ten_mib.extend_from_slice(b"lorem ipsum dolor sit amet consectetur adipiscing\r\n");
    }
    let mut deep = String::from("Subject: deep\r\n");
    for i in 0..1000 {
        deep.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"
        ));
    }
    deep.push_str("Content-Type: text/plain\r\n\r\ninnermost\r\n");
    let mut header = b"Subject: x\r\nX-Junk: ".to_vec();
    header.extend(std::iter::repeat_n(b'A', 5 * 1024 * 1024));
    header.extend_from_slice(b"\r\n\r\nbody\r\n");
    let garbage: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();

    let mut g = c.benchmark_group("hostile");
    g.sample_size(10);
    for (name, msg) in [
        ("10 MiB text body", ten_mib),
        ("1000-deep MIME nest", deep.into_bytes()),
        ("5 MB single-line header", header),
        ("1 MiB random bytes", garbage),
    ] {
        g.throughput(Throughput::Bytes(msg.len() as u64));
        g.bench_function(name, |b| b.iter(|| tk.tokenize(black_box(&msg))));
    }
    g.finish();
}

/// Why words are split line by line, with an ASCII fast path: the same
/// 10 KB of text through each splitter, in one run.
fn splitters(c: &mut Criterion) {
    let msg = common::message(4, 10 * 1024);
    // One non-ASCII word near the start, as in most real mail.
    let text = format!("café {}", String::from_utf8_lossy(&msg));
    let mut g = c.benchmark_group("split 10KB");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("unicode_words whole text", |b| {
        b.iter(|| black_box(&text).unicode_words().count())
    });
    g.bench_function("unicode_words per line", |b| {
        b.iter(|| {
            black_box(&text)
                .lines()
                .map(|l| l.unicode_words().count())
                .sum::<usize>()
        })
    });
    g.bench_function("per line, ASCII lines by ascii_words", |b| {
        b.iter(|| {
            black_box(&text)
                .lines()
                .map(|l| {
                    if l.is_ascii() {
                        chaff::tokenize::ascii_words(l).count()
                    } else {
                        l.unicode_words().count()
                    }
                })
                .sum::<usize>()
        })
    });
    // The whole word path as the tokenizer runs it: split, lowercase, NFKC.
    g.bench_function("for_each_word (split + normalise)", |b| {
        let mut buf = String::new();
        b.iter(|| {
            let mut n = 0usize;
            chaff::tokenize::for_each_word(black_box(&text), &mut buf, |_| {
                n += 1;
                true
            });
            n
        })
    });
    g.finish();
}

criterion_group!(benches, realistic, hostile, splitters);
criterion_main!(benches);
