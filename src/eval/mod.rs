//! Replaying a labelled corpus through a filter, the way the TREC Spam Track
//! did: messages in arrival order, each scored and then (depending on the
//! training mode) learned. The same replay drives chaff's own library, a
//! running chaff server (from the binary) and, via results files, peers.

pub mod clicks;
pub mod compare;
pub mod metrics;
pub mod multi;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError, sync_channel};
use std::sync::{Arc, OnceLock};

use rustc_hash::FxHashMap;

use crate::classify::grams::{GramModel, GramParams, Grams};
use crate::engine::{Engine, ReadMessage};
use crate::types::{Label, MessageId, UserId, Verdict};
pub use clicks::{Clicks, Profile};
pub use metrics::{Outcome, Summary};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: expected `spam PATH` or `ham PATH`, found {text:?}", path.display())]
    BadIndexLine {
        path: PathBuf,
        line: usize,
        text: String,
    },
    #[error("{}:{line}: expected `ID SCORE spam|ham spam|ham`, found {text:?}", path.display())]
    BadResultsLine {
        path: PathBuf,
        line: usize,
        text: String,
    },
    #[error("filter failed on {id}: {message}")]
    Filter { id: String, message: String },
}

/// One message of a corpus.
#[derive(Clone, Debug)]
pub struct CorpusMessage {
    /// The path as written in the index: the message's stable id.
    pub id: String,
    pub path: PathBuf,
    pub gold: Label,
}

/// Reads a TREC index: lines `spam PATH` / `ham PATH`, paths relative to
/// the index's folder, in arrival order. Blank lines are skipped.
pub fn read_index(index: &Path) -> Result<Vec<CorpusMessage>, EvalError> {
    let text = std::fs::read_to_string(index).map_err(|source| EvalError::Read {
        path: index.to_path_buf(),
        source,
    })?;
    let base = index.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = || EvalError::BadIndexLine {
            path: index.to_path_buf(),
            line: n + 1,
            text: line.to_string(),
        };
        let (label, rel) = line.split_once(char::is_whitespace).ok_or_else(bad)?;
        let gold = match label.to_ascii_lowercase().as_str() {
            "spam" => Label::Spam,
            "ham" => Label::Ham,
            _ => return Err(bad()),
        };
        let rel = rel.trim();
        out.push(CorpusMessage {
            id: rel.to_string(),
            path: base.join(rel),
            gold,
        });
    }
    Ok(out)
}

/// What a filter says about one message.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Judgement {
    /// Spamminess for ranking (chaff: the log-odds, which keep their order
    /// where the probability saturates).
    pub score: f64,
    pub verdict: Verdict,
}

/// Anything that can score and learn messages.
pub trait Filter {
    fn score(&mut self, id: &str, message: &[u8]) -> Result<Judgement, String>;
    fn learn(&mut self, id: &str, message: &[u8], label: Label) -> Result<(), String>;
    /// The next messages the replay will give, in order, a chunk or two
    /// before it gives them: a filter may do its per-message work that needs
    /// no model (for chaff, reading the message) in the background, in
    /// parallel, while the replay scores and learns the chunks before.
    fn prepare(&mut self, _upcoming: &[(&str, &[u8])]) {}
    /// One online step: score the message, then learn it as `gold` if
    /// `learn_if` says so given the verdict. A filter may do both at once.
    fn score_then_learn(
        &mut self,
        id: &str,
        message: &[u8],
        gold: Label,
        learn_if: &dyn Fn(Verdict) -> bool,
    ) -> Result<Judgement, String> {
        score_then_learn_separately(self, id, message, gold, learn_if)
    }
}

/// [`Filter::score_then_learn`] as two calls: score, then maybe learn.
fn score_then_learn_separately<F: Filter + ?Sized>(
    filter: &mut F,
    id: &str,
    message: &[u8],
    gold: Label,
    learn_if: &dyn Fn(Verdict) -> bool,
) -> Result<Judgement, String> {
    let j = filter.score(id, message)?;
    if learn_if(j.verdict) {
        filter.learn(id, message, gold)?;
    }
    Ok(j)
}

/// Messages the replay reads (and offers to [`Filter::prepare`]) at once.
const READ_AHEAD: usize = 256;

/// Chunks handed to [`Filter::prepare`] before the replay reaches them.
/// Two, not one: reading a chunk and replaying one take about as long, so
/// with a single chunk ahead either side often waited for the other.
const CHUNKS_AHEAD: usize = 2;

