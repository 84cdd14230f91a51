//! Overload over the wire (`src/service/admission.rs`): a real server on
//! loopback made busy by a Score that sleeps in its engine work (the
//! `fault-injection` feature's `fault-injection-slow` user), real gRPC
//! calls with short deadlines, and the server's own counters read back.
//!
//! "Worked on" is read from the engine: every Score looks its user's model
//! up once (GetStats' hits + misses + absent), so a call that was not
//! worked on leaves that sum where it was. Admission's refusals are read
//! from `/metrics`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chaff::engine::{Engine, Settings};
use chaff::fault::{SLOW_FOR, SLOW_IN_WORK};
use chaff::proto;
use chaff::service::admission::Limits;
use chaff::store::Store;
use tokio::net::TcpListener;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::common::*;

/// A server on loopback with `limits` and a metrics endpoint: (gRPC URL,
/// metrics address, stop). The data directory lives as long as the task.
async fn start(limits: Limits) -> (String, SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 32 << 20).unwrap();
    let engine = Arc::new(Engine::new(store, Settings::default()).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr, metrics_addr) = (
        listener.local_addr().unwrap(),
        metrics.local_addr().unwrap(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _dir = dir;
        let stopped = async {
            let _ = stopped.await;
        };
        chaff::service::serve_logging_stats(
            engine,
            listener,
            stopped,
            Duration::from_secs(5),
            chaff::service::guard::Trust::open(),
            Duration::ZERO,
            Some(metrics),
            limits,
        )
        .await
        .unwrap();
    });
    (format!("http://{addr}"), metrics_addr, stop)
}

/// Sample (name with labels) → value, from `/metrics`.
fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (_, body) = raw.split_once("\r\n\r\n").unwrap();
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
        .collect()
}

fn metric(addr: SocketAddr, key: &str) -> f64 {
    scrape(addr).get(key).copied().unwrap_or(0.0)
}

/// Polls `/metrics` until `key` reaches `want` (10 s at most).
async fn until(addr: SocketAddr, key: &str, want: f64) {
    until_all(addr, &format!("{key} >= {want}"), |m| {
        m.get(key).copied().unwrap_or(0.0) >= want
    })
    .await;
}

