//! The hostile-mail corpus of issue #17 at full size, and its timing.
//!
//! ```sh
//! # write the corpus (deterministic; ~70 MB) into a directory
//! cargo run --release --example nasty_mail -- generate target/nasty
//! # start a release server, then score + train every file through gRPC
//! target/release/chaff serve --listen 127.0.0.1:50077 --data /tmp/nasty-data &
//! cargo run --release --example nasty_mail -- time http://127.0.0.1:50077 target/nasty 5
//! ```
//!
//! `generate DIR [test]` writes one `.eml` per category (`tests/nasty.rs`;
//! `test` gives the small scale the integration test uses). `time URL DIR
//! [ROUNDS]` first trains 20 normal messages (so scoring has a model to
//! look up), then, ROUNDS times, scores and trains every file in DIR (Train
//! with a new message id each round, so each is a real learn) and prints,
//! per file: size, median wall time of Score and of Train as the client
//! sees it (loopback, so transfer included), each as a multiple of the
//! normal 10 KB message's (`normal-10k.eml`), the status, and `limits_hit`.
//!
//! `engine DIR [ROUNDS [MAX_SCAN_BYTES]]` times the same calls without the
//! wire: the library calls the Score and Train RPCs make
//! (`Engine::evaluate`, `Engine::train`), on an engine over a sled store in
//! a temporary directory, with the default caps (`MAX_SCAN_BYTES` sets the
//! scan cap; `0` turns it off, as before the cap existed). This is the
//! server's own time per message; the difference to `time` is the transfer.
//!
//! `tokenize DIR [ROUNDS]` times the tokenizer alone (default caps), the
//! part of the server's time that hostile input drives: run it under
//! `perf record` to see where a message's time goes.
//!
//! `limits INDEX` reads a labelled corpus with the default caps and
//! prints, per cap, how many of its messages (ham, spam) reached it: a cap
//! meant for hostile mail should be reached by no real message
//! (`LIMITS_PATHS=1` also names each such message on stderr).
//!
//! `touched INDEX [MAX_SCAN_BYTES]` reads a labelled corpus (`chaff eval`'s
//! index: `ham|spam PATH` per line, paths relative to the index) with the
//! default caps and with the scan cap off, and counts the messages the scan
//! cap cuts, by label; every other message must give the same token ids
//! both ways (it exits non-zero if one does not).

#[path = "../tests/nasty.rs"]
mod nasty;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chaff::proto::{self, chaff_client::ChaffClient};

type Client = ChaffClient<tonic::transport::Channel>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["generate", dir] => generate(Path::new(dir), &nasty::Scale::FULL),
        ["generate", dir, "test"] => generate(Path::new(dir), &nasty::Scale::TEST),
        ["time", url, dir] => time(url, Path::new(dir), 5),
        ["time", url, dir, rounds] => time(url, Path::new(dir), rounds.parse().expect("ROUNDS")),
        ["touched", index] => touched(Path::new(index), None),
        ["touched", index, scan] => touched(
            Path::new(index),
            Some(scan.parse().expect("MAX_SCAN_BYTES")),
        ),
        ["limits", index] => limits(Path::new(index)),
        ["tokenize", dir] => tokenize(Path::new(dir), 5),
        ["tokenize", dir, rounds] => tokenize(Path::new(dir), rounds.parse().expect("ROUNDS")),
        ["engine", dir] => engine(Path::new(dir), 5, None),
        ["engine", dir, rounds] => engine(Path::new(dir), rounds.parse().expect("ROUNDS"), None),
        ["engine", dir, rounds, scan] => engine(
            Path::new(dir),
            rounds.parse().expect("ROUNDS"),
            Some(scan.parse().expect("MAX_SCAN_BYTES")),
        ),
        _ => {
            eprintln!(
                "usage: nasty_mail generate DIR [test] | nasty_mail time URL DIR [ROUNDS] | nasty_mail engine DIR [ROUNDS [MAX_SCAN_BYTES]] | nasty_mail tokenize DIR [ROUNDS] | nasty_mail touched INDEX [MAX_SCAN_BYTES]"
            );
            std::process::exit(2);
        }
    }
}

fn generate(dir: &Path, scale: &nasty::Scale) {
    std::fs::create_dir_all(dir).expect("create DIR");
    for m in nasty::corpus(scale) {
        let path = dir.join(format!("{}.eml", m.name));
        std::fs::write(&path, &m.bytes).expect("write");
        println!("{:>10} {}", m.bytes.len(), path.display());
    }
}