/// Reads a results file: one `id score gold judged [taught]` line per
/// message, in arrival order (gold and judged are `spam` or `ham`; the score
/// is spamminess, higher = more spam; the optional fifth column is `1` if
/// the replay then taught the filter the gold label — a click — else `0`).
/// Lines starting with `#` are comments. `chaff eval --results` writes this,
/// and the peer scripts under `scripts/peers/` do too, so every filter is
/// measured by the same code. Four-column files (written before the fifth
/// column existed) still read, with `taught` unknown.
pub fn read_results(path: &Path) -> Result<Vec<Outcome>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|source| EvalError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || EvalError::BadResultsLine {
            path: path.to_path_buf(),
            line: n + 1,
            text: line.to_string(),
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (id, score, gold, judged, taught) = match fields[..] {
            [id, score, gold, judged] => (id, score, gold, judged, None),
            [id, score, gold, judged, taught] => (id, score, gold, judged, Some(taught)),
            _ => return Err(bad()),
        };
        let label = |s: &str| match s {
            "spam" => Some(Label::Spam),
            "ham" => Some(Label::Ham),
            _ => None,
        };
        let score: f64 = score.parse().map_err(|_| bad())?;
        if !score.is_finite() {
            return Err(bad());
        }
        let taught = match taught {
            None => None,
            Some("1") => Some(true),
            Some("0") => Some(false),
            Some(_) => return Err(bad()),
        };
        out.push(Outcome {
            id: id.to_string(),
            gold: label(gold).ok_or_else(bad)?,
            score,
            judged_spam: label(judged).ok_or_else(bad)? == Label::Spam,
            taught,
        });
    }
    Ok(out)
}

/// Writes outcomes in the format [`read_results`] reads, after a `#`
/// comment line saying how they were made (`comment`, one line).
pub fn write_results(
    comment: &str,
    outcomes: &[Outcome],
    out: &mut impl std::io::Write,
) -> std::io::Result<()> {
    writeln!(out, "# {}", comment.replace('\n', " "))?;
    for o in outcomes {
        let judged = if o.judged_spam {
            Label::Spam
        } else {
            Label::Ham
        };
        write!(out, "{} {:.17e} {} {}", o.id, o.score, o.gold, judged)?;
        match o.taught {
            Some(t) => writeln!(out, " {}", u8::from(t))?,
            None => writeln!(out)?,
        }
    }
    Ok(())
}

/// When the replay teaches the filter the gold label.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TrainMode {
    /// TREC immediate feedback: every message, right after scoring it.
    Every,
    /// Every message judged wrongly or unsure (unsure ham included): the
    /// protocol of the first accuracy tables.
    Errors,
    /// A user's clicks ([`clicks`]): misfiled spam with chance p, misfiled
    /// ham with chance q; unsure ham is in the inbox, so never clicked.
    Clicks(Clicks),
}

impl TrainMode {
    /// Whether message `i` of a mailbox (0-based, in arrival order), of
    /// label `gold`, is learned after the filter said `verdict`.
    pub fn should_learn(self, i: usize, gold: Label, verdict: Verdict) -> bool {
        match self {
            TrainMode::Every => true,
            TrainMode::Errors => !matches!(
                (gold, verdict),
                (Label::Spam, Verdict::Spam) | (Label::Ham, Verdict::Ham)
            ),
            TrainMode::Clicks(c) => c.clicks(i, gold, verdict),
        }
    }

    /// How the mode reads in a report: `every`, `errors`, or `clicks
    /// (p = 0.5, q = 0.2, seed 0)`.
    pub fn describe(self) -> String {
        match self {
            TrainMode::Every => "every".into(),
            TrainMode::Errors => "errors".into(),
            TrainMode::Clicks(c) => {
                format!("clicks (p = {}, q = {}, seed {})", c.spam, c.ham, c.seed)
            }
        }
    }
}

/// How to replay.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub train: TrainMode,
    /// Learn the first `learn_only` messages without scoring them, then
    /// score the rest *without learning* (a batch train/test split). Zero
    /// gives the TREC online protocol.
    pub learn_only: usize,
}

/// Reads one chunk of the corpus from disk.
fn read_chunk(chunk: &[CorpusMessage]) -> Result<Vec<Vec<u8>>, EvalError> {
    chunk
        .iter()
        .map(|m| {
            std::fs::read(&m.path).map_err(|source| EvalError::Read {
                path: m.path.clone(),
                source,
            })
        })
        .collect()
}

