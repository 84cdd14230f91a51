//! `chaff serve`: open storage, serve gRPC, shut down cleanly on SIGTERM or
//! Ctrl-C (in-flight requests finish, models are snapshotted, storage is
//! flushed).

use chaff::mail::auth::Border;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::net::TcpListener;
use tracing::info;

use super::parse_duration;
use super::values::not_negative;

use chaff::decisions::Retention;
use chaff::engine::{
    DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_SHARED_TOKENS, DEFAULT_MAX_USER_TOKENS, Engine,
    Settings, parse_bytes,
};
use chaff::service::admission::Limits as Admission;
use chaff::store::Store;
use chaff::tokenize::{Limits, Tokenizer};

/// Every value is checked at start-up (a zero limit, a size or duration
/// that overflows, an unknown log filter are refused with the flag named),
/// and every flag can also come from `--config FILE` (TOML, keys named as
/// the flags): flag > environment > file > default.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// A TOML file with any of the flags below as keys (`data =
    /// "/var/lib/chaff"`, `max-message-bytes = "10MiB"`). Flags and
    /// environment variables override it; unknown keys are an error.
    #[arg(long, env = "CHAFF_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Print the effective settings (as a config file, each with where it
    /// came from: flag, env, file or default) and exit without serving.
    #[arg(long)]
    pub(crate) print_config: bool,
    /// Where each value came from, for --print-config (filled in by
    /// `config::apply`).
    #[arg(skip)]
    pub(crate) origins: Vec<super::config::Origin>,
    /// Address to listen on; port 0 picks a free port (printed at start).
    /// A non-loopback address (e.g. 0.0.0.0:50051) needs --tls-cert/--tls-key
    /// and API keys (or --tls-client-ca), or --insecure.
    #[arg(long, env = "CHAFF_LISTEN", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Data directory (created if missing). One chaff process per directory.
    /// With --store redis://… it holds only the API keys file. A damaged
    /// directory (a file of it cut short or with flipped bytes) is refused
    /// at start with one line naming it: restore it from a backup. A
    /// damaged record of one user is answered DATA_LOSS naming the user and
    /// record; a damaged model snapshot with an intact ledger is mended by
    /// `chaff repair --user U` (docs/OPERATIONS.md, "Damaged data").
    #[arg(long, env = "CHAFF_DATA", default_value = "./chaff-data")]
    data: PathBuf,
    /// Where user data lives: `sled` (an embedded database in --data, the
    /// default) or `redis://HOST:PORT,HOST:PORT,…`, a Redis Cluster that
    /// several chaff processes share (list every seed node: with one, the
    /// client can take minutes to notice a failover). Any chaff process can
    /// then serve any user; route a user to one process (hash the user id)
    /// to keep their model cached there. Every RPC works on Redis (Backup
    /// writes a sled data directory, user by user; for a whole-cluster
    /// disaster keep the cluster's own RDB/AOF files too);
    /// --undo-window, --delivered-undo-window, --max-user-tokens and
    /// --max-shared-tokens hold there as on sled (a prune through one
    /// process is the model every process scores with); other processes'
    /// changes to the shared model and the operator's lists reach this one
    /// within about 100 ms (docs/SCALING.md).
    #[arg(long, env = "CHAFF_STORE", default_value = "sled", value_parser = Unechoed(store_location), value_name = "sled|redis://HOST:PORT,…")]
    store: StoreLocation,
    /// Redis replicas that must confirm each click (WAIT, on the primary of
    /// the user's slot) before it is acknowledged: an acknowledged click
    /// then survives the failover of its primary. A click not confirmed in
    /// time is answered UNAVAILABLE (it may have reached the primary; a
    /// retry is safe). 0 = do not wait. Only with --store redis://….
    #[arg(
        long,
        env = "CHAFF_REDIS_REPLICAS",
        default_value_t = 1,
        value_name = "N"
    )]
    redis_replicas: u32,
    /// Where the decision log goes (one record per Score: what support
    /// reads back with FindDecisions / `chaff why`). `same`: where the
    /// clicks are (--store). `redis://HOST:PORT,…`: a Redis Cluster of its
    /// own, so the log's writes (and their fsyncs under `appendfsync
    /// always`) stay off the primaries every Score reads; FindDecisions,
    /// ListUsers' last-scored time, ExportUser, Backup and DeleteUser then
    /// read and delete decisions there. It must answer at start; once
    /// running, a decision cluster that is down never fails or slows a
    /// Score (the log's background writer loses what it cannot write and
    /// logs "decision log: write failed") while FindDecisions answers
    /// UNAVAILABLE; it writes again once the cluster is back. There is no `off`: support must
    /// be able to answer "why was this rejected?". Only with --store
    /// redis://…; DeleteUser waits for --redis-replicas replicas there too.
    #[arg(long, env = "CHAFF_DECISION_STORE", default_value = "same", value_parser = Unechoed(decision_store), value_name = "same|redis://HOST:PORT,…")]
    decision_store: DecisionStore,
    /// Largest message accepted by Score and Train, in bytes; larger ones get
    /// RESOURCE_EXHAUSTED.
    /// (`1048576`, `10MiB`; at least 1 byte, at most 1 GiB).
    #[arg(long, env = "CHAFF_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES, value_parser = message_bytes)]
    max_message_bytes: usize,
    /// Storage page cache, in MiB (1 to 1048576).
    #[arg(long, env = "CHAFF_CACHE_MB", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    cache_mb: u64,
    /// Memory for user models kept hot (e.g. `512MiB`, `2GiB`). A model is
    /// loaded from disk at its user's first request and kept while there is
    /// room; beyond this budget the least recently used models are dropped
    /// and reloaded when needed (a snapshot read plus a short journal
    /// replay; nothing is lost). Estimated at ~36 bytes per model token: a
    /// user who has trained a few thousand messages has ~100k tokens, ~3.5
    /// MiB. The shared model counts against it too (held twice: its sum and
    /// each contributor's part), and is never evicted. An eighth of it is
    /// kept for the users' token dictionaries (~42 bytes per token a user
    /// ever stored; needed to learn and to load a model, not to score),
    /// least recently used dropped first. On top come sled's page cache
    /// (--cache-mb), the delivered-mail queue (~4 KiB a job: ~16 MiB at
    /// the default --delivered-queue) and a fixed overhead of ~45 MiB that
    /// does not grow with users, this budget or the cache: code ~13,
    /// sled's tables and its cache beyond --cache-mb ~10-20, allocator
    /// free space ~6-14, threads and buffers ~3 (measured with 1,000 and
    /// 3,000 users at 64-256 MiB, --cache-mb 8-128: docs/PERFORMANCE.md,
    /// "Memory within the flags"; docs/OPERATIONS.md, "Memory").
    /// Hits, misses and evictions are logged every --stats-interval.
    /// At least 1MiB.
    #[arg(long, env = "CHAFF_MODEL_MEMORY", default_value = "512MiB", value_parser = model_memory, help_heading = "Memory")]
    model_memory: usize,
    /// Most tokens one user's model keeps. A click that takes a model past
    /// it queues a background prune back to 90% of it: weak tokens (seen in
    /// under two messages, or too even between spam and ham to count) go
    /// before strong ones, and within each the ones learned longest ago go
    /// first (docs/ACCURACY.md, "Quota and expiry"). The default, 300000
    /// (~11 MiB in memory), cost at most +0.0033 (1-ROCA)% on the test
    /// corpora against no cap; SpamAssassin's cap is 150000. `0` = no cap.
    #[arg(long, env = "CHAFF_MAX_USER_TOKENS", default_value_t = DEFAULT_MAX_USER_TOKENS, help_heading = "Memory")]
    max_user_tokens: usize,
    /// Most tokens the shared model keeps (its sum over the operator's seed
    /// and consenting users' clicks), pruned by the same rule in the
    /// background. It is held in memory twice (the sum and each
    /// contributor's part) and counts against --model-memory: the default,
    /// 1000000, is ~70 MiB (2M tokens held at ~36 bytes). `0` = no cap.
    #[arg(long, env = "CHAFF_MAX_SHARED_TOKENS", default_value_t = DEFAULT_MAX_SHARED_TOKENS, help_heading = "Memory")]
    max_shared_tokens: usize,
    /// Learn mail delivered to the inbox as ham for users who have clicked
    /// at least once (`true` or `false`): at a twentieth of a click's
    /// weight, or up to one click's while the user's ham side weighs less
    /// than their spam side (less for a message under a twentieth of the
    /// user's mean message, such as an empty body). Most users only ever
    /// click Spam; this is how their model learns what their ham looks
    /// like. A later click on the same message replaces it exactly; it is
    /// never shared.
    /// docs/ACCURACY.md, "Learning from delivered mail".
    #[arg(long, env = "CHAFF_LEARN_DELIVERED", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    learn_delivered: bool,
    /// Delivered messages waiting to be learned before new ones are
    /// dropped. Score only queues its delivered-mail learning; a
    /// background worker learns it in batches, so a Score never waits for
    /// that write. A full queue drops (counted in `chaff stats` and
    /// /metrics, logged at most every 10 s): a light lesson lost, nothing
    /// acknowledged. A queued message holds its token ids (8 bytes each: about 8 KiB for a 1,000-token message).
    #[arg(long, env = "CHAFF_DELIVERED_QUEUE", default_value_t = chaff::engine::DEFAULT_DELIVERED_QUEUE, value_parser = at_least_one)]
    delivered_queue: usize,
    /// The authserv-id(s) your border MTA writes first in its
    /// Authentication-Results headers (mx.provider.example; several
    /// separated by commas). Set it: policy (allow entries, DMARC
    /// enforcement, trusted senders) then reads every Authentication-Results
    /// of the border's, one per milter included, and none a sender or
    /// another host wrote. Unset, only the topmost Authentication-Results
    /// is read, and a message the border wrote none for has the sender's
    /// read. docs/POLICY.md, "The sending IP and the trust boundary".
    #[arg(long, env = "CHAFF_AUTHSERV_ID", value_name = "ID,…", value_parser = Border::parse)]
    authserv_id: Option<Border>,
    /// Robinson's s for header tokens (0.1, the body's, turns it off): a smaller one lets header tokens decide sooner,
    /// which ranks better for users who click Not spam but misfiles ham of
    /// users who only click Spam unless --header-strength-ramp holds it
    /// back (docs/ACCURACY.md, "Session 14" and "Session 15").
    #[arg(long, env = "CHAFF_HEADER_STRENGTH", value_name = "S", value_parser = positive, help_heading = "Scoring",
          default_value_t = chaff::classify::Params::default().header_strength.unwrap_or(0.1))]
    header_strength: f64,
    /// With --header-strength: the header's s reaches it only once the
    /// user has clicked this many messages' worth of ham (mail learned
    /// from its delivery does not count); before, it moves from the body's
    /// s towards it in proportion, so a user who never clicks Not spam
    /// scores as without it (0: always in full). The split
    /// between clicked and delivered ham is kept by the store (format 8);
    /// ham learned before that counts as delivered.
    #[arg(long, env = "CHAFF_HEADER_STRENGTH_RAMP", value_name = "MESSAGES", value_parser = not_negative, help_heading = "Scoring",
          default_value_t = chaff::classify::Params::default().header_strength_ramp)]
    header_strength_ramp: f64,
    /// While a user has clicked less than 10 messages' worth of ham and
    /// their ham side holds fewer words than their spam side (token mass
    /// M, the sum of a side's counts), a token their model has never seen
    /// is estimated at most 1/(1 + (M_s/M_h)^γ), towards ham: γ (0.5 from
    /// Heaps' law); 0 turns it off. Why: after many Spam clicks, or
    /// one click and an empty-bodied ham, the first few delivered ham
    /// otherwise sent the next ones to the spam folder (docs/ACCURACY.md,
    /// "Session 17" and "Session 18"). Ham learned before store format 8
    /// counts as delivered, so an upgraded user gets it until they click
    /// ten ham.
    #[arg(long, env = "CHAFF_THIN_HAM_EXPONENT", value_name = "GAMMA", value_parser = not_negative, help_heading = "Scoring",
          default_value_t = chaff::classify::Params::default().thin_ham_exponent)]
    thin_ham_exponent: f64,
    /// While a user's ham side is mail learned from its delivery rather
    /// than clicked Not spam, each token's ham rate starts from the
    /// token's rate over all their mail, with the weight of A·10/(10 + H)
    /// messages after H ham messages (times the delivered share of their
    /// ham, and never more than their ham side's own weight), so it fades
    /// as the ham side grows; A is this setting, 0 turns it off. Why: a
    /// user who only clicks Spam and whose mailbox opens with spam has a
    /// ham side of a few spam the filter let through, and every everyday
    /// word those lack then read as certain spam: their ham went to the
    /// spam folder and stayed there (docs/ACCURACY.md, "Session 29"). It
    /// costs spam caught while their ham side is that thin. Users whose
    /// ham is clicked score as without it. Ham learned before store
    /// format 8 counts as delivered.
    #[arg(long, env = "CHAFF_THIN_HAM_POOL", value_name = "MESSAGES", value_parser = not_negative, help_heading = "Scoring",
          default_value_t = chaff::classify::Params::default().thin_ham_pool)]
    thin_ham_pool: f64,
    /// Header and body are combined apart only where they disagree, each
    /// at least this confident (|log-odds|; the header's veto:
    /// a list's ham header relaying spam-like text makes it unsure rather
    /// than spam); 0 pools them in one statistic, the scoring before
    /// session 15 (docs/ACCURACY.md, "The header's veto" and "Session 15").
    #[arg(long, env = "CHAFF_HEADER_VETO_AT", value_name = "LOG_ODDS", value_parser = not_negative, help_heading = "Scoring",
          default_value_t = chaff::classify::Params::default().header_veto_at)]
    header_veto_at: f64,
    /// Serve Prometheus metrics (OpenMetrics text) at http://ADDR/metrics,
    /// e.g. `127.0.0.1:9464`; port 0 picks a free port (printed at start).
    /// Off by default, and counting is off with it. The endpoint has no
    /// authentication and no TLS: keep it on loopback or a private network.
    #[arg(long, env = "CHAFF_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// How often to log model cache and group commit counters (`0s` = never).
    #[arg(long, env = "CHAFF_STATS_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    stats_interval: Duration,
    /// How often to record, in the data directory, what is on disk (a
    /// generation: one flush, three fsyncs and a rename, in the background;
    /// also at every clean stop). A start on a directory whose log was
    /// damaged or cut short before the last record is refused instead of
    /// serving the older state sled would recover to (docs/FAULTS.md,
    /// "Corruption"). `0s` = only at a clean stop.
    #[arg(long, env = "CHAFF_SEAL_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    seal_interval: Duration,
    /// On SIGTERM/Ctrl-C, how long in-flight requests may take to finish
    /// before open connections are closed (e.g. `10s`, `500ms`).
    #[arg(long, env = "CHAFF_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    shutdown_grace: Duration,
    /// How long Score decisions are kept for `chaff why` / FindDecisions
    /// (e.g. `30d`, `12h`; at least 1s, at most 100 years).
    #[arg(long, env = "CHAFF_DECISION_RETENTION", default_value = "30d", value_parser = retention, help_heading = "Decision log")]
    decision_retention: Duration,
    /// How long a click can be undone exactly: Forget, or a Train that
    /// moves the message to the other class (e.g. `90d`, `12h`; at least
    /// 1s). Older clicks keep their counts, but their ledger entries are
    /// folded hourly in the background to their label and time (the token
    /// list exact undo reads is what the ledger's size is made of); a
    /// Forget of one answers FAILED_PRECONDITION naming this window. Mail
    /// learned from its delivery (not clicked) has its own, shorter window
    /// (--delivered-undo-window).
    #[arg(long, env = "CHAFF_UNDO_WINDOW", default_value = "90d", value_parser = retention)]
    undo_window: Duration,
    /// How long mail learned from its delivery (not clicked) stays in the
    /// ledger so that a click on it replaces that learning exactly (e.g.
    /// `14d`; at least 1s; at most --undo-window in effect). Past it the
    /// hourly fold drops the entry and its counts stay; a later click on
    /// that mail counts as a first click beside the light delivered
    /// learning. Shorter than a click's window: a trained user's ledger
    /// gains an entry per delivered message, and a click on mail left in
    /// the inbox comes within days if at all.
    #[arg(long, env = "CHAFF_DELIVERED_UNDO_WINDOW", default_value = "14d", value_parser = retention)]
    delivered_undo_window: Duration,
    /// Most decisions kept per user (the oldest go first).
    #[arg(long, env = "CHAFF_DECISIONS_PER_USER", default_value_t = Retention::default().per_user, value_parser = at_least_one, help_heading = "Decision log")]
    decisions_per_user: usize,
    /// Features read per message at most; a message hitting this (or any
    /// cap below) is still scored on what was read, and ScoreResponse lists
    /// the cap in `limits_hit`.
    #[arg(long, env = "CHAFF_MAX_TOKENS", default_value_t = Limits::default().max_tokens, value_parser = at_least_one, help_heading = "Hostile-mail caps")]
    max_tokens: usize,
    /// Header bytes read per message; a longer header is skipped.
    #[arg(long, env = "CHAFF_MAX_HEADER_BYTES", default_value_t = Limits::default().max_header_bytes, value_parser = at_least_one, help_heading = "Hostile-mail caps")]
    max_header_bytes: usize,
    /// Decoded body text read per message.
    #[arg(long, env = "CHAFF_MAX_BODY_BYTES", default_value_t = Limits::default().max_body_bytes, value_parser = at_least_one, help_heading = "Hostile-mail caps")]
    max_body_bytes: usize,
    /// MIME parts read per message.
    #[arg(long, env = "CHAFF_MAX_MIME_PARTS", default_value_t = Limits::default().max_parts, value_parser = at_least_one, help_heading = "Hostile-mail caps")]
    max_mime_parts: usize,
    /// Nesting of multiparts and attached messages followed.
    #[arg(long, env = "CHAFF_MAX_MIME_DEPTH", default_value_t = Limits::default().max_mime_depth, help_heading = "Hostile-mail caps")]
    max_mime_depth: usize,
    /// Body bytes of the raw message the MIME parser is given; a longer
    /// message is parsed from its header block and this much of its body
    /// (reported as "scan bytes"). Bounds the parse itself, which the caps
    /// above do not: deep nesting or a million HTML tags cost parse time
    /// in proportion to their bytes.
    #[arg(long, env = "CHAFF_MAX_SCAN_BYTES", default_value_t = Limits::default().max_scan_bytes, value_parser = at_least_one, help_heading = "Hostile-mail caps")]
    max_scan_bytes: usize,
    /// Read calls (Score, ScoreBatch, GetUser, ListEntries, FindDecisions,
    /// GetShared) whose engine work may run at once. Reading a message is
    /// CPU work: more calls at once than the cores can run only make every
    /// one slower, so the rest wait in a short queue (--max-queued-calls,
    /// --max-queue-wait) or are refused at once with RESOURCE_EXHAUSTED
    /// naming this flag, while health stays SERVING. Default `auto`: 2 × the
    /// cores on sled (a read that misses the model cache waits on the
    /// disk); 16 × the cores with --store redis://…, where each Score also
    /// holds its slot through its round trip to the cluster, and 2 × the
    /// cores left the CPU idle (docs/SCALING.md, "Score throughput").
    /// 0 = no limit.
    #[arg(long, env = "CHAFF_MAX_CONCURRENT_READS", default_value = "auto", value_parser = read_slots, value_name = "N|auto", help_heading = "Overload")]
    max_concurrent_reads: ReadSlots,
    /// Write calls (Train, Forget, UpdateUser, list changes, DeleteUser,
    /// SeedShared, ClearSeed) that may run at once. Larger than the read
    /// pool: a write spends most of its time waiting for the storage flush
    /// it shares with every write waiting then (group commit), and a small
    /// pool would make each flush serve few replies. Default: 16 × the
    /// cores. 0 = no limit.
    #[arg(long, env = "CHAFF_MAX_CONCURRENT_WRITES", default_value_t = defaults().writes.unwrap_or(0), help_heading = "Overload")]
    max_concurrent_writes: usize,
    /// Calls that may wait for a slot, per pool (reads, writes); one more is
    /// refused at once with RESOURCE_EXHAUSTED (not worked on, safe to
    /// retry). Default: 8 × the cores. 0 = never wait: refuse whenever the
    /// slots are full.
    #[arg(long, env = "CHAFF_MAX_QUEUED_CALLS", default_value_t = defaults().queued, help_heading = "Overload")]
    max_queued_calls: usize,
    /// Longest a call waits for a slot before it is refused with
    /// RESOURCE_EXHAUSTED; a call also never waits past its own deadline
    /// (grpc-timeout), and one whose deadline has passed is answered
    /// DEADLINE_EXCEEDED without being worked on. Bounds the latency of the
    /// calls taken when each is slow (e.g. `50ms`, `1s`).
    #[arg(long, env = "CHAFF_MAX_QUEUE_WAIT", default_value = "50ms", value_parser = parse_duration, help_heading = "Overload")]
    max_queue_wait: Duration,
    /// How often an idle connection's peer is checked for (an HTTP/2 PING,
    /// and TCP keepalive probes after as long without traffic): a peer
    /// that vanished (a crashed host, a dropped NAT entry) would otherwise
    /// keep its connection and a file descriptor forever. `0s` = never.
    #[arg(long, env = "CHAFF_KEEPALIVE_INTERVAL", default_value = "60s", value_parser = parse_duration, help_heading = "Connections")]
    keepalive_interval: Duration,
    /// How long a keepalive PING may go unanswered before its connection
    /// is closed.
    #[arg(long, env = "CHAFF_KEEPALIVE_TIMEOUT", default_value = "20s", value_parser = at_least_a_second, help_heading = "Connections")]
    keepalive_timeout: Duration,
    /// Calls (HTTP/2 streams) one connection may have open at once; a
    /// client waits for one to end before it opens more. Bounds what one
    /// connection holds, also before any credentials are checked (health's
    /// Watch needs none and stays open). `0` = no limit.
    #[arg(
        long,
        env = "CHAFF_MAX_CONCURRENT_STREAMS",
        default_value_t = 256,
        help_heading = "Connections"
    )]
    max_concurrent_streams: u32,
    /// How long a connection may live: past it the server asks the client
    /// to reconnect (HTTP/2 GOAWAY; calls in flight finish, gRPC clients
    /// reconnect by themselves) and closes it 30 s later. This is what
    /// closes a connection that is idle or never said anything, which
    /// would otherwise hold a file descriptor for good. `0s` = no limit.
    #[arg(long, env = "CHAFF_MAX_CONNECTION_AGE", default_value = "30m", value_parser = parse_duration, help_heading = "Connections")]
    max_connection_age: Duration,
    /// Bytes all ImportUser streams may hold at once while they arrive
    /// (each is received whole, up to 1GiB, before it is decoded); an
    /// import that would go past it is refused RESOURCE_EXHAUSTED naming
    /// this flag (e.g. `1GiB`, `256MiB`; at least 1MiB).
    #[arg(long, env = "CHAFF_MAX_IMPORT_BUFFER", default_value = "1GiB", value_parser = import_buffer, help_heading = "Connections")]
    max_import_buffer: usize,
    /// Log filter (tracing syntax), e.g. `info`, `chaff=debug`. The audit
    /// log (admin calls, refused calls) is the `chaff::audit` target.
    #[arg(long, env = "CHAFF_LOG", default_value = "info", value_parser = log_filter)]
    log: String,
    /// Log lines as `text` (for people) or `json` (one JSON object per
    /// line, for log pipelines: timestamp, level, target, fields).
    #[arg(long, env = "CHAFF_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(flatten)]
    trust: super::trust::ServeTrustArgs,
}

