//! The decision log: every Score decision, kept for a while so support can
//! answer "why was this message rejected or filed as spam?" from data.
//!
//! Scoring must not wait on it: decisions go through a bounded channel to
//! one writer thread that appends them in batches. If the writer falls
//! behind, new decisions are dropped and counted (a log line says how
//! many) rather than slowing the mail path. Records are not flushed on
//! their own; sled's background flush (500 ms) bounds what a crash loses.
//!
//! Retention: each user keeps at most `per_user` decisions and none older
//! than `retention`; the writer trims a user's range as it grows and sweeps
//! every user hourly.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Condvar, Mutex, RwLock};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::error::Error;
use crate::policy::{Action, RuleKind};
use crate::store::Backend;
use crate::types::{MessageId, UserId, Verdict};

/// A token's part in a decision: its readable name, its spam probability
/// f(w), and its evidence ln(f / (1 − f)) (positive: spammy).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Feature {
    pub name: String,
    pub probability: f64,
    pub contribution: f64,
}

/// One logged decision, as support reads it back. Stored as JSON; the typed
/// fields are stored as the strings they were before they had types (ids as
/// themselves, `"spam"`, `"spam-folder"`, `"block-list"`), so records
/// written before read back unchanged, and a record with a value none of
/// the types has fails to decode rather than reading as something else.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub user: UserId,
    pub message_id: MessageId,
    pub sender: Option<String>,
    pub client_ip: Option<IpAddr>,
    /// xxh3-64 of the trimmed Subject, hex: matches a subject support is
    /// told without storing what users receive.
    pub subject_digest: Option<String>,
    pub spam_probability: f64,
    pub verdict: Verdict,
    pub action: Action,
    pub rule: RuleKind,
    pub reason: String,
    pub notes: Vec<String>,
    pub smtp_reply: Option<String>,
    pub spam_learned: u64,
    pub ham_learned: u64,
    pub spam_features: Vec<Feature>,
    pub ham_features: Vec<Feature>,
    /// How much of the score came from the user's own statistics (the rest
    /// from the shared model). Records from before sharing read as 1.
    #[serde(default = "all_the_users")]
    pub user_share: f64,
}

fn all_the_users() -> f64 {
    1.0
}

impl DecisionRecord {
    /// Whether `sender` (an address, or a domain) names this record's sender.
    /// An internationalized domain is compared in its ASCII form, as the
    /// sender is recorded (`mail::Address`).
    pub fn sent_by(&self, sender: &str) -> bool {
        let want = sender.trim();
        let ascii = |d: &str| crate::mail::ascii_domain(d).unwrap_or_else(|_| d.to_lowercase());
        let want = match want.rsplit_once('@') {
            Some((local, domain)) => format!("{}@{}", local.to_ascii_lowercase(), ascii(domain)),
            None => ascii(want),
        };
        match &self.sender {
            Some(s) if want.contains('@') => *s == want,
            Some(s) => s
                .rsplit_once('@')
                .is_some_and(|(_, d)| d == want || d.ends_with(&format!(".{want}"))),
            None => false,
        }
    }
}

/// The digest stored for a Subject (see [`DecisionRecord::subject_digest`]).
pub fn subject_digest(subject: &str) -> String {
    format!(
        "{:016x}",
        xxhash_rust::xxh3::xxh3_64(subject.trim().as_bytes())
    )
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How long and how many decisions are kept.
#[derive(Clone, Debug)]
pub struct Retention {
    pub max_age: Duration,
    pub per_user: usize,
    /// Decisions waiting for the writer before new ones are dropped.
    pub queue: usize,
}

impl Default for Retention {
    /// 30 days covers the questions support gets ("last week's mail from
    /// X"); 1,000 per user bounds disk at about 1 KB × 1,000 per mailbox.
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(30 * 24 * 3600),
            per_user: 1000,
            queue: 16_384,
        }
    }
}

/// A decision on its way to the writer: user, time (ms) and JSON.
type Queued = (UserId, u64, Vec<u8>);