/// Replays `corpus` through `filter`; `progress(done, total)` is called after
/// each message. Returns the outcomes of the scored messages.
pub fn replay(
    corpus: &[CorpusMessage],
    filter: &mut dyn Filter,
    plan: Plan,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<Outcome>, EvalError> {
    let mut outcomes = Vec::with_capacity(corpus.len());
    let fail = |id: &str, message: String| EvalError::Filter {
        id: id.to_string(),
        message,
    };
    let prepare = |filter: &mut dyn Filter, chunk: &[CorpusMessage], texts: &[Vec<u8>]| {
        let upcoming: Vec<(&str, &[u8])> = chunk
            .iter()
            .zip(texts)
            .map(|(m, t)| (m.id.as_str(), t.as_slice()))
            .collect();
        filter.prepare(&upcoming);
    };
    let chunks: Vec<&[CorpusMessage]> = corpus.chunks(READ_AHEAD).collect();
    std::thread::scope(|scope| {
        // The files are read on a thread of their own: opening and reading
        // ~6,000 small files took 12% of a replay's CPU samples on the
        // replay's own thread, which scores and learns one message after
        // another and sets the pace (perf, 2026-11-23). The channel holds
        // up to CHUNKS_AHEAD read chunks (so reading runs at most about
        // 2 × CHUNKS_AHEAD + 1 chunks past the one being scored: a few MB);
        // the thread stops at the first error, or when the replay returns
        // and drops the receiver.
        let (tx, disk) = sync_channel(CHUNKS_AHEAD);
        let reader = chunks.clone();
        std::thread::Builder::new()
            .name("chaff-eval-disk".into())
            .spawn_scoped(scope, move || {
                for chunk in reader {
                    let texts = read_chunk(chunk);
                    let failed = texts.is_err();
                    if tx.send(texts).is_err() || failed {
                        break;
                    }
                }
            })
            .expect("a thread to read the corpus");
        let next_texts = || {
            disk.recv()
                .expect("the disk reader sends every chunk or an error")
        };
        let mut ahead = std::collections::VecDeque::new();
        for chunk in chunks.iter().take(CHUNKS_AHEAD) {
            let texts = next_texts()?;
            prepare(filter, chunk, &texts);
            ahead.push_back(texts);
        }
        for (chunk_no, chunk) in chunks.iter().enumerate() {
            let texts = ahead.pop_front().expect("every chunk was read ahead");
            // A later chunk is handed to the filter to prepare in the
            // background while this one is scored and learned.
            if let Some(later) = chunks.get(chunk_no + CHUNKS_AHEAD) {
                let later_texts = next_texts()?;
                prepare(filter, later, &later_texts);
                ahead.push_back(later_texts);
            }
            for (j, (m, bytes)) in chunk.iter().zip(&texts).enumerate() {
                let i = chunk_no * READ_AHEAD + j;
                if plan.learn_only > 0 {
                    if i < plan.learn_only {
                        filter
                            .learn(&m.id, bytes, m.gold)
                            .map_err(|e| fail(&m.id, e))?;
                    } else {
                        let j = filter.score(&m.id, bytes).map_err(|e| fail(&m.id, e))?;
                        outcomes.push(outcome(m, j, false));
                    }
                } else {
                    let learn_if = |verdict| plan.train.should_learn(i, m.gold, verdict);
                    let j = filter
                        .score_then_learn(&m.id, bytes, m.gold, &learn_if)
                        .map_err(|e| fail(&m.id, e))?;
                    // `should_learn` is a pure function: asked again, it
                    // says what the filter was told.
                    outcomes.push(outcome(m, j, learn_if(j.verdict)));
                }
                progress(i + 1, corpus.len());
            }
        }
        Ok::<(), EvalError>(())
    })?;
    Ok(outcomes)
}

fn outcome(m: &CorpusMessage, j: Judgement, taught: bool) -> Outcome {
    Outcome {
        id: m.id.clone(),
        gold: m.gold,
        score: j.score,
        judged_spam: j.verdict == Verdict::Spam,
        taught: Some(taught),
    }
}

/// One chunk of messages handed to [`Filter::prepare`], read on the
/// readers' pool in order — or by the replay itself when it reaches a
/// message no reader has started on, or while it waits for one: each
/// message is claimed once, by whichever thread gets to it first, so
/// neither waits for the other while there is reading to do. Early in a
/// replay the model is small, scoring and learning are quick and the
/// replay used to wait for the readers (perf, 2026-11-23: the replay's
/// thread about half busy in the first third of the SpamAssassin replay).
struct Chunk {
    messages: Vec<Vec<u8>>,
    claimed: Vec<AtomicBool>,
    /// The message as read (`None`: it did not read cleanly; the replay
    /// reads it again to report why).
    read: Vec<OnceLock<Option<ReadMessage>>>,
}

impl Chunk {
    /// Reads message `i` unless another thread has claimed it; true if
    /// this call read it.
    fn read_unless_claimed(&self, engine: &Engine, i: usize) -> bool {
        if self.claimed[i].swap(true, Ordering::AcqRel) {
            return false;
        }
        // A panic must still fill the slot: the replay may be waiting on it.
        let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            engine.read(&self.messages[i]).ok()
        }));
        let _ = self.read[i].set(read.ok().flatten());
        true
    }
}

/// The message id an in-process replay records a corpus message under: its
/// corpus path's xxh3-64, in hex.
///
/// Why not the path: a corpus's paths come in order (`data/000/001`,
/// `data/000/002`, …), so each click's ledger key (`L`, user, id;
/// `store/keys.rs`) was the user's largest, and a replay's one user has
/// no other user's keys between their ledger and their model's snapshot
/// (`M`, user): every insert landed in the sled leaf that holds the
/// snapshot, and sled's splits of that leaf rewrote it, multi-MB snapshot
/// and all (not every split: on trec06p 746 blob files for 37,821
/// inserts, about 2 GB written, and a fifth of the replay's profile in
/// sled's `apply_batch`); hashed, the replay runs
/// 1.29× as fast (docs/PERFORMANCE.md, "Session 31").
/// Hashed ids land anywhere in the user's range, so only an insert near
/// its end meets the snapshot's leaf. (A service has many users, and one
/// user's ledger is followed by the next user's; only the last user's
/// borders a snapshot.) Scores depend only on which ids are equal, which
/// hashing keeps: results files are byte-identical either way. 64-bit
/// hashes of a corpus's paths collide with probability about n²/2⁶⁵
/// (4·10⁻¹¹ for trec06p's 37,821). `chaff eval --server` still sends the
/// paths: there the ids are the service's to keep.
pub(crate) fn replay_message_id(path: &str) -> MessageId {
    let hash = xxhash_rust::xxh3::xxh3_64(path.as_bytes());
    MessageId::new(format!("{hash:016x}")).expect("16 hex digits are a valid id")
}

