//! Any bytes as a gRPC request body (ScoreRequest, TrainRequest or
//! ScoreBatchRequest, picked by the first byte) sent to the real service on
//! a loopback port: tonic's framing, chaff's codec (prost decoding), the
//! guard, request validation, the engine (tokenizer, classifier, policy,
//! sled store) and the response's encoding. Every call must answer within
//! 10 s with a response that decodes, or with a status that blames the
//! request (INVALID_ARGUMENT, RESOURCE_EXHAUSTED, ...): never INTERNAL,
//! UNKNOWN (a panic) or UNAVAILABLE (a dropped connection).
//!
//! The server runs in this process (one tokio runtime, started once) with
//! `max_message_bytes` at 16 KiB, so inputs up to `-max_len` reach both
//! sides of that cap. Every 5,000 inputs it is shut down and restarted on
//! a fresh data directory, so Train calls do not grow the store without
//! end over millions of executions.
#![no_main]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut};
use chaff::engine::{Engine, Settings};
use chaff::proto;
use chaff::service::guard::Trust;
use chaff::store::Store;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use tokio::runtime::Runtime;
use tonic::client::Grpc;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Status};

const RESTART_EVERY: u64 = 5_000;
const MAX_MESSAGE_BYTES: usize = 16 << 10;

/// Sends the fuzz input as the request body as it is, and hands back the
/// response body undecoded.
#[derive(Clone, Copy, Default)]
struct Raw;
struct RawBytes;

impl Encoder for RawBytes {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawBytes {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawBytes;
    type Decoder = RawBytes;
    fn encoder(&mut self) -> RawBytes {
        RawBytes
    }
    fn decoder(&mut self) -> RawBytes {
        RawBytes
    }
}

struct Server {
    channel: Channel,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

struct State {
    rt: Runtime,
    server: Option<Server>,
    calls: u64,
}

fn start(rt: &Runtime) -> Server {
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8 << 20).unwrap();
        let settings = Settings {
            max_message_bytes: MAX_MESSAGE_BYTES,
            ..Settings::default()
        };
        let engine = Arc::new(Engine::new(store, settings).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let stopped = async {
                let _ = stopped.await;
            };
            chaff::service::serve_with(
                engine,
                listener,
                stopped,
                Duration::from_secs(1),
                Trust::open(),
            )
            .await
            .unwrap();
        });
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        Server {
            channel,
            stop,
            task,
            _dir: dir,
        }
    })
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn call(data: &[u8]) {
    let mut guard = STATE.lock().unwrap_or_else(|p| p.into_inner());
    let state = guard.get_or_insert_with(|| State {
        rt: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
        server: None,
        calls: 0,
    });
    state.calls += 1;
    if state.calls % RESTART_EVERY == 0
        && let Some(old) = state.server.take()
    {
        let _ = old.stop.send(());
        state.rt.block_on(old.task).unwrap();
    }
    if state.server.is_none() {
        state.server = Some(start(&state.rt));
    }
    let channel = state.server.as_ref().unwrap().channel.clone();
    let (kind, body) = match data.split_first() {
        Some((k, rest)) => (k % 3, rest.to_vec()),
        None => (0, Vec::new()),
    };
    let path = [
        "/chaff.v1.Chaff/Score",
        "/chaff.v1.Chaff/Train",
        "/chaff.v1.Chaff/ScoreBatch",
    ][kind as usize];
    let answer = state.rt.block_on(async move {
        let mut grpc = Grpc::new(channel)
            .max_encoding_message_size(usize::MAX)
            .max_decoding_message_size(usize::MAX);
        grpc.ready()
            .await
            .expect("the server stopped accepting calls");
        let call = grpc.unary(
            tonic::Request::new(body),
            PathAndQuery::from_static(path),
            Raw,
        );
        tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .unwrap_or_else(|_| panic!("{path} did not answer in 10 s"))
    });
    match answer {
        Ok(response) => {
            let bytes = response.into_inner();
            match kind {
                0 => {
                    let r = proto::ScoreResponse::decode(&bytes[..]).expect("ScoreResponse");
                    assert!((0.0..=1.0).contains(&r.spam_probability), "{r:?}");
                }
                1 => {
                    proto::TrainResponse::decode(&bytes[..]).expect("TrainResponse");
                }
                _ => {
                    let r =
                        proto::ScoreBatchResponse::decode(&bytes[..]).expect("ScoreBatchResponse");
                    assert!(
                        r.responses
                            .iter()
                            .all(|r| (0.0..=1.0).contains(&r.spam_probability))
                    );
                }
            }
        }
        Err(s) => {
            assert!(
                !matches!(
                    s.code(),
                    Code::Internal | Code::Unknown | Code::Unavailable | Code::Cancelled
                ),
                "{path}: {:?} {:?}",
                s.code(),
                s.message()
            );
            assert!(
                !s.message().is_empty(),
                "{path}: {:?} without a message",
                s.code()
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    call(data);
});
