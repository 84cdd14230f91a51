//! What the server holds for its peers (`chaff::service::Network`, the
//! network review's findings 2 to 4): connections that say nothing are
//! closed, one connection's open streams are bounded, and ImportUser
//! streams are checked as they arrive and bounded together. A real server
//! on loopback, real gRPC clients and raw TCP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chaff::engine::{Engine, Settings};
use chaff::proto;
use chaff::service::Network;
use chaff::service::admission::Limits;
use chaff::store::Store;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;

use crate::common::*;

/// A server on loopback with `network`: (URL, address, stop).
async fn start(
    network: Network,
) -> (
    String,
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 32 << 20).unwrap();
    let engine = Arc::new(Engine::new(store, Settings::default()).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _dir = dir;
        let stopped = async {
            let _ = stopped.await;
        };
        chaff::service::serve_network(
            engine,
            listener,
            stopped,
            Duration::from_secs(1),
            chaff::service::guard::Trust::open(),
            Duration::ZERO,
            None,
            Limits::unbounded(),
            network,
        )
        .await
        .unwrap();
    });
    (format!("http://{addr}"), addr, stop)
}

/// A connection that never says anything (not even the HTTP/2 preface)
/// is closed once it is `max_connection_age` + grace old; it used to be
/// kept for good, one file descriptor each, no credentials needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_says_nothing_is_closed_after_the_connection_age() {
    let (_url, addr, stop) = start(Network {
        max_connection_age: Some(Duration::from_millis(500)),
        max_connection_age_grace: Duration::from_millis(500),
        ..Network::default()
    })
    .await;
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        // The server may send its SETTINGS first; read until it closes.
        loop {
            match silent.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "still open after {:?}", started.elapsed());
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    let _ = stop.send(());
}

/// One connection may have at most `max_concurrent_streams` streams open:
/// with that many health Watch streams held (they need no key and never
/// end), the next Watch on the same connection is not served until one
/// ends. There used to be no bound (8,000 Watch streams on one connection
/// grew the server's memory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_the_per_connection_bound_wait_for_one_to_end() {
    let (url, _addr, stop) = start(Network {
        max_concurrent_streams: Some(2),
        ..Network::default()
    })
    .await;
    let channel = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let watch = || {
        let mut h = HealthClient::new(channel.clone());
        async move {
            let mut s = h
                .watch(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await?
                .into_inner();
            let first = s.message().await?;
            Ok::<_, tonic::Status>((s, first))
        }
    };
    let held: Vec<_> = futures_join(vec![watch(), watch()]).await;
    let mut held: Vec<_> = held.into_iter().map(|r| r.unwrap().0).collect();
    let third = tokio::spawn(watch());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !third.is_finished(),
        "a third stream was served on the connection"
    );
    drop(held.pop());
    let served = tokio::time::timeout(Duration::from_secs(5), third).await;
    assert!(
        matches!(served, Ok(Ok(Ok(_)))),
        "the third stream was not served once one ended: {served:?}"
    );
    drop(held);
    let _ = stop.send(());
}

async fn futures_join<F: std::future::Future + Send + 'static>(fs: Vec<F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let tasks: Vec<_> = fs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// ImportUser messages: `first` (naming the user), then nothing ever
/// again: the stream stays open, as a slow or hostile client's would.
fn import_then_stall(
    first: Vec<u8>,
) -> impl tokio_stream::Stream<Item = proto::ImportUserRequest> + Send + 'static {
    use tokio_stream::StreamExt;
    tokio_stream::iter([proto::ImportUserRequest {
        user_id: "alice".into(),
        data: first,
        ..Default::default()
    }])
    .chain(tokio_stream::pending())
}

/// A stream that is not an export is refused INVALID_ARGUMENT on its first
/// message, while the client is still sending: it used to be received
/// whole (up to 1 GiB per stream) before its first bytes were looked at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_that_is_not_an_export_is_refused_on_its_first_message() {
    let (url, _addr, stop) = start(Network::default()).await;
    let mut c = connect(&url).await;
    let started = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        c.import_user(import_then_stall(vec![b'x'; 64 << 10])),
    )
    .await
    .expect("no answer while the stream was open");
    let s = r.unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("CHAFFUSR"), "{}", s.message());
    assert!(started.elapsed() < Duration::from_secs(5));
    let _ = stop.send(());
}

/// The bytes all imports hold at once are bounded: with one import holding
/// most of `max_import_buffer`, another that would go past it is refused
/// RESOURCE_EXHAUSTED naming the flag, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_past_the_total_buffer_bound_are_refused_naming_the_flag() {
    let (url, _addr, stop) = start(Network {
        max_import_buffer: 1 << 20,
        ..Network::default()
    })
    .await;
    let mut c = connect(&url).await;
    let start = |n: usize| {
        let mut data = b"CHAFFUSR".to_vec();
        data.extend_from_slice(&3u32.to_be_bytes());
        data.resize(n, 0);
        data
    };
    let mut first = c.clone();
    let holding =
        tokio::spawn(async move { first.import_user(import_then_stall(start(700 << 10))).await });
    // The first import's bytes are counted once the server has read them
    // (a loopback write of 700 KiB; a second is ample on a busy machine).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!holding.is_finished(), "{:?}", holding.await);
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        c.import_user(import_then_stall(start(400 << 10))),
    )
    .await
    .expect("not refused while the first import held its bytes")
    .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("--max-import-buffer"),
        "{}",
        refused.message()
    );
    assert!(!holding.is_finished());
    holding.abort();
    let _ = stop.send(());
}