/// Polls `/metrics` until `ok` holds (10 s at most).
async fn until_all(addr: SocketAddr, what: &str, ok: impl Fn(&BTreeMap<String, f64>) -> bool) {
    let started = Instant::now();
    loop {
        let m = scrape(addr);
        if ok(&m) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never {what}: {m:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn gone(m: &BTreeMap<String, f64>) -> f64 {
    m.get("chaff_admission_refused_total{reason=\"deadline\"}")
        .copied()
        .unwrap_or(0.0)
        + m.get("chaff_admission_abandoned_total")
            .copied()
            .unwrap_or(0.0)
}

/// Model lookups so far: one per Score worked on.
async fn lookups(c: &mut Client) -> u64 {
    let s = c
        .get_stats(proto::GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    s.model_hits + s.model_misses + s.model_absent
}

fn score_request(user: &str, deadline: Option<Duration>) -> tonic::Request<proto::ScoreRequest> {
    let mut r = tonic::Request::new(proto::ScoreRequest {
        user_id: user.into(),
        message: SPAM.to_vec(),
        ..Default::default()
    });
    if let Some(d) = deadline {
        r.set_timeout(d);
    }
    r
}

/// A Score on its own connection-sharing client, as a task.
fn spawn_score(
    c: &Client,
    user: &str,
    deadline: Option<Duration>,
) -> tokio::task::JoinHandle<(Result<proto::ScoreResponse, tonic::Status>, Duration)> {
    let mut c = c.clone();
    let req = score_request(user, deadline);
    tokio::spawn(async move {
        let started = Instant::now();
        let r = c.score(req).await.map(tonic::Response::into_inner);
        (r, started.elapsed())
    })
}

/// An expired call is answered by the server (DEADLINE_EXCEEDED) or by
/// tonic's own timer on either side (CANCELLED "Timeout expired"),
/// whichever fires first; never OK.
fn expired(r: &Result<proto::ScoreResponse, tonic::Status>) -> bool {
    matches!(r, Err(s) if s.code() == Code::DeadlineExceeded || s.code() == Code::Cancelled)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_server_drops_expired_calls_unworked_sheds_a_full_queue_fast_and_stays_serving() {
    let (url, metrics, stop) = start(Limits {
        reads: Some(1),
        writes: Some(1),
        queued: 3,
        max_wait: Duration::from_secs(30),
    })
    .await;
    let mut c = connect(&url).await;
    // What one Score of an untrained user adds to the lookups.
    let before = lookups(&mut c).await;
    score(&mut c, "carol", SPAM).await;
    let per_score = lookups(&mut c).await - before;
    assert!(per_score > 0);
    let before = lookups(&mut c).await;

    // The only read slot: a Score sleeping in its work.
    let slow_started = Instant::now();
    let slow = spawn_score(&c, SLOW_IN_WORK, None);
    until(metrics, "chaff_admission_running{kind=\"read\"}", 1.0).await;

    // Calls with a 200 ms deadline wait for the slot, then give up.
    let short = Duration::from_millis(200);
    let expiring: Vec<_> = (0..3)
        .map(|_| spawn_score(&c, "alice", Some(short)))
        .collect();
    for t in expiring {
        let (r, took) = t.await.unwrap();
        assert!(expired(&r), "{r:?}");
        assert!(took < SLOW_FOR, "answered at its deadline, {took:?}");
    }
    // The client's timer may fire before the server's: wait until the
    // server has let them go too (refused or dropped).
    until_all(metrics, "the expired calls gone from the queue", |m| {
        gone(m) == 3.0 && m.get("chaff_admission_waiting{kind=\"read\"}") == Some(&0.0)
    })
    .await;

    // Fill the queue (3), then one more is refused at once.
    let queued: Vec<_> = (0..3).map(|_| spawn_score(&c, "bob", None)).collect();
    until(metrics, "chaff_admission_waiting{kind=\"read\"}", 3.0).await;
    let t = Instant::now();
    let refused = c.score(score_request("dave", None)).await.unwrap_err();
    let shed_in = t.elapsed();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("--max-queued-calls")
            && refused.message().contains("--max-concurrent-reads"),
        "{refused:?}"
    );
    assert!(
        shed_in < Duration::from_millis(500),
        "shed after {shed_in:?}"
    );
    assert!(
        slow_started.elapsed() < SLOW_FOR,
        "the slot was busy all along"
    );
    // Shedding is not failing: health stays SERVING, GetStats answers.
    assert_eq!(
        health(&url, "chaff.v1.Chaff").await,
        ServingStatus::Serving as i32
    );

    // The slow call and the queued ones are served in turn.
    assert!(slow.await.unwrap().0.is_ok());
    for t in queued {
        let (r, _) = t.await.unwrap();
        assert!(r.is_ok(), "{r:?}");
    }
    // Worked on: the slow Score and bob's three; not alice's nor dave's.
    assert_eq!(lookups(&mut c).await - before, 4 * per_score);
    let m = scrape(metrics);
    assert_eq!(
        m["chaff_admission_refused_total{reason=\"queue-full\"}"],
        1.0
    );
    // Each expired call was refused by admission's timer or dropped by
    // tonic's while it waited.
    assert_eq!(gone(&m), 3.0, "{m:?}");
    assert_eq!(m["chaff_admission_waiting{kind=\"read\"}"], 0.0);
    let _ = stop.send(());
}

/// With no bound, a saturated blocking pool queues engine work where it
/// cannot be cancelled: a call whose deadline passed there must still not
/// be worked on when its turn comes.
#[test]
fn work_queued_past_its_deadline_on_the_blocking_pool_is_not_done() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (url, metrics, stop) = start(Limits::unbounded()).await;
        let mut c = connect(&url).await;
        let before = lookups(&mut c).await;
        score(&mut c, "carol", SPAM).await;
        let per_score = lookups(&mut c).await - before;

        // The one blocking thread sleeps in the slow Score's work: probe
        // until a short call no longer gets it.
        let slow = spawn_score(&c, SLOW_IN_WORK, None);
        let mut probes_expired = 0.0;
        loop {
            let (r, _) = spawn_score(&c, "probe", Some(Duration::from_millis(50)))
                .await
                .unwrap();
            if r.is_ok() {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            assert!(expired(&r), "{r:?}");
            probes_expired += 1.0;
            break;
        }
        let before = lookups(&mut c).await;
        let expiring: Vec<_> = (0..3)
            .map(|_| spawn_score(&c, "alice", Some(Duration::from_millis(100))))
            .collect();
        for t in expiring {
            let (r, took) = t.await.unwrap();
            assert!(expired(&r), "{r:?}");
            assert!(took < SLOW_FOR, "{took:?}");
        }
        assert!(slow.await.unwrap().0.is_ok());
        // The pool is first-in first-out: once a Score sent now is
        // answered, the expired calls' work has had its turn before it.
        score(&mut c, "erin", SPAM).await;
        // Worked on: the slow Score and erin's; not the expired calls.
        assert_eq!(lookups(&mut c).await - before, 2 * per_score);
        // They refused themselves as their work started (or, on a very
        // busy machine, were dropped before their work was queued).
        let refused = metric(
            metrics,
            "chaff_admission_refused_total{reason=\"deadline\"}",
        );
        assert!(refused <= 3.0 + probes_expired, "{refused}");
        let _ = stop.send(());
    });
}

/// A call on `channel` to `path` that sends its headers and never its
/// request: what a stalled (or hostile) client does. Answered only if the
/// server gives up on it.
fn stalled_call(
    channel: &tonic::transport::Channel,
    path: &'static str,
) -> tokio::task::JoinHandle<Result<tonic::Response<proto::ListEntriesResponse>, tonic::Status>> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    tokio::spawn(async move {
        grpc.ready().await.unwrap();
        let codec =
            tonic_prost::ProstCodec::<proto::ListEntriesRequest, proto::ListEntriesResponse>::default();
        grpc.client_streaming(
            tonic::Request::new(tokio_stream::pending()),
            http::uri::PathAndQuery::from_static(path),
            codec,
        )
        .await
    })
}

/// Calls whose headers arrived and whose request never does, one per read
/// slot, hold no slot: a Score still gets one. (They used to take their
/// slot at the headers and keep it for as long as the caller liked, and
/// every Score of the mail pipeline was refused: the network review's
/// finding 1.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_whose_request_never_arrives_hold_no_slot_and_a_score_still_runs() {
    let slots = 2;
    let (url, metrics, stop) = start(Limits {
        reads: Some(slots),
        writes: Some(slots),
        queued: 0,
        max_wait: Duration::from_millis(50),
    })
    .await;
    let mut c = connect(&url).await;
    let channel = tonic::transport::Endpoint::from_shared(url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let stalled: Vec<_> = (0..slots)
        .map(|_| stalled_call(&channel, "/chaff.v1.Chaff/ListEntries"))
        .collect();
    until(
        metrics,
        "grpc_server_started_total{grpc_service=\"chaff.v1.Chaff\",grpc_method=\"ListEntries\"}",
        slots as f64,
    )
    .await;
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < Duration::from_secs(3) {
        match c.score(score_request("alice", None)).await {
            Ok(_) => {
                last = None;
                break;
            }
            Err(s) => last = Some(s),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(last.is_none(), "no Score ran in 3 s: {last:?}");
    assert_eq!(
        metric(metrics, "chaff_admission_running{kind=\"read\"}"),
        0.0
    );
    // The stalled calls are still open: they were not simply answered.
    assert!(stalled.iter().all(|t| !t.is_finished()));
    for t in stalled {
        t.abort();
    }
    let _ = stop.send(());
}