/// Where `serve` keeps user data (`--store`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreLocation {
    /// sled in `--data`.
    Sled,
    /// A Redis Cluster: its seed nodes as `redis://host:port`.
    Redis(Vec<String>),
}

fn store_location(s: &str) -> Result<StoreLocation, String> {
    let s = s.trim();
    if s == "sled" {
        return Ok(StoreLocation::Sled);
    }
    if !s.starts_with("redis://") {
        return Err(format!(
            "{:?} is neither `sled` nor `redis://HOST:PORT,HOST:PORT,…`",
            redacted(s)
        ));
    }
    redis_nodes(s).map(StoreLocation::Redis)
}

/// Where `serve` writes the decision log (`--decision-store`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecisionStore {
    /// Where the clicks are (`--store`).
    Same,
    /// A Redis Cluster of its own: its seed nodes as `redis://host:port`.
    Redis(Vec<String>),
}

fn decision_store(s: &str) -> Result<DecisionStore, String> {
    match s.trim() {
        "same" => Ok(DecisionStore::Same),
        "off" | "none" => Err(
            "the decision log cannot be turned off: support needs it to answer \
             \"why was this rejected?\" (FindDecisions, `chaff why`); give it a \
             cluster of its own with redis://HOST:PORT,… or keep `same`"
                .into(),
        ),
        s if s.starts_with("redis://") => redis_nodes(s).map(DecisionStore::Redis),
        s => Err(format!(
            "{:?} is neither `same` nor `redis://HOST:PORT,HOST:PORT,…`",
            redacted(s)
        )),
    }
}