struct Row {
    name: String,
    bytes: usize,
    score: Vec<Duration>,
    train: Vec<Duration>,
    status: String,
    limits: Vec<String>,
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The `.eml` files of `dir`, sorted, each as an empty row.
fn rows_of(dir: &Path) -> (Vec<PathBuf>, Vec<Row>) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read DIR")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    files.sort();
    let rows = files
        .iter()
        .map(|path| Row {
            name: path.file_stem().unwrap().to_string_lossy().into_owned(),
            bytes: std::fs::metadata(path).expect("stat file").len() as usize,
            score: Vec::new(),
            train: Vec::new(),
            status: String::new(),
            limits: Vec::new(),
        })
        .collect();
    (files, rows)
}

/// The table: medians, and each as a multiple of `normal-10k`'s.
fn report(rows: &mut [Row], rounds: usize) {
    let base = rows
        .iter_mut()
        .find(|r| r.name == "normal-10k")
        .map(|r| (median(&mut r.score), median(&mut r.train)))
        .expect("normal-10k.eml in DIR");
    println!(
        "normal-10k: Score {:.3} ms, Train {:.3} ms (median of {rounds})",
        ms(base.0),
        ms(base.1)
    );
    println!(
        "{:<24} {:>10} {:>10} {:>7} {:>10} {:>7}  status  limits_hit",
        "message", "bytes", "Score ms", "×", "Train ms", "×"
    );
    for r in rows {
        let (s, t) = (median(&mut r.score), median(&mut r.train));
        println!(
            "{:<24} {:>10} {:>10.2} {:>7.1} {:>10.2} {:>7.1}  {:<6}  {}",
            r.name,
            r.bytes,
            ms(s),
            s.as_secs_f64() / base.0.as_secs_f64(),
            ms(t),
            t.as_secs_f64() / base.1.as_secs_f64(),
            r.status,
            r.limits.join(", ")
        );
    }
}

