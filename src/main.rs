//! The `chaff` binary: parses the command line and hands off. `serve` runs
//! the service; the other commands are a client for people, talking gRPC to
//! a running server, except `tokens`, which reads a message locally.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    // Parsing starts no thread, so `tune_allocator` still runs while the
    // process has only this one.
    let args = cli::parse();
    if args.runs_the_service() {
        tune_allocator();
    }
    let quiet_pipe = !args.runs_the_service();
    if quiet_pipe {
        die_quietly_on_a_closed_pipe();
    }
    let runtime = match runtime(quiet_pipe) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", cli::error_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// Lets a command for people end as Unix tools do when what reads its
/// output goes away (`chaff score … | head -1`, `chaff tokens FILE | head`):
/// killed by SIGPIPE, silently. Rust ignores SIGPIPE, so the next
/// `println!` to the closed pipe panicked instead ("failed printing to
/// stdout: Broken pipe", with a backtrace). Not for `serve`: a service
/// must not die because whatever read its log or a client went away; it
/// keeps Rust's default, under which such a write is an error, never a
/// signal.
fn die_quietly_on_a_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: resets one signal's disposition to the system default before
    // any thread but this one exists (the runtime is built after).
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The async runtime. With `quiet_pipe` (SIGPIPE at its default, see
/// [`die_quietly_on_a_closed_pipe`]) each of its threads blocks SIGPIPE:
/// they write to sockets, and hyper writes HTTP/2 frames with writev(2),
/// which, unlike send(2) with MSG_NOSIGNAL, raises SIGPIPE on a connection
/// the peer has closed. A server that went away mid-call then killed the
/// client silently, exit status and no message: `chaff soak`, whose job is
/// killing servers under 32 connections, died so once in a `.ci/run` here
/// with nothing on stderr. Blocked, the signal stays pending on the thread and the write
/// fails with EPIPE, an error the command reports. The main thread, which
/// prints the command's output, keeps the quiet end on a closed pipe.
/// (Children get a clean mask: std's `Command` resets it before exec.)
fn runtime(quiet_pipe: bool) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if quiet_pipe {
        builder.on_thread_start(block_sigpipe_on_this_thread);
    }
    builder.build()
}

fn block_sigpipe_on_this_thread() {
    #[cfg(unix)]
    // SAFETY: changes only the calling thread's signal mask, with a set
    // built on the stack just before.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Allocations of this size or more get their own mapping ([`tune_allocator`]).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: i32 = 64 << 10;

/// Keeps glibc's allocator from holding on to memory chaff has freed, so
/// the server's RSS follows `--model-memory` + `--cache-mb` plus a fixed
/// overhead (measured in docs/PERFORMANCE.md, "Memory within the flags"):
/// two arenas rather than up to 8 per core (the blocking pool's threads
/// each got one and kept what they freed), and a fixed mmap threshold of
/// 64 KiB, so that every model table, dictionary table and snapshot buffer
/// of 64 KiB or more is its own mapping, returned to the system when it is
/// freed — glibc's dynamic threshold otherwise rises after the first large
/// free and later tables stay in the heap. At 256 KiB (sessions 8–9) the
/// tables of small users' models (a few thousand tokens: 40–200 KiB) and
/// their dictionaries, loaded and evicted thousands of times a minute when
/// the budget is tight, left 26–35 MiB free but resident inside the two
/// arenas (glibc `malloc_stats`), which `malloc_trim` could not give back
/// (3 MiB); at 64 KiB 6–12 MiB. An operator's own `MALLOC_ARENA_MAX` or
/// `GLIBC_TUNABLES` wins.
///
/// Only for `serve`, whose memory it bounds. The other commands run a
/// while and exit: `chaff eval`'s replay scores and learns on one thread
/// while others read ahead and sled writes, and two arenas shared by them
/// cost it a third of its speed (SpamAssassin corpus, every message
/// learned: a median 5,986 messages/s tuned against 8,903 untuned over
/// five alternated runs; the two arenas alone 6,134, the 64 KiB mmap
/// threshold alone 8,797; docs/PERFORMANCE.md, "Session 30").
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some()
        || std::env::var_os("GLIBC_TUNABLES").is_some()
    {
        return;
    }
    // SAFETY: mallopt only sets allocator parameters; called before any
    // other thread exists (`main`, right after parsing the command line).
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

#[cfg(all(test, unix))]
mod tests {
    use std::io::IoSlice;
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;

    /// Writes to a socket whose peer has closed, with writev(2) as hyper
    /// does, from a runtime thread: the second write after the close is the
    /// one the kernel answers with EPIPE (and SIGPIPE).
    async fn write_after_the_peer_closed() -> std::io::Error {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        drop(server);
        for _ in 0..100 {
            if let Err(e) = client.write_vectored(&[IoSlice::new(b"frame")]).await {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("100 writes to a closed connection all succeeded");
    }

    #[test]
    fn a_client_command_reports_a_server_that_went_away_instead_of_dying_by_sigpipe() {
        // As `main` does for every command but `serve`. Without the mask on
        // the runtime's threads this test process dies by SIGPIPE.
        super::die_quietly_on_a_closed_pipe();
        let rt = super::runtime(true).unwrap();
        let err = rt
            .block_on(async { tokio::spawn(write_after_the_peer_closed()).await })
            .unwrap();
        assert!(
            matches!(
                err.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ),
            "{err}"
        );
    }
}