/// `redis://HOST:PORT,HOST:PORT,…` as the seed nodes' URLs.
pub(crate) fn redis_nodes(s: &str) -> Result<Vec<String>, String> {
    let s = s.trim();
    let Some(nodes) = s.strip_prefix("redis://") else {
        return Err(format!("{s:?} is not `redis://HOST:PORT,HOST:PORT,…`"));
    };
    if !cfg!(feature = "redis") {
        return Err("this chaff was built without the `redis` feature".into());
    }
    // `redis://a:1,redis://b:2` (each node a URL) means the same.
    let nodes: Vec<&str> = nodes
        .split(',')
        .map(|n| n.trim().strip_prefix("redis://").unwrap_or(n.trim()))
        .collect();
    // A password given on one node is the cluster's (the Redis client
    // refuses seeds with different ones): the nodes without one take it.
    let userinfo = nodes
        .iter()
        .find_map(|n| n.rsplit_once('@').map(|(u, _)| u));
    let mut out = Vec::new();
    for node in nodes {
        let node = match userinfo {
            Some(u) if !node.contains('@') => format!("{u}@{node}"),
            _ => node.to_string(),
        };
        let node = node.as_str();
        // A password (`:PASSWORD@` or `USER:PASSWORD@`) before the host.
        let host_port = node.rsplit_once('@').map_or(node, |(_, hp)| hp);
        let port = host_port
            .rsplit_once(':')
            .map(|(host, port)| (host, port.parse::<u16>()));
        match port {
            Some((host, Ok(_))) if !host.is_empty() => out.push(format!("redis://{node}")),
            _ => {
                return Err(format!(
                    "{:?} is not HOST:PORT; e.g. redis://10.0.0.1:6379,10.0.0.2:6379",
                    redacted(node)
                ));
            }
        }
    }
    Ok(out)
}

