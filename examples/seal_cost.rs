//! What a generation seal costs (`Store::seal_generation`: the sled flush,
//! three fsyncs and a rename a serving store does every `--seal-interval`,
//! docs/FAULTS.md "Corruption"), and what opening the directory costs
//! (sled's recovery, with the patched check that every blob file its pages
//! need is there: vendor/sled/PATCHES.md).
//!
//! ```sh
//! cargo run --release --example footprint -- CORPUS_INDEX 100 DIR 5   # a directory to measure
//! cargo run --release --example seal_cost -- CORPUS_INDEX [DIR [ROUNDS [CLICKS]]]
//! ```
//!
//! On DIR (left as it was found but for the seals' clicks, which go to
//! users `seal-cost-N` with fresh message ids), then on a small fresh
//! directory (one user, four clicks): the open, median of 5 (each the
//! store opened and closed); then ROUNDS seals (default 20) one right
//! after another (nothing written between: the idle cost), and ROUNDS
//! seals each after CLICKS durable Trains (default 100, from the corpus,
//! as clicks arrive between two seals). Prints the median, the fastest
//! and the slowest of each, in milliseconds. ROUNDS 0: the opens only.

use std::path::Path;
use std::time::{Duration, Instant};

use chaff::engine::{Engine, Settings};
use chaff::store::Store;
use chaff::types::{Label, MessageId, UserId};

#[path = "common/mod.rs"]
mod common;
use common::du;

/// Opens `dir`, waiting while the last close still holds sled's lock;
/// returns the store and how long the successful open took.
fn open(dir: &Path) -> (Store, Duration) {
    for _ in 0..500 {
        let t = Instant::now();
        if let Ok(s) = Store::open(dir, 64 << 20) {
            return (s, t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("cannot open {}", dir.display());
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Median, fastest and slowest, in ms.
fn summary(mut times: Vec<Duration>) -> String {
    times.sort();
    format!(
        "median {:.2} ms (fastest {:.2}, slowest {:.2}; {} runs)",
        ms(times[times.len() / 2]),
        ms(times[0]),
        ms(times[times.len() - 1]),
        times.len()
    )
}

fn measure(name: &str, dir: &Path, messages: &[(Vec<u8>, Label)], rounds: usize, clicks: usize) {
    println!(
        "{name}: {} ({} bytes, {} blob files)",
        dir.display(),
        du(dir),
        std::fs::read_dir(dir.join("blobs")).map_or(0, |d| d.count())
    );
    let opens: Vec<Duration> = (0..5).map(|_| open(dir).1).collect();
    println!("  open: {}", summary(opens));
    if rounds == 0 {
        return;
    }
    let engine = Engine::new(open(dir).0, Settings::default()).unwrap();
    let seal = || {
        let store = engine.store().sled().expect("a sled store");
        let t = Instant::now();
        store.seal_generation().unwrap();
        t.elapsed()
    };
    let idle: Vec<Duration> = (0..rounds).map(|_| seal()).collect();
    println!("  seal, nothing written since the last: {}", summary(idle));
    let mut n = 0usize;
    let mut busy = Vec::new();
    let started = Instant::now();
    for round in 0..rounds {
        let user = UserId::new(format!("seal-cost-{round}")).unwrap();
        for _ in 0..clicks {
            let (bytes, label) = &messages[n % messages.len()];
            let id = MessageId::new(format!("seal-cost-{}-{n}", std::process::id())).unwrap();
            engine.train(&user, bytes, *label, Some(id)).unwrap();
            n += 1;
        }
        busy.push(seal());
    }
    println!(
        "  seal after {clicks} durable Trains: {} ({n} Trains in {:.1} s)",
        summary(busy),
        started.elapsed().as_secs_f64()
    );
    engine.shutdown().unwrap();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let index = Path::new(args.get(1).expect("CORPUS_INDEX [DIR [ROUNDS [CLICKS]]]"));
    let rounds: usize = args.get(3).map_or(20, |n| n.parse().expect("ROUNDS"));
    let clicks: usize = args.get(4).map_or(100, |n| n.parse().expect("CLICKS"));
    let messages: Vec<(Vec<u8>, Label)> = chaff::eval::read_index(index)
        .expect("corpus")
        .iter()
        .map(|m| (std::fs::read(&m.path).expect("message"), m.gold))
        .collect();
    if let Some(dir) = args.get(2) {
        measure("given directory", Path::new(dir), &messages, rounds, clicks);
    }
    let small = tempfile::tempdir().unwrap();
    {
        let engine = Engine::new(open(small.path()).0, Settings::default()).unwrap();
        let user = UserId::new("small").unwrap();
        for (i, (bytes, label)) in messages.iter().take(4).enumerate() {
            let id = MessageId::new(format!("small-{i}")).unwrap();
            engine.train(&user, bytes, *label, Some(id)).unwrap();
        }
        engine.shutdown().unwrap();
    }
    measure("small directory", small.path(), &messages, rounds, clicks);
}