/// The library's own engine as a [`Filter`], for one user. Messages are
/// read ahead ([`Engine::read`], on a pool of their own, in the background
/// while the replay scores and learns the chunk before; see [`Chunk`]);
/// scoring and learning then use the read message, so each message is
/// tokenized once.
pub struct EngineFilter {
    engine: Arc<Engine>,
    user: UserId,
    /// Receivers of retired chunks whose readers may still be finishing:
    /// retiring waits for nothing (with several readers, the one still
    /// inside a retired chunk's job may be reading a later chunk first);
    /// `Drop` waits for them.
    retired: Vec<Receiver<()>>,
    /// Chunks handed to [`Filter::prepare`] and not yet retired, by number
    /// (counting `prepare` calls from 0), with a receiver that yields once
    /// the readers are done with that chunk.
    chunks: std::collections::VecDeque<(u64, Arc<Chunk>, Receiver<()>)>,
    /// Where each prepared message is: chunk number and index.
    index: FxHashMap<String, (u64, usize)>,
    /// Chunks handed to [`Filter::prepare`] so far.
    prepared: u64,
    /// Threads that read ahead: one fewer than the cores (at least one), so
    /// the replay's own thread — score, learn, store, one message after
    /// another — keeps a core to itself. With rayon's global pool (a thread
    /// per core) the readers took turns with it on this 2-core machine and
    /// the replay was slower (2026-11-23, spamassassin corpus, seven runs
    /// each alternating: median 8,661 messages/s against 9,244).
    readers: Arc<rayon::ThreadPool>,
    /// The byte-gram regression beside the model (`chaff eval --grams`;
    /// research, not in the service: `classify::grams`).
    grams: Option<(GramParams, GramModel)>,
    /// The regression learns nothing from the replay ([`AfterSeed::learns`]).
    grams_frozen: bool,
}

/// What a seeded regression does during the replay
/// ([`EngineFilter::seed_grams`]): two choices, each with its flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AfterSeed {
    /// Learns on from the user's clicks and delivered mail (the mailbox's
    /// own weights over the seed); `false` (`--grams-frozen`): the seed
    /// alone, a shared table no click changes, so nothing to undo on
    /// Forget — the clicks still count towards the say.
    pub learns: bool,
    /// The seed's clicked ham counts towards the say, so it has its full
    /// say from the first message; `false` (`--grams-user-ramp`): the say
    /// waits for the user's own clicked ham ([`GramModel::over`]).
    pub seed_says: bool,
}

impl EngineFilter {
    pub fn new(engine: Arc<Engine>, user: UserId) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let readers = rayon::ThreadPoolBuilder::new()
            .num_threads(cores.saturating_sub(1).max(1))
            .thread_name(|i| format!("chaff-eval-read-{i}"))
            .build()
            .expect("a thread pool for reading ahead");
        Self {
            engine,
            user,
            retired: Vec::new(),
            chunks: Default::default(),
            index: FxHashMap::default(),
            prepared: 0,
            readers: Arc::new(readers),
            grams: None,
            grams_frozen: false,
        }
    }

    /// Scores with the byte-gram regression beside the model, as
    /// `chaff eval --grams` does (research; docs/ACCURACY.md "Session 34").
    pub fn with_grams(mut self, params: GramParams) -> Self {
        self.grams = Some((params, GramModel::default()));
        self
    }

    /// Teaches the regression, before the replay, every message of
    /// `seeds` (an operator's labelled corpora: the shared model's seed),
    /// interleaved by relative position as `chaff eval`'s several
    /// mailboxes are ([`multi::Arrival::Together`]), so that no corpus
    /// has the last word; `after`: what it does in the replay. Returns
    /// the messages taught. Nothing without `--grams`.
    pub fn seed_grams(
        &mut self,
        seeds: &[Vec<CorpusMessage>],
        after: AfterSeed,
    ) -> Result<usize, EvalError> {
        let Some((params, model)) = &mut self.grams else {
            return Ok(0);
        };
        let lens: Vec<usize> = seeds.iter().map(Vec::len).collect();
        let order = multi::arrival_order_of(&lens, multi::Arrival::Together);
        // The operator's table, taught apart; the user's regression adds
        // its own weights to it, as a service would keep them.
        let mut teacher = GramModel::default();
        for &(c, i) in &order {
            let m = &seeds[c][i];
            let message = std::fs::read(&m.path).map_err(|source| EvalError::Read {
                path: m.path.clone(),
                source,
            })?;
            let grams = Grams::of(&message, params);
            teacher.learn(&grams, teacher.z(&grams, params), m.gold, 1.0, params);
        }
        debug_assert!(model.is_empty(), "seeded before the replay");
        *model = GramModel::over(std::sync::Arc::new(teacher.into_seed()), after.seed_says);
        self.grams_frozen = !after.learns;
        Ok(order.len())
    }

    /// The regression's size, if it runs: grams with a weight of the
    /// user's own, and of the seed's.
    pub fn gram_weights(&self) -> Option<(usize, usize)> {
        self.grams.as_ref().map(|(_, m)| (m.len(), m.seed_len()))
    }

    /// The read message: prepared ahead (read here if no reader has
    /// started on it yet, else waited for), or read now. An `Arc` of its
    /// chunk comes with it, so the message outlives `&mut self`.
    fn read(&mut self, id: &str, message: &[u8]) -> Result<Prepared, String> {
        if let Some(&(chunk_no, i)) = self.index.get(id)
            && let Some((_, chunk, _)) = self.chunks.iter().find(|(n, ..)| *n == chunk_no)
        {
            let chunk = chunk.clone();
            if !chunk.read_unless_claimed(&self.engine, i) {
                // A reader is on it: rather than wait idle, read later
                // messages of the chunk that no reader has started on,
                // until it is done.
                let mut later = i + 1;
                while chunk.read[i].get().is_none() && later < chunk.messages.len() {
                    chunk.read_unless_claimed(&self.engine, later);
                    later += 1;
                }
            }
            if chunk.read[i].wait().is_some() {
                return Ok(Prepared::Ahead(chunk, i));
            }
        }
        // Not prepared, or it did not read cleanly: read it now, for the
        // message or the error.
        let read = self.engine.read(message).map_err(|e| e.to_string())?;
        Ok(Prepared::Now(Box::new(read)))
    }
}