/// A value parser whose error never repeats the value given: clap's own
/// wrapping of a parser's error (`invalid value '<VALUE>' for …`) would
/// print a Redis password from `--store` to the terminal and the journal.
#[derive(Clone)]
pub(crate) struct Unechoed<T>(pub(crate) fn(&str) -> Result<T, String>);

impl<T: Clone + Send + Sync + 'static> clap::builder::TypedValueParser for Unechoed<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<T, clap::Error> {
        let flag = arg.map(|a| a.to_string()).unwrap_or_default();
        let fail = |why: String| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid value for '{flag}': {why}\n"),
            )
            .with_cmd(cmd)
        };
        let s = value.to_str().ok_or_else(|| fail("not UTF-8".into()))?;
        (self.0)(s).map_err(fail)
    }
}

/// `nodes` (Redis URLs) as they may be logged or printed: a password in a
/// URL (`redis://:PASSWORD@host:port`, `redis://USER:PASSWORD@…`) becomes
/// `***`, so start-up lines, errors and `--print-config` never show it.
pub(crate) fn redacted(nodes: &str) -> String {
    nodes
        .split(',')
        .map(|node| {
            let Some((userinfo, host)) = node.rsplit_once('@') else {
                return node.to_string();
            };
            // The scheme (`redis://`) stays, with its separator.
            let (scheme, userinfo) = match userinfo.split_once("://") {
                Some((s, u)) => (&userinfo[..s.len() + 3], u),
                None => ("", userinfo),
            };
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{scheme}{user}:***@{host}"),
                // `redis://PASSWORD@host` is read as a password too.
                None => format!("{scheme}***@{host}"),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The admission defaults for this machine's cores.
fn defaults() -> Admission {
    Admission::for_this_machine()
}

/// `--max-concurrent-reads`: a number of slots, or `auto`, which depends
/// on the store (a remote one needs more: see the flag's help).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadSlots {
    /// The default for the store: [`Admission::for_this_machine`] on sled,
    /// [`Admission::for_remote_store`] on Redis.
    Auto,
    /// This many (0: no bound).
    Fixed(usize),
}

impl ReadSlots {
    /// The read pool's size on `store` (`None`: no bound).
    fn resolve(self, store: &StoreLocation) -> Option<usize> {
        match (self, store) {
            (ReadSlots::Fixed(0), _) => None,
            (ReadSlots::Fixed(n), _) => Some(n),
            (ReadSlots::Auto, StoreLocation::Sled) => defaults().reads,
            (ReadSlots::Auto, StoreLocation::Redis(_)) => {
                Admission::for_remote_store(chaff::service::admission::cores()).reads
            }
        }
    }
}

fn read_slots(s: &str) -> Result<ReadSlots, String> {
    let s = s.trim();
    if s == "auto" {
        return Ok(ReadSlots::Auto);
    }
    s.parse()
        .map(ReadSlots::Fixed)
        .map_err(|_| format!("{s:?} is neither a whole number nor `auto`"))
}

/// How `serve` writes its log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The scoring parameters `serve` sets; the rest are the defaults.
fn scoring(args: &ServeArgs) -> chaff::classify::Params {
    let d = chaff::classify::Params::default();
    let veto = args.header_veto_at;
    chaff::classify::Params {
        header_strength: Some(args.header_strength),
        header_strength_ramp: args.header_strength_ramp,
        thin_ham_exponent: args.thin_ham_exponent,
        thin_ham_pool: args.thin_ham_pool,
        // No veto means pooled: `Parts::Fisher` with a veto of 0 would
        // combine every message apart, which lost under clicks.
        parts: if veto > 0.0 {
            d.parts
        } else {
            chaff::classify::Parts::Pooled
        },
        header_veto_at: veto,
        ..d
    }
}

/// A finite number above 0 (Robinson's s: 0 would divide by nothing).
fn positive(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a number above 0")),
    }
}

/// A count that must be at least 1 (a zero cap would refuse everything).
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a whole number")),
    }
}