/// Which messages of a corpus the scan cap cuts; the rest must read the
/// same with and without it.
fn touched(index: &Path, max_scan_bytes: Option<usize>) {
    use chaff::tokenize::{LimitHit, Limits, Tokenizer};

    let mut limits = Limits::default();
    if let Some(n) = max_scan_bytes {
        limits.max_scan_bytes = n;
    }
    let capped = Tokenizer::new(limits.clone());
    let uncapped = Tokenizer::new(Limits {
        max_scan_bytes: usize::MAX,
        ..limits.clone()
    });
    let base = index.parent().unwrap_or(Path::new("."));
    let text = std::fs::read_to_string(index).expect("read INDEX");
    let (mut total, mut cut_ham, mut cut_spam, mut differ) = (0, 0, 0, 0);
    for line in text.lines() {
        let Some((label, path)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        let bytes = std::fs::read(base.join(path.trim())).expect("read message");
        total += 1;
        let a = capped.tokenize(&bytes);
        if a.limits_hit.contains(&LimitHit::ScanBytes) {
            if label == "spam" {
                cut_spam += 1;
            } else {
                cut_ham += 1;
            }
        } else if a != uncapped.tokenize(&bytes) {
            differ += 1;
            eprintln!("not cut, yet read differently: {path}");
        }
    }
    println!(
        "{}: {total} messages, max_scan_bytes {}: cut {} ({cut_ham} ham, {cut_spam} spam); not cut but read differently: {differ}",
        index.display(),
        limits.max_scan_bytes,
        cut_ham + cut_spam
    );
    if differ > 0 {
        std::process::exit(1);
    }
}

/// `limits INDEX`: per cap, the corpus messages (ham, spam) that reach it.
fn limits(index: &Path) {
    use std::collections::BTreeMap;
    let tokenizer = chaff::tokenize::Tokenizer::default();
    let base = index.parent().unwrap_or(Path::new("."));
    let text = std::fs::read_to_string(index).expect("read INDEX");
    let mut hits: BTreeMap<&'static str, (u64, u64)> = BTreeMap::new();
    let mut total = 0;
    for line in text.lines() {
        let Some((label, path)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        let bytes = std::fs::read(base.join(path.trim())).expect("read message");
        total += 1;
        for hit in tokenizer.tokenize(&bytes).limits_hit {
            if std::env::var_os("LIMITS_PATHS").is_some() {
                eprintln!("{}: {path}", hit.as_str());
            }
            let n = hits.entry(hit.as_str()).or_default();
            if label == "spam" {
                n.1 += 1;
            } else {
                n.0 += 1;
            }
        }
    }
    println!("{}: {total} messages", index.display());
    for (cap, (ham, spam)) in hits {
        println!("  {cap}: {ham} ham, {spam} spam");
    }
}

/// The tokenizer alone: `tokenize` per file, median of `rounds` (the
/// Train column repeats the Score one).
fn tokenize(dir: &Path, rounds: usize) {
    let tokenizer = chaff::tokenize::Tokenizer::default();
    let (files, mut rows) = rows_of(dir);
    for _ in 0..rounds {
        for (path, row) in files.iter().zip(rows.iter_mut()) {
            let bytes = std::fs::read(path).expect("read file");
            let t = Instant::now();
            let tokens = tokenizer.tokenize(&bytes);
            let took = t.elapsed();
            row.score.push(took);
            row.train.push(took);
            row.status = "OK".into();
            row.limits = tokens
                .limits_hit
                .iter()
                .map(|l| l.as_str().to_string())
                .collect();
        }
    }
    report(&mut rows, rounds);
}

/// `time` without the wire: the engine calls behind Score and Train.
fn engine(dir: &Path, rounds: usize, max_scan_bytes: Option<usize>) {
    use chaff::engine::{Engine, Envelope, Settings};
    use chaff::tokenize::{Limits, Tokenizer};
    use chaff::types::{Label, MessageId, UserId};

    let mut limits = Limits::default();
    if let Some(n) = max_scan_bytes {
        limits.max_scan_bytes = if n == 0 { usize::MAX } else { n };
    }
    println!("max_scan_bytes: {}", limits.max_scan_bytes);
    let data = tempfile::tempdir().expect("temporary directory");
    let engine = Engine::new(
        chaff::store::Store::open(data.path(), 256 << 20).expect("open store"),
        Settings {
            tokenizer: Tokenizer::new(limits),
            ..Settings::default()
        },
    )
    .expect("engine");
    let user = UserId::new("nasty-timing").unwrap();
    let normal = nasty::normal_10k();
    for i in 0..20 {
        let label = if i % 2 == 0 { Label::Ham } else { Label::Spam };
        let id = MessageId::new(format!("warm-{i}")).unwrap();
        engine
            .train(&user, &normal, label, Some(id))
            .expect("warm-up train");
    }
    let (files, mut rows) = rows_of(dir);
    let envelope = Envelope::default();
    for round in 0..rounds {
        for (path, row) in files.iter().zip(rows.iter_mut()) {
            let bytes = std::fs::read(path).expect("read file");
            let t = Instant::now();
            let scored = engine.evaluate(&user, &bytes, &envelope);
            row.score.push(t.elapsed());
            let id = MessageId::new(format!("{}-{round}", row.name)).unwrap();
            let t = Instant::now();
            let trained = engine.train(&user, &bytes, Label::Spam, Some(id));
            row.train.push(t.elapsed());
            row.status = match (&scored, &trained) {
                (Ok(_), Ok(_)) => "OK".into(),
                (Err(e), _) | (_, Err(e)) => format!("{e}").chars().take(24).collect(),
            };
            if let Ok(e) = scored {
                row.limits = e
                    .scored
                    .limits_hit
                    .iter()
                    .map(|l| l.as_str().to_string())
                    .collect();
            }
        }
    }
    report(&mut rows, rounds);
}

#[tokio::main(flavor = "current_thread")]
async fn time(url: &str, dir: &Path, rounds: usize) {
    let mut c = ChaffClient::connect(url.to_string())
        .await
        .expect("connect")
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(64 << 20);
    let user = format!("nasty-timing-{}", std::process::id());
    let normal = nasty::normal_10k();
    for i in 0..20 {
        let label = if i % 2 == 0 {
            proto::Label::Ham
        } else {
            proto::Label::Spam
        };
        train(&mut c, &user, &normal, label, &format!("warm-{i}"))
            .await
            .expect("warm-up train");
    }
    let (files, mut rows) = rows_of(dir);
    for round in 0..rounds {
        for (path, row) in files.iter().zip(rows.iter_mut()) {
            let bytes = std::fs::read(path).expect("read file");
            let t = Instant::now();
            let scored = c
                .score(proto::ScoreRequest {
                    user_id: user.clone(),
                    message: bytes.clone(),
                    ..Default::default()
                })
                .await;
            row.score.push(t.elapsed());
            let t = Instant::now();
            let trained = train(
                &mut c,
                &user,
                &bytes,
                proto::Label::Spam,
                &format!("{}-{round}", row.name),
            )
            .await;
            row.train.push(t.elapsed());
            row.status = match (&scored, &trained) {
                (Ok(_), Ok(_)) => "OK".into(),
                (Err(s), _) | (_, Err(s)) => format!("{:?}", s.code()),
            };
            if let Ok(r) = scored {
                row.limits = r.into_inner().limits_hit;
            }
        }
    }
    report(&mut rows, rounds);
}

async fn train(
    c: &mut Client,
    user: &str,
    message: &[u8],
    label: proto::Label,
    id: &str,
) -> Result<tonic::Response<proto::TrainResponse>, tonic::Status> {
    c.train(proto::TrainRequest {
        user_id: user.into(),
        message: message.to_vec(),
        label: label.into(),
        message_id: id.into(),
    })
    .await
}