/// A message as [`EngineFilter::read`] gives it.
enum Prepared {
    Ahead(Arc<Chunk>, usize),
    Now(Box<ReadMessage>),
}

impl Prepared {
    fn get(&self) -> &ReadMessage {
        match self {
            Prepared::Ahead(chunk, i) => chunk.read[*i]
                .get()
                .and_then(Option::as_ref)
                .expect("a message prepared ahead was read cleanly"),
            Prepared::Now(read) => read,
        }
    }
}

impl Drop for EngineFilter {
    /// Waits for chunks still being read: their readers hold the engine,
    /// which must close (and its store with it) before the caller removes
    /// the replay's data directory.
    fn drop(&mut self) {
        for done in self.retired.drain(..) {
            let _ = done.recv();
        }
        for (_, _, done) in self.chunks.drain(..) {
            let _ = done.recv();
        }
    }
}

impl Filter for EngineFilter {
    fn prepare(&mut self, upcoming: &[(&str, &[u8])]) {
        use rayon::prelude::*;
        // Chunk `n` arrives while the replay is about to score chunk
        // `n - CHUNKS_AHEAD`: keep that one and later, retire the ones
        // before (all their messages were claimed and read; a reader's job
        // may still be finishing: `retired`).
        let n = self.prepared;
        while let Some(&(oldest, ..)) = self.chunks.front()
            && oldest + (CHUNKS_AHEAD as u64) < n
        {
            let (_, _, done) = self.chunks.pop_front().expect("a chunk");
            self.retired.push(done);
            self.index.retain(|_, (c, _)| *c != oldest);
        }
        self.retired
            .retain(|done| matches!(done.try_recv(), Err(TryRecvError::Empty)));
        self.prepared += 1;
        let chunk = Arc::new(Chunk {
            messages: upcoming.iter().map(|(_, m)| m.to_vec()).collect(),
            claimed: upcoming.iter().map(|_| AtomicBool::new(false)).collect(),
            read: upcoming.iter().map(|_| OnceLock::new()).collect(),
        });
        for (i, (id, _)) in upcoming.iter().enumerate() {
            self.index.insert(id.to_string(), (n, i));
        }
        let (tx, done) = sync_channel(1);
        self.chunks.push_back((n, chunk.clone(), done));
        let engine = self.engine.clone();
        self.readers.spawn(move || {
            (0..chunk.messages.len()).into_par_iter().for_each(|i| {
                chunk.read_unless_claimed(&engine, i);
            });
            // Done with the engine before saying so: `Drop` relies on it.
            drop((engine, chunk));
            let _ = tx.send(());
        });
    }

    fn score(&mut self, id: &str, message: &[u8]) -> Result<Judgement, String> {
        let (engine, user) = (self.engine.clone(), self.user.clone());
        let read = self.read(id, message)?;
        let s = engine.score(&user, read.get()).map_err(|e| e.to_string())?;
        if let Some((params, model)) = &self.grams {
            let z = model.z(&Grams::of(message, params), params);
            let cutoffs = crate::classify::Cutoffs::of(&engine.settings().params);
            let (score, verdict) = model.judge(s.log_odds, z, cutoffs, params);
            return Ok(Judgement { score, verdict });
        }
        Ok(Judgement {
            score: s.log_odds,
            verdict: s.verdict,
        })
    }

    fn learn(&mut self, id: &str, message: &[u8], label: Label) -> Result<(), String> {
        // The corpus path names the message (corpora repeat Message-IDs),
        // hashed (`replay_message_id`).
        let message_id = replay_message_id(id);
        let (engine, user) = (self.engine.clone(), self.user.clone());
        let read = self.read(id, message)?;
        engine
            .train_read(&user, read.get(), label, Some(message_id))
            .map_err(|e| e.to_string())?;
        if let Some((params, model)) = &mut self.grams {
            if self.grams_frozen {
                model.count_lesson(label, 1.0);
            } else {
                let grams = Grams::of(message, params);
                model.learn(&grams, model.z(&grams, params), label, 1.0, params);
            }
        }
        Ok(())
    }