fn message_bytes(s: &str) -> Result<usize, String> {
    match parse_bytes(s)? {
        0 => Err("must be at least 1 byte; the default is 10MiB".into()),
        n if n > 1 << 30 => Err("must be at most 1GiB".into()),
        n => Ok(n),
    }
}

fn model_memory(s: &str) -> Result<usize, String> {
    match parse_bytes(s)? {
        n if n < 1 << 20 => Err(
            "must be at least 1MiB: with less no model stays in memory and every request \
             reloads one from disk"
                .into(),
        ),
        n => Ok(n),
    }
}

fn import_buffer(s: &str) -> Result<usize, String> {
    match parse_bytes(s)? {
        n if n < 1 << 20 => Err("must be at least 1MiB".into()),
        n => Ok(n),
    }
}

fn at_least_a_second(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d < Duration::from_secs(1) => Err("must be at least 1s".into()),
        d => Ok(d),
    }
}

/// The connection bounds `serve` sets (`0` for a flag: no bound).
fn network(args: &ServeArgs) -> chaff::service::Network {
    let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
    chaff::service::Network {
        keepalive_interval: nonzero(args.keepalive_interval),
        keepalive_timeout: args.keepalive_timeout,
        max_concurrent_streams: (args.max_concurrent_streams > 0)
            .then_some(args.max_concurrent_streams),
        max_connection_age: nonzero(args.max_connection_age),
        max_import_buffer: args.max_import_buffer,
        ..chaff::service::Network::default()
    }
}

