//! Starting real servers for tests, and messages written for the tests.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chaff::engine::{Engine, Settings};
use chaff::proto::{self, chaff_client::ChaffClient};
use chaff::store::Store;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;

pub type Client = ChaffClient<Channel>;

/// An in-process server on 127.0.0.1 with its own data directory.
pub struct TestServer {
    pub addr: SocketAddr,
    /// The engine served (for [`TestServer::settle_delivered`]); weak, so
    /// that a storage reopen can drop it.
    engine: std::sync::Weak<Engine>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(Settings::default()).await
    }

    /// A server whose Score changes no model (`learn_delivered` off): for
    /// tests that observe a model through Score while pinning what clicks
    /// do. Learning from delivered mail is the default and has its own
    /// tests (tests/one_sided.rs, src/engine/tests.rs).
    pub async fn start_pure() -> Self {
        Self::start_with(Settings {
            learn_delivered: false,
            ..Settings::default()
        })
        .await
    }

    pub async fn start_with(settings: Settings) -> Self {
        Self::start_trusted(settings, |_| chaff::service::guard::Trust::open()).await
    }

    /// A server whose data directory is `data` (which the caller owns).
    pub async fn start_in(data: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let trust = chaff::service::guard::Trust::open();
        Self::start_at(dir, Some(data.to_path_buf()), Settings::default(), trust).await
    }

    /// [`TestServer::start_in`] with [`TestServer::start_pure`]'s settings.
    pub async fn start_pure_in(data: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let trust = chaff::service::guard::Trust::open();
        let settings = Settings {
            learn_delivered: false,
            ..Settings::default()
        };
        Self::start_at(dir, Some(data.to_path_buf()), settings, trust).await
    }

    /// A server whose trust (keys, TLS, limits) `trust` builds from the
    /// data directory.
    pub async fn start_trusted(
        settings: Settings,
        trust: impl FnOnce(&Path) -> Arc<chaff::service::guard::Trust>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let trust = trust(dir.path());
        Self::start_at(dir, None, settings, trust).await
    }

    async fn start_at(
        dir: tempfile::TempDir,
        data: Option<std::path::PathBuf>,
        settings: Settings,
        trust: Arc<chaff::service::guard::Trust>,
    ) -> Self {
        let path = data.unwrap_or_else(|| dir.path().to_path_buf());
        let store = open_store(&path).await;
        let engine = Arc::new(Engine::new(store, settings).unwrap());
        let weak = Arc::downgrade(&engine);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let stopped = async {
                let _ = stopped.await;
            };
            chaff::service::serve_with(engine, listener, stopped, Duration::from_secs(5), trust)
                .await
                .unwrap();
        });
        Self {
            addr,
            engine: weak,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    /// Waits until the background learner of delivered mail has learned
    /// what Score queued (for servers whose keys cannot call GetStats; see
    /// [`settle_delivered`]).
    pub fn settle_delivered(&self) {
        if let Some(engine) = self.engine.upgrade() {
            assert!(engine.settle_delivered(Duration::from_secs(20)));
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn client(&self) -> Client {
        connect(&self.url()).await
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

/// Opens the store in `path`, waiting while an earlier handle of it in
/// this process still holds sled's file lock. Dropping a `Store` does not
/// release the lock at once: each of sled's log writes runs on its own
/// thread pool with a clone of the database's file (`vendor/sled/src/
/// pagecache/iobuf.rs`, `threadpool::spawn`), and that clone is dropped
/// only after the write has woken the flush waiting for it. A test that
/// stops a server and starts another on the same directory at once could
/// find the lock held (measured: 2 reopens in 300 on this loaded machine)
/// and failed at start-up (the backup test's restart). A new `chaff serve`
/// process never sees this: the lock goes with the old process.
async fn open_store(path: &Path) -> Store {
    open_store_waiting(path, 32 << 20)
}

/// [`open_store`]'s wait, for a caller outside the runtime (a test that
/// opens a backup the engine just wrote and closed).
pub fn open_store_waiting(path: &Path, cache_bytes: u64) -> Store {
    for _ in 0..500 {
        match Store::open(path, cache_bytes) {
            Err(chaff::error::Error::Locked { .. }) => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other.unwrap(),
        }
    }
    panic!("{} stayed locked for 5 s", path.display());
}

pub async fn connect(url: &str) -> Client {
    let mut last = None;
    for _ in 0..50 {
        match ChaffClient::connect(url.to_string()).await {
            Ok(c) => {
                return c
                    .max_encoding_message_size(usize::MAX)
                    .max_decoding_message_size(64 << 20);
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot connect to {url}: {last:?}");
}

/// The `chaff serve` binary as a child process, for tests that signal it.
pub struct ServerProcess {
    pub child: Child,
    pub addr: String,
}

impl ServerProcess {
    pub fn start(data: &Path) -> Self {
        Self::start_args(data, &[])
    }

    /// [`ServerProcess::start`] with Score changing no model (see
    /// [`TestServer::start_pure`]).
    pub fn start_pure(data: &Path) -> Self {
        Self::start_args(data, &["--learn-delivered", "false"])
    }

    /// With extra `chaff serve` flags; the first stdout line gives the
    /// address (`http://`, even when the port speaks TLS).
    pub fn start_args(data: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chaff"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--log",
                "warn",
                "--shutdown-grace",
                "300ms",
                "--data",
            ])
            .arg(data)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn chaff serve");
        let addr = listening_addr(&mut child);
        Self { addr, child }
    }

    /// SIGTERM, then wait: a clean exit is expected.
    pub fn terminate(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        assert!(
            exit.success(),
            "chaff serve exited with {exit:?} after SIGTERM"
        );
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// A test that fails (panics) before it stops its server must not leave
/// the process running: kill it if it has not exited.
impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `chaff serve` at the default log level with `--log-format json` and its
/// log in a pipe, for tests that read what it logged.
pub struct JsonLogServer {
    server: ServerProcess,
}

impl JsonLogServer {
    pub fn start(data: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chaff"))
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(["--shutdown-grace", "300ms", "--data"])
            .arg(data)
            .env_remove("CHAFF_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn chaff serve");
        let addr = listening_addr(&mut child);
        Self {
            server: ServerProcess { child, addr },
        }
    }

    pub fn url(&self) -> &str {
        &self.server.addr
    }

    /// SIGTERM, a clean exit, and everything the server logged.
    pub fn stop(mut self) -> String {
        use std::io::Read;
        let mut stderr = self.server.child.stderr.take().unwrap();
        let pid = self.server.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let mut log = String::new();
        stderr.read_to_string(&mut log).unwrap();
        let exit = self.server.child.wait().unwrap();
        assert!(exit.success(), "chaff serve exited with {exit:?}: {log}");
        log
    }
}

pub const SPAM: &[u8] = b"From: \"Pharma Deals\" <promo@pills.example>\r\n\
Subject: Cheap pills, 90% discount today\r\n\
Message-ID: <s1@pills.example>\r\n\
Content-Type: text/plain\r\n\
\r\n\
Buy cheap pills now! Viagra and more at http://pills.example/buy. Limited offer, act now.\r\n";

pub const SPAM2: &[u8] = b"From: offers@winner.example\r\n\
Subject: You are a winner: claim your prize\r\n\
Message-ID: <s2@winner.example>\r\n\
\r\n\
Claim your cash prize now, limited offer, click http://winner.example/claim to act now.\r\n";

pub const HAM: &[u8] = b"From: Bob <bob@work.example>\r\n\
Subject: Notes from the quarterly planning meeting\r\n\
Message-ID: <h1@work.example>\r\n\
Content-Type: text/plain\r\n\
\r\n\
Hi team, the notes from Tuesday's planning meeting are attached. Please review the agenda\r\n\
for next week and send comments on the budget section.\r\n";

pub const HAM2: &[u8] = b"From: Carol <carol@work.example>\r\n\
Subject: Re: budget review meeting\r\n\
Message-ID: <h2@work.example>\r\n\
\r\n\
Thanks Bob, I reviewed the budget section of the notes; comments inline before the meeting.\r\n";

pub async fn train(
    c: &mut Client,
    user: &str,
    msg: &[u8],
    label: proto::Label,
    id: &str,
) -> proto::TrainResponse {
    c.train(proto::TrainRequest {
        user_id: user.into(),
        message: msg.to_vec(),
        label: label.into(),
        message_id: id.into(),
    })
    .await
    .unwrap()
    .into_inner()
}

pub async fn score(c: &mut Client, user: &str, msg: &[u8]) -> proto::ScoreResponse {
    c.score(proto::ScoreRequest {
        user_id: user.into(),
        message: msg.to_vec(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

pub async fn user(c: &mut Client, user: &str) -> proto::UserInfo {
    c.get_user(proto::GetUserRequest {
        user_id: user.into(),
    })
    .await
    .unwrap()
    .into_inner()
}

/// Everything observable about a user: its info and the scores of the test
/// messages. Two equal snapshots mean the user is in the same state.
pub async fn observe(c: &mut Client, u: &str) -> (proto::UserInfo, Vec<(u64, i32)>) {
    let mut scores = Vec::new();
    for m in [SPAM, SPAM2, HAM, HAM2] {
        let s = score(c, u, m).await;
        scores.push((s.spam_probability.to_bits(), s.verdict));
        // What Score queued for the background learner is part of the
        // state the next observation sees (as when it learned inline).
        settle_delivered(c).await;
    }
    (user(c, u).await, scores)
}

/// Waits (at most 20 s, polling GetStats) until the server's background
/// learner of delivered mail has nothing queued: a test that reads counts
/// or scores after Score calls this first, as Score only queues that
/// learning. Panics if it does not settle.
pub async fn settle_delivered(c: &mut Client) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let s = c
            .get_stats(proto::GetStatsRequest {})
            .await
            .unwrap()
            .into_inner();
        if s.delivered_queued == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "delivered-mail learner still has {} queued after 20 s",
            s.delivered_queued
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The `http://` address a `chaff serve` just spawned with piped stdout
/// listens on: the first line it prints (`chaff listening on ADDR`).
fn listening_addr(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("chaff listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    format!("http://{addr}")
}