    fn score_then_learn(
        &mut self,
        id: &str,
        message: &[u8],
        gold: Label,
        learn_if: &dyn Fn(Verdict) -> bool,
    ) -> Result<Judgement, String> {
        let message_id = replay_message_id(id);
        let (engine, user) = (self.engine.clone(), self.user.clone());
        let read = self.read(id, message)?;
        let frozen = self.grams_frozen;
        if let Some((params, model)) = &mut self.grams {
            // The model's score, the regression's, then the same lessons as
            // `score_then_train` given the combined verdict: a click, or
            // delivered mail learned as ham at a lower rate.
            let grams = Grams::of(message, params);
            let z = model.z(&grams, params);
            let s = engine.score(&user, read.get()).map_err(|e| e.to_string())?;
            model.count_scored();
            let cutoffs = crate::classify::Cutoffs::of(&engine.settings().params);
            let (score, verdict) = model.judge(s.log_odds, z, cutoffs, params);
            if learn_if(verdict) {
                engine
                    .train_read(&user, read.get(), gold, Some(message_id))
                    .map_err(|e| e.to_string())?;
                if frozen {
                    model.count_lesson(gold, 1.0);
                } else {
                    model.learn(&grams, z, gold, 1.0, params);
                }
            } else if verdict != Verdict::Spam {
                engine
                    .learn_delivered(&user, read.get(), &message_id)
                    .map_err(|e| e.to_string())?;
                if frozen {
                    model.count_lesson(Label::Ham, params.delivered_share);
                } else {
                    model.learn(&grams, z, Label::Ham, params.delivered_share, params);
                }
            }
            return Ok(Judgement { score, verdict });
        }
        let (s, _) = engine
            .score_then_train(&user, read.get(), gold, Some(message_id), |s| {
                learn_if(s.verdict)
            })
            .map_err(|e| e.to_string())?;
        Ok(Judgement {
            score: s.log_odds,
            verdict: s.verdict,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ReplayStore;

    struct Oracle {
        learned: Vec<String>,
    }

    impl Filter for Oracle {
        fn score(&mut self, _id: &str, message: &[u8]) -> Result<Judgement, String> {
            let spam = message.starts_with(b"spam");
            let verdict = if message.ends_with(b"?") {
                Verdict::Unsure
            } else if spam {
                Verdict::Spam
            } else {
                Verdict::Ham
            };
            Ok(Judgement {
                score: if spam { 0.9 } else { 0.1 },
                verdict,
            })
        }
        fn learn(&mut self, id: &str, _m: &[u8], _l: Label) -> Result<(), String> {
            self.learned.push(id.to_string());
            Ok(())
        }
    }

    fn corpus(dir: &Path) -> Vec<CorpusMessage> {
        std::fs::write(dir.join("a"), "spam!").unwrap();
        std::fs::write(dir.join("b"), "ham").unwrap();
        std::fs::write(dir.join("c"), "spam?").unwrap();
        std::fs::write(dir.join("d"), "ham but spam").unwrap();
        std::fs::write(dir.join("index"), "spam a\nham b\n\nspam c\nspam d\n").unwrap();
        read_index(&dir.join("index")).unwrap()
    }

    /// The engine without read-ahead: each message read when it is scored
    /// and again when it is learned.
    struct Unprepared(Engine, UserId);

    impl Filter for Unprepared {
        fn score(&mut self, _id: &str, message: &[u8]) -> Result<Judgement, String> {
            let s = self.0.score(&self.1, message).map_err(|e| e.to_string())?;
            Ok(Judgement {
                score: s.log_odds,
                verdict: s.verdict,
            })
        }
        fn learn(&mut self, id: &str, message: &[u8], label: Label) -> Result<(), String> {
            let id = Some(MessageId::new(id).unwrap());
            self.0
                .train(&self.1, message, label, id)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    }

    #[test]
    fn replay_ids_of_paths_in_order_are_not_in_order() {
        // The property the hashed ids are for: a corpus's paths arrive in
        // order, and their ledger keys must not (`replay_message_id`). Ids
        // in random order set a new largest about ln 64 + 0.58 ≈ 5 times
        // in 64; the paths themselves, 64 times.
        let ids: Vec<String> = (0..64)
            .map(|i| {
                let path = format!("data/{:03}/{:03}", i / 8, i % 8);
                replay_message_id(&path).as_str().to_owned()
            })
            .collect();
        let mut largest = String::new();
        let mut new_largest = 0;
        for id in &ids {
            if *id > largest {
                largest = id.clone();
                new_largest += 1;
            }
        }
        assert!(new_largest <= 16, "{new_largest} of 64: {ids:?}");
        // One path, one id, every time; distinct paths, distinct ids.
        assert_eq!(replay_message_id("data/000/000").as_str(), ids[0]);
        let mut distinct = ids.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), ids.len());
    }

    #[test]
    fn a_replay_records_each_message_under_its_paths_hash() {
        // What `replay_message_id` is for holds only if the replay uses it:
        // each learned message can be forgotten by its path's hash, and by
        // nothing the path itself names.
        let dir = tempfile::tempdir().unwrap();
        let mut index = String::new();
        for i in 0..6 {
            let (gold, body) = if i % 2 == 0 {
                ("spam", "cheap pills buy now")
            } else {
                ("ham", "meeting notes agenda")
            };
            let text = format!("Subject: message {i}\r\n\r\n{body} {i}\r\n");
            std::fs::write(dir.path().join(format!("m{i}")), text).unwrap();
            index.push_str(&format!("{gold} m{i}\n"));
        }
        std::fs::write(dir.path().join("index"), index).unwrap();
        let corpus = read_index(&dir.path().join("index")).unwrap();
        let user = UserId::new("replay").unwrap();
        let store = ReplayStore::open_replay(&dir.path().join("store"), 8 << 20).unwrap();
        let engine = Arc::new(Engine::new(store, Default::default()).unwrap());
        let plan = Plan {
            train: TrainMode::Every,
            learn_only: 0,
        };
        let mut filter = EngineFilter::new(engine.clone(), user.clone());
        replay(&corpus, &mut filter, plan, |_, _| {}).unwrap();
        drop(filter);
        let path = MessageId::new(corpus[0].id.as_str()).unwrap();
        assert!(engine.forget(&user, &path).is_err());
        for m in &corpus {
            engine.forget(&user, &replay_message_id(&m.id)).unwrap();
        }
    }

    #[test]
    fn reading_ahead_in_the_background_changes_no_score() {
        // Over five read-ahead chunks, so messages are prepared up to two
        // chunks before they are scored and learned, and old chunks are
        // dropped: every score must be the one of reading on demand.
        let dir = tempfile::tempdir().unwrap();
        let mut index = String::new();
        for i in 0..(4 * READ_AHEAD + 40) {
            let spam = i % 3 == 0;
            let body = if spam {
                format!("cheap pills offer {i} buy now winner")
            } else {
                format!("meeting notes {i} agenda project budget")
            };
            let text = format!("Subject: message {i}\r\n\r\n{body}\r\n");
            std::fs::write(dir.path().join(format!("m{i}")), text).unwrap();
            index.push_str(&format!("{} m{i}\n", if spam { "spam" } else { "ham" }));
        }
        std::fs::write(dir.path().join("index"), index).unwrap();
        let corpus = read_index(&dir.path().join("index")).unwrap();
        let user = UserId::new("replay").unwrap();
        let engine = |name: &str| {
            let path = dir.path().join(name);
            Engine::new(
                ReplayStore::open_replay(&path, 8 << 20).unwrap(),
                Default::default(),
            )
            .unwrap()
        };
        let plan = Plan {
            train: TrainMode::Every,
            learn_only: 0,
        };
        let ahead = replay(
            &corpus,
            &mut EngineFilter::new(Arc::new(engine("ahead")), user.clone()),
            plan,
            |_, _| {},
        )
        .unwrap();
        let on_demand = replay(
            &corpus,
            &mut Unprepared(engine("on-demand"), user),
            plan,
            |_, _| {},
        )
        .unwrap();
        assert_eq!(ahead, on_demand);
        assert!(ahead.iter().any(|o| o.judged_spam) && ahead.iter().any(|o| !o.judged_spam));
    }

    #[test]
    fn a_missing_file_stops_the_replay_with_its_path() {
        // In a chunk past the first, so the error comes from the disk
        // thread (the replay asks for it before scoring the first chunk);
        // the replay must return it, not hang or panic.
        let dir = tempfile::tempdir().unwrap();
        let mut index = String::new();
        for i in 0..(3 * READ_AHEAD + 5) {
            if i != 2 * READ_AHEAD + 3 {
                std::fs::write(dir.path().join(format!("m{i}")), "ham").unwrap();
            }
            index.push_str(&format!("ham m{i}\n"));
        }
        std::fs::write(dir.path().join("index"), index).unwrap();
        let corpus = read_index(&dir.path().join("index")).unwrap();
        let mut f = Oracle { learned: vec![] };
        let plan = Plan {
            train: TrainMode::Every,
            learn_only: 0,
        };
        let err = replay(&corpus, &mut f, plan, |_, _| {}).unwrap_err();
        let missing = format!("m{}", 2 * READ_AHEAD + 3);
        assert!(
            matches!(&err, EvalError::Read { path, .. } if path.ends_with(&missing)),
            "{err}"
        );
    }

    #[test]
    fn a_filter_error_stops_the_replay_while_the_disk_thread_is_ahead() {
        // The filter fails on the first message, with chunks still to read:
        // the disk thread is blocked on a full channel, and must stop when
        // the replay returns (a hang here would hang the test).
        struct FailsAtOnce;
        impl Filter for FailsAtOnce {
            fn score(&mut self, _id: &str, _m: &[u8]) -> Result<Judgement, String> {
                Err("refused".into())
            }
            fn learn(&mut self, _id: &str, _m: &[u8], _l: Label) -> Result<(), String> {
                Err("refused".into())
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let mut index = String::new();
        for i in 0..(6 * READ_AHEAD) {
            std::fs::write(dir.path().join(format!("m{i}")), "ham").unwrap();
            index.push_str(&format!("ham m{i}\n"));
        }
        std::fs::write(dir.path().join("index"), index).unwrap();
        let corpus = read_index(&dir.path().join("index")).unwrap();
        let plan = Plan {
            train: TrainMode::Every,
            learn_only: 0,
        };
        let err = replay(&corpus, &mut FailsAtOnce, plan, |_, _| {}).unwrap_err();
        assert!(
            matches!(&err, EvalError::Filter { id, message } if id == "m0" && message == "refused"),
            "{err}"
        );
    }

    #[test]
    fn index_lines_become_messages_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let c = corpus(dir.path());
        let ids: Vec<&str> = c.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c", "d"]);
        assert_eq!(c[1].gold, Label::Ham);
        std::fs::write(dir.path().join("bad"), "spam a\nmaybe b\n").unwrap();
        let err = read_index(&dir.path().join("bad")).unwrap_err().to_string();
        assert!(err.contains(":2:"), "{err}");
    }

    #[test]
    fn errors_mode_learns_only_wrong_or_unsure() {
        let dir = tempfile::tempdir().unwrap();
        let c = corpus(dir.path());
        let mut f = Oracle { learned: vec![] };
        let plan = Plan {
            train: TrainMode::Errors,
            learn_only: 0,
        };
        let out = replay(&c, &mut f, plan, |_, _| {}).unwrap();
        assert_eq!(out.len(), 4);
        assert_eq!(f.learned, ["c", "d"]);
        let mut f = Oracle { learned: vec![] };
        replay(
            &c,
            &mut f,
            Plan {
                train: TrainMode::Every,
                learn_only: 0,
            },
            |_, _| {},
        )
        .unwrap();
        assert_eq!(f.learned.len(), 4);
    }

    #[test]
    fn results_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let c = corpus(dir.path());
        let out = replay(
            &c,
            &mut Oracle { learned: vec![] },
            Plan {
                train: TrainMode::Errors,
                learn_only: 0,
            },
            |_, _| {},
        )
        .unwrap();
        let taught: Vec<Option<bool>> = out.iter().map(|o| o.taught).collect();
        assert_eq!(taught, [Some(false), Some(false), Some(true), Some(true)]);
        let mut bytes = Vec::new();
        write_results("chaff eval\nsecond line", &out, &mut bytes).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with("# chaff eval second line\na "), "{text}");
        std::fs::write(dir.path().join("r"), &bytes).unwrap();
        assert_eq!(read_results(&dir.path().join("r")).unwrap(), out);
        std::fs::write(dir.path().join("bad"), "a 0.5 spam\n").unwrap();
        assert!(read_results(&dir.path().join("bad")).is_err());
        std::fs::write(dir.path().join("bad5"), "a 0.5 spam ham yes\n").unwrap();
        let err = read_results(&dir.path().join("bad5")).unwrap_err();
        assert!(err.to_string().contains(":1:"), "{err}");
    }

    #[test]
    fn four_column_results_files_still_read_with_taught_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old");
        std::fs::write(&path, "a 0.9 spam spam\nb 1e-3 ham ham\n").unwrap();
        let out = read_results(&path).unwrap();
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|o| o.taught.is_none()));
        assert!(out[0].judged_spam && !out[1].judged_spam);
    }

    #[test]
    fn clicks_mode_learns_only_what_the_user_clicks() {
        // Oracle: a = spam/SPAM (right), b = ham/HAM (right), c = spam/UNSURE
        // (delivered: clickable), d = spam/HAM (missed: clickable). Unsure
        // ham (e) sits in the inbox, right, so unlike `errors` it is never
        // learned; f is ham filed as spam.
        let dir = tempfile::tempdir().unwrap();
        let mut c = corpus(dir.path());
        std::fs::write(dir.path().join("e"), "ham?").unwrap();
        std::fs::write(dir.path().join("f"), "spam-looking ham").unwrap();
        std::fs::write(dir.path().join("index2"), "ham e\nham f\n").unwrap();
        c.extend(read_index(&dir.path().join("index2")).unwrap());
        let run = |train| {
            let mut f = Oracle { learned: vec![] };
            let plan = Plan {
                train,
                learn_only: 0,
            };
            let out = replay(&c, &mut f, plan, |_, _| {}).unwrap();
            let taught: Vec<&str> = out
                .iter()
                .filter(|o| o.taught == Some(true))
                .map(|o| o.id.as_str())
                .collect();
            assert_eq!(taught, f.learned, "the outcomes say what was learned");
            f.learned
        };
        let diligent = TrainMode::Clicks(Clicks::profile(Profile::Diligent, 0));
        assert_eq!(run(diligent), ["c", "d", "f"]);
        assert_eq!(run(TrainMode::Errors), ["c", "d", "e", "f"]);
        let spam_only = TrainMode::Clicks(Clicks::new(1.0, 0.0, 0).unwrap());
        assert_eq!(run(spam_only), ["c", "d"]);
        // p = 0.5 from seed 0: message 2 (c) draws 0.026…, message 3 (d)
        // 0.971… (see clicks::draw), so only c is clicked.
        assert!(clicks::draw(0, 2) < 0.5 && clicks::draw(0, 3) >= 0.5);
        let half = TrainMode::Clicks(Clicks::new(0.5, 0.0, 0).unwrap());
        assert_eq!(run(half), ["c"]);
    }

    #[test]
    fn split_learns_the_head_and_scores_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let c = corpus(dir.path());
        let mut f = Oracle { learned: vec![] };
        let out = replay(
            &c,
            &mut f,
            Plan {
                train: TrainMode::Every,
                learn_only: 2,
            },
            |_, _| {},
        )
        .unwrap();
        assert_eq!(f.learned, ["a", "b"]);
        let ids: Vec<&str> = out.iter().map(|o| o.id.as_str()).collect();
        assert_eq!(ids, ["c", "d"]);
    }
}