/// The WARN line for a metrics endpoint on `addr`, if anyone but this
/// machine may reach it: it has no authentication and no TLS.
fn metrics_exposure(addr: SocketAddr) -> Option<String> {
    (!addr.ip().is_loopback()).then(|| {
        format!(
            "--metrics-listen {addr} is not a loopback address: anyone who can reach it reads \
             the server's metrics (call rates, refusals, memory) without credentials or TLS; \
             keep it on 127.0.0.1 or a private network, or firewall the port"
        )
    })
}

fn retention(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d < Duration::from_secs(1) => Err("must be at least 1s".into()),
        d => Ok(d),
    }
}

fn log_filter(s: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(s)
        .map(|_| s.to_string())
        .map_err(|e| format!("not a log filter ({e}); e.g. info or chaff=debug"))
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    if args.print_config {
        print!("{}", super::config::render(&args.origins));
        return Ok(());
    }
    // The Redis client's reconnect WARNs ran to thousands a second during
    // a cluster outage; chaff's own storage lines say what fails. Kept to
    // ERROR unless the filter names `redis` (docs/OPERATIONS.md, "Logs").
    let names_redis = args.log.split(',').any(|d| {
        let target = d.split(['=', '[']).next().unwrap_or_default().trim();
        target == "redis" || target.starts_with("redis::")
    });
    let directives = if names_redis || args.log.trim() == "off" {
        args.log.clone()
    } else {
        format!("{},redis=error", args.log)
    };
    let filter =
        tracing_subscriber::EnvFilter::try_new(&directives).context("invalid --log filter")?;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().with_current_span(false).init(),
    }

    // Before storage opens: a refused exposure or a bad keys/TLS file
    // should not cost a model load.
    if args.store == StoreLocation::Sled && args.decision_store != DecisionStore::Same {
        anyhow::bail!(
            "--decision-store redis://… needs --store redis://…: on sled the decision log \
             is in the data directory"
        );
    }
    // The keys file is looked for in the data directory: a --data that is
    // a file must be named as the problem, not the keys file inside it.
    if args.store == StoreLocation::Sled
        && let Ok(meta) = std::fs::metadata(&args.data)
        && !meta.is_dir()
    {
        anyhow::bail!(
            "--data {}: not a directory; give the folder chaff keeps its data in (created if missing)",
            args.data.display()
        );
    }
    let trust = args.trust.trust(&args.data, args.listen)?;
    let limits = Limits {
        max_tokens: args.max_tokens,
        max_header_bytes: args.max_header_bytes,
        max_body_bytes: args.max_body_bytes,
        max_parts: args.max_mime_parts,
        max_mime_depth: args.max_mime_depth,
        max_scan_bytes: args.max_scan_bytes,
        ..Limits::default()
    };
    let settings = Settings {
        max_message_bytes: args.max_message_bytes,
        tokenizer: Tokenizer::new(limits),
        retention: Retention {
            max_age: args.decision_retention,
            per_user: args.decisions_per_user,
            ..Retention::default()
        },
        model_memory: args.model_memory,
        undo_window: args.undo_window,
        delivered_undo_window: args.delivered_undo_window,
        max_user_tokens: (args.max_user_tokens > 0).then_some(args.max_user_tokens),
        max_shared_tokens: (args.max_shared_tokens > 0).then_some(args.max_shared_tokens),
        prune_in_background: true,
        learn_delivered: args.learn_delivered,
        delivered_queue: args.delivered_queue,
        seal_every: (!args.seal_interval.is_zero()).then_some(args.seal_interval),
        border: args.authserv_id.clone().unwrap_or_default(),
        params: scoring(&args),
        ..Settings::default()
    };
    // The ports before the storage: a port in use is refused before the
    // data directory is created or a model loaded. Calls that arrive while
    // the storage opens wait in the listen backlog and are served once it
    // is open ("chaff listening on" is printed then).
    let listener = TcpListener::bind(args.listen).await.map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            " (another process has it: another `chaff serve` on this --listen? stop it, or \
             give another --listen)"
        } else {
            ""
        };
        anyhow::anyhow!("cannot listen on {}: {e}{hint}", args.listen)
    })?;
    if let Some(warning) = args.metrics_listen.and_then(metrics_exposure) {
        tracing::warn!("{warning}");
    }
    let metrics = match args.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (--metrics-listen)"))?,
        ),
        None => None,
    };
    let engine = match &args.store {
        StoreLocation::Sled => {
            let data = args.data.clone();
            let cache = args.cache_mb * 1024 * 1024;
            let store = tokio::task::spawn_blocking(move || Store::open(&data, cache)).await??;
            info!(data = %args.data.display(), "storage open");
            Engine::new(store, settings).context("cannot load operator lists")?
        }
        StoreLocation::Redis(nodes) => {
            redis_engine(nodes, args.redis_replicas, &args.decision_store, settings).await?
        }
    };
    let engine = Arc::new(engine);

    let shutdown = shutdown_signal();
    // One line on stdout, for people and for scripts that start chaff on port 0.
    println!("chaff listening on {}", listener.local_addr()?);

    let (grace, stats) = (args.shutdown_grace, args.stats_interval);
    tokio::spawn(super::trust::reload_on_sighup(trust.clone()));
    if let Some(l) = &metrics {
        println!("chaff metrics on http://{}/metrics", l.local_addr()?);
    }
    let admission = Admission {
        reads: args.max_concurrent_reads.resolve(&args.store),
        writes: (args.max_concurrent_writes > 0).then_some(args.max_concurrent_writes),
        queued: args.max_queued_calls,
        max_wait: args.max_queue_wait,
    };
    let network = network(&args);
    chaff::service::serve_network(
        engine, listener, shutdown, grace, trust, stats, metrics, admission, network,
    )
    .await
    .map_err(|e| anyhow::anyhow!(e))
}