/// The decision log's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecisionStats {
    /// Decisions waiting for the writer now.
    pub queued: u64,
    /// Decisions dropped because the writer was behind.
    pub dropped: u64,
}

/// The sending side, held by the engine.
pub struct DecisionLog {
    /// `None` once closed. Senders are shared under the read lock.
    tx: RwLock<Option<SyncSender<Queued>>>,
    dropped: Arc<AtomicU64>,
    /// Decisions queued so far, and (under the lock) those the writer has
    /// finished with: [`DecisionLog::settle`] waits for the second to
    /// reach the first.
    queued: AtomicU64,
    done: Arc<(Mutex<u64>, Condvar)>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl DecisionLog {
    /// A log that keeps nothing: for a store without the decision log
    /// (`store::Aggregate::Decisions`), where FindDecisions
    /// is refused rather than answered from nowhere.
    pub fn off() -> Self {
        Self {
            tx: RwLock::new(None),
            dropped: Arc::default(),
            queued: AtomicU64::new(0),
            done: Arc::new((Mutex::new(0), Condvar::new())),
            writer: Mutex::new(None),
        }
    }

    /// Starts the writer thread over `store`.
    pub fn start(store: Arc<dyn Backend>, retention: Retention) -> Self {
        let (tx, rx) = sync_channel(retention.queue.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let done = Arc::new((Mutex::new(0), Condvar::new()));
        let (d, finished) = (dropped.clone(), done.clone());
        let writer = std::thread::Builder::new()
            .name("chaff-decisions".into())
            .spawn(move || write_loop(&*store, &rx, &retention, &d, &finished))
            .expect("spawn the decision log writer");
        Self {
            tx: RwLock::new(Some(tx)),
            dropped,
            queued: AtomicU64::new(0),
            done,
            writer: Mutex::new(Some(writer)),
        }
    }

    /// Queues a decision; never blocks.
    pub fn record(&self, user: &UserId, record: &DecisionRecord) {
        let tx = self.tx.read();
        let Some(tx) = tx.as_ref() else { return };
        let json = serde_json::to_vec(record).expect("a decision serialises");
        match tx.try_send((user.clone(), record.time_ms, json)) {
            Ok(()) => {
                self.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Waits (at most `timeout`) until the writer has finished with every
    /// decision queued before the call — so deleting a user's decisions
    /// afterwards leaves none of them to be written later. Returns whether
    /// it got there in time.
    pub fn settle(&self, timeout: Duration) -> bool {
        if self.tx.read().is_none() {
            return true;
        }
        let target = self.queued.load(Ordering::Relaxed);
        let (lock, cond) = &*self.done;
        let mut done = lock.lock();
        cond.wait_while_for(&mut done, |d| *d < target, timeout);
        *done >= target
    }

    /// The writer's backlog and what was dropped, for metrics.
    pub fn stats(&self) -> DecisionStats {
        let done = *self.done.0.lock();
        DecisionStats {
            queued: self.queued.load(Ordering::Relaxed).saturating_sub(done),
            dropped: self.dropped(),
        }
    }

    /// Decisions dropped because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Writes what is queued and stops the writer; later decisions are
    /// dropped.
    pub fn close(&self) {
        self.tx.write().take();
        if let Some(w) = self.writer.lock().take() {
            let _ = w.join();
        }
    }
}

impl Drop for DecisionLog {
    fn drop(&mut self) {
        self.close();
    }
}

/// How long the writer lets decisions gather after the first of a burst:
/// a decision is findable about this much later (support asks about mail
/// minutes or days old).
const LINGER: Duration = Duration::from_millis(20);

fn write_loop(
    store: &dyn Backend,
    rx: &Receiver<Queued>,
    retention: &Retention,
    dropped: &AtomicU64,
    done: &(Mutex<u64>, Condvar),
) {
    // Per user: decisions written since the last trim. Trimming every
    // `per_user / 4` keeps a user's range under 1.25 × per_user.
    let mut since_trim: FxHashMap<UserId, usize> = FxHashMap::default();
    let trim_every = (retention.per_user / 4).max(1);
    let mut last_sweep = Instant::now();
    let mut reported_drops = 0;
    let sweep = |store: &dyn Backend| -> Result<usize, Error> {
        // The ledger's undo window is swept on the same background
        // schedule: hourly, never on a request's path.
        match store.fold_ledger() {
            Ok(n) if n > 0 => info!(
                folded = n,
                "ledger: folded clicks older than the undo window"
            ),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "ledger: undo-window fold failed"),
        }
        let cutoff = now_ms().saturating_sub(retention.max_age.as_millis() as u64);
        let mut deleted = 0;
        for user in store.users_with_decisions_before(cutoff)? {
            deleted += store.trim_decisions(&user, cutoff, retention.per_user)?;
        }
        Ok(deleted)
    };
    match sweep(store) {
        Ok(n) if n > 0 => info!(deleted = n, "decision log: expired old decisions"),
        Ok(_) => {}
        Err(e) => warn!(error = %e, "decision log: retention sweep failed"),
    }
    loop {
        let first = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(item) => Some(item),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if first.is_some() {
            // Let a burst gather: while the writer sleeps rather than waits
            // on the channel, queueing a decision wakes no thread, so a
            // busy scorer pays no wake-up syscall per message, and sled
            // gets one batch per burst instead of one per decision.
            std::thread::sleep(LINGER);
        }
        let mut batch: Vec<Queued> = first.into_iter().collect();
        while batch.len() < 512 {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            if let Err(e) = store.append_decisions(&batch) {
                warn!(error = %e, lost = batch.len(), "decision log: write failed");
            }
            for (user, _, _) in &batch {
                let n = since_trim.entry(user.clone()).or_insert(0);
                *n += 1;
                if *n >= trim_every {
                    *n = 0;
                    let cutoff = now_ms().saturating_sub(retention.max_age.as_millis() as u64);
                    if let Err(e) = store.trim_decisions(user, cutoff, retention.per_user) {
                        warn!(error = %e, "decision log: trim failed");
                    }
                }
            }
            *done.0.lock() += batch.len() as u64;
            done.1.notify_all();
        }
        let d = dropped.load(Ordering::Relaxed);
        if d > reported_drops {
            warn!(
                dropped_total = d,
                "decision log: writer behind; decisions dropped (scoring was not slowed)"
            );
            reported_drops = d;
        }
        if last_sweep.elapsed() >= Duration::from_secs(3600) {
            last_sweep = Instant::now();
            since_trim.clear();
            if let Err(e) = sweep(store) {
                warn!(error = %e, "decision log: retention sweep failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(sender: &str) -> DecisionRecord {
        DecisionRecord {
            time_ms: 1,
            user: UserId::new("u").unwrap(),
            message_id: MessageId::new("m").unwrap(),
            sender: Some(sender.into()),
            client_ip: None,
            subject_digest: None,
            spam_probability: 0.5,
            verdict: Verdict::Unsure,
            action: Action::Deliver,
            rule: RuleKind::Model,
            reason: String::new(),
            notes: vec![],
            smtp_reply: None,
            spam_learned: 0,
            ham_learned: 0,
            spam_features: vec![],
            ham_features: vec![],
            user_share: 1.0,
        }
    }

    /// A record as the code before typed records wrote it (string fields),
    /// byte for byte.
    const STORED: &str = concat!(
        r#"{"time_ms":1764900000000,"user":"alice@example.com","#,
        r#""message_id":"<x1@pills.example>","sender":"promo@pills.example","#,
        r#""client_ip":"192.0.2.7","subject_digest":"00ff00ff00ff00ff","#,
        r#""spam_probability":0.9993,"verdict":"spam","action":"reject","#,
        r#""rule":"block-list","reason":"sender domain pills.example is on your block list","#,
        r#""notes":["an allow entry was ignored"],"#,
        r#""smtp_reply":"554 5.7.1 Message rejected by the recipient's policy","#,
        r#""spam_learned":12,"ham_learned":30,"#,
        r#""spam_features":[{"name":"body:pills","probability":0.99,"contribution":4.59511985013459}],"#,
        r#""ham_features":[],"user_share":0.75}"#
    );

    #[test]
    fn records_stored_before_typed_fields_decode_to_types_and_encode_to_the_same_bytes() {
        let r: DecisionRecord = serde_json::from_str(STORED).unwrap();
        assert_eq!(r.user, UserId::new("alice@example.com").unwrap());
        assert_eq!(r.message_id, MessageId::new("<x1@pills.example>").unwrap());
        assert_eq!(r.verdict, Verdict::Spam);
        assert_eq!(r.action, Action::Reject);
        assert_eq!(r.rule, RuleKind::BlockList);
        assert_eq!(serde_json::to_string(&r).unwrap(), STORED);
        // Every spelling the old code wrote decodes.
        for (verdict, action, rule) in [
            ("ham", "deliver", "model"),
            ("unsure", "spam-folder", "allow-list"),
            ("spam", "reject", "authentication"),
        ] {
            let json = STORED
                .replace(r#""verdict":"spam""#, &format!(r#""verdict":"{verdict}""#))
                .replace(r#""action":"reject""#, &format!(r#""action":"{action}""#))
                .replace(r#""rule":"block-list""#, &format!(r#""rule":"{rule}""#));
            let r: DecisionRecord = serde_json::from_str(&json).unwrap();
            assert_eq!(r.verdict.to_string(), verdict);
            assert_eq!(r.action.as_str(), action);
            assert_eq!(r.rule.as_str(), rule);
            assert_eq!(serde_json::to_string(&r).unwrap(), json);
        }
    }

    #[test]
    fn a_stored_value_no_type_has_fails_to_decode_instead_of_reading_as_unspecified() {
        for (from, to) in [
            (r#""verdict":"spam""#, r#""verdict":"maybe""#),
            (r#""action":"reject""#, r#""action":"bounce""#),
            (r#""rule":"block-list""#, r#""rule":"block list""#),
            (r#""user":"alice@example.com""#, r#""user":"""#),
        ] {
            let json = STORED.replace(from, to);
            assert!(
                serde_json::from_str::<DecisionRecord>(&json).is_err(),
                "{to} decoded"
            );
        }
    }

    #[test]
    fn sender_filter_takes_an_address_or_a_domain() {
        let r = record("news@mail.shop.example");
        assert!(r.sent_by("NEWS@mail.shop.example"));
        assert!(r.sent_by("shop.example"));
        assert!(r.sent_by("mail.shop.example"));
        assert!(!r.sent_by("hop.example"));
        assert!(!r.sent_by("other@mail.shop.example"));
        let idn = record("anna@xn--bcher-kva.example");
        assert!(idn.sent_by("bücher.example"));
        assert!(idn.sent_by("Anna@BÜCHER.example"));
        assert!(idn.sent_by("xn--bcher-kva.example"));
    }

    #[test]
    fn log_writes_trims_and_finds_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path(), 1 << 20).unwrap();
        let user = UserId::new("alice").unwrap();
        let log = DecisionLog::start(
            Arc::new(store.clone()),
            Retention {
                per_user: 8,
                ..Retention::default()
            },
        );
        let now = now_ms();
        for i in 0..20u64 {
            let mut r = record("a@b.example");
            r.time_ms = now - 1000 + i;
            r.message_id = MessageId::new(format!("m{i}")).unwrap();
            log.record(&user, &r);
        }
        log.close();
        let ids: Vec<String> = store
            .find_decisions(&user, 0, u64::MAX, 100, |j| {
                let r: DecisionRecord = serde_json::from_slice(j).unwrap();
                Ok(Some(r.message_id.to_string()))
            })
            .unwrap();
        assert_eq!(ids[0], "m19");
        // Trimmed to per_user at each quarter: never more than 1.25 × 8.
        assert!(ids.len() <= 10 && ids.len() >= 8, "{ids:?}");
    }
}
