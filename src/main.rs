//! The `chaff` binary: parses the command line and hands off. `serve` runs
//! the service; the other commands are a client for people, talking gRPC to
//! a running server, except `tokens`, which reads a message locally.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    tune_allocator();
    let args = cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
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

/// Keeps glibc's allocator from holding on to memory chaff has freed, so
/// the server's RSS follows `--model-memory` + `--cache-mb` (measured in
/// docs/PERFORMANCE.md, "Memory within the flags"): two arenas rather than
/// up to 8 per core (the blocking pool's threads each got one and kept
/// what they freed), and a fixed mmap threshold, so that a model's hash
/// table (hundreds of KiB to tens of MiB) is its own mapping, returned to
/// the system when the model is evicted or pruned — glibc's dynamic
/// threshold otherwise rises after the first such free and later tables
/// stay in the heap. An operator's own `MALLOC_ARENA_MAX` or
/// `GLIBC_TUNABLES` wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some()
        || std::env::var_os("GLIBC_TUNABLES").is_some()
    {
        return;
    }
    // SAFETY: mallopt only sets allocator parameters; called first thing,
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}