/// The engine over a Redis Cluster (`--store redis://…`).
#[cfg(feature = "redis")]
async fn redis_engine(
    nodes: &[String],
    replicas: u32,
    decisions: &DecisionStore,
    settings: Settings,
) -> anyhow::Result<Engine> {
    use chaff::store::redis_cluster::{RedisBackend, RedisConfig};
    let mut config = RedisConfig::new(nodes.iter().cloned());
    config.replicas = replicas;
    let mut store = tokio::task::spawn_blocking(move || RedisBackend::connect(config))
        .await?
        .with_context(|| {
            format!(
                "cannot connect to the Redis Cluster at {}",
                redacted(&nodes.join(","))
            )
        })?;
    info!(
        nodes = redacted(&nodes.join(",")),
        replicas,
        "redis cluster connected: every RPC (Backup writes a sled directory), with the undo window and the quotas (docs/SCALING.md)"
    );
    if let DecisionStore::Redis(log) = decisions {
        let seeds = log.clone();
        store = tokio::task::spawn_blocking(move || store.with_decision_store(seeds))
            .await?
            .with_context(|| {
                format!(
                    "cannot connect to the decision store (--decision-store) at {}",
                    redacted(&log.join(","))
                )
            })?;
        info!(
            nodes = redacted(&log.join(",")),
            "decision store connected: the decision log is written and read there"
        );
    }
    // The engine reads the operator's lists and the shared model at start:
    // blocking calls, off the runtime's workers.
    Ok(tokio::task::spawn_blocking(move || Engine::new(store, settings)).await??)
}

#[cfg(not(feature = "redis"))]
async fn redis_engine(
    _: &[String],
    _: u32,
    _: &DecisionStore,
    _: Settings,
) -> anyhow::Result<Engine> {
    anyhow::bail!("this chaff was built without the `redis` feature")
}

/// Completes on SIGTERM (how service managers stop us) or Ctrl-C. The
/// handlers are registered when this is called, not when the future is
/// first polled: the server polls it only once it runs, and a SIGTERM that
/// came before (a supervisor stopping a server that just printed its
/// address) would otherwise kill the process without a clean shutdown.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let (mut term, mut int) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        let (term, ctrl_c) = (
            async {
                match term.as_mut() {
                    Some(s) => drop(s.recv().await),
                    None => std::future::pending::<()>().await,
                }
            },
            async {
                match int.as_mut() {
                    Some(s) => drop(s.recv().await),
                    None => std::future::pending::<()>().await,
                }
            },
        );
        #[cfg(not(unix))]
        let (term, ctrl_c) = (std::future::pending::<()>(), async {
            let _ = tokio::signal::ctrl_c().await;
        });
        tokio::select! {
            _ = ctrl_c => info!("Ctrl-C received"),
            _ = term => info!("SIGTERM received"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_password_is_never_shown_and_each_node_may_be_a_url() {
        assert_eq!(
            redacted("redis://:s3cret@10.0.0.1:6379,redis://ops:s3cret@10.0.0.2:6379"),
            "redis://:***@10.0.0.1:6379,redis://ops:***@10.0.0.2:6379"
        );
        assert_eq!(redacted("redis://s3cret@h:1"), "redis://***@h:1");
        assert_eq!(
            redacted("redis://h:1,redis://h:2"),
            "redis://h:1,redis://h:2"
        );
        if cfg!(feature = "redis") {
            assert_eq!(
                redis_nodes("redis://a:1,redis://b:2,c:3").unwrap(),
                ["redis://a:1", "redis://b:2", "redis://c:3"]
            );
            assert_eq!(
                redis_nodes("redis://:pw@a:1,b:2").unwrap(),
                ["redis://:pw@a:1", "redis://:pw@b:2"]
            );
            // A password is never echoed by the flag's parser either (clap
            // would repeat the value as given).
            let e = <crate::cli::Cli as clap::Parser>::try_parse_from([
                "chaff",
                "serve",
                "--store",
                "redis://:s3cret@a",
            ])
            .unwrap_err()
            .to_string();
            assert!(!e.contains("s3cret") && e.contains("--store"), "{e}");
            let e = redis_nodes("redis://:s3cret@a").unwrap_err();
            assert!(!e.contains("s3cret"), "{e}");
        }
    }

    #[test]
    fn read_slots_default_to_more_on_a_remote_store_and_a_number_wins() {
        let redis = StoreLocation::Redis(vec!["redis://127.0.0.1:6379".into()]);
        let auto = read_slots("auto").unwrap();
        assert_eq!(auto.resolve(&StoreLocation::Sled), defaults().reads);
        let cores = chaff::service::admission::cores();
        assert_eq!(auto.resolve(&redis), Some(16 * cores));
        assert_eq!(read_slots(" 8 ").unwrap().resolve(&redis), Some(8));
        assert_eq!(read_slots("0").unwrap().resolve(&redis), None, "no bound");
        let err = read_slots("many").unwrap_err();
        assert!(err.contains("auto"), "{err}");
    }

    #[test]
    fn a_header_veto_of_zero_pools_header_and_body() {
        use chaff::classify::{Params, Parts};
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let parse = |args: &[&str]| {
            let argv = std::iter::once("serve").chain(args.iter().copied());
            scoring(&<Cli as clap::Parser>::try_parse_from(argv).unwrap().serve)
        };
        let (on, d) = (parse(&[]), Params::default());
        assert_eq!((on.parts, on.header_veto_at), (d.parts, d.header_veto_at));
        assert_eq!((d.parts, d.header_veto_at), (Parts::Fisher, 5.0));
        let off = parse(&["--header-veto-at", "0"]);
        assert_eq!((off.parts, off.header_veto_at), (Parts::Pooled, 0.0));
        let seven = parse(&["--header-veto-at", "7"]);
        assert_eq!((seven.parts, seven.header_veto_at), (Parts::Fisher, 7.0));
    }
}
