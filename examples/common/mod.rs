//! What the examples that measure the data directory share.

/// Bytes `path` takes on disk (`du -s -B1`: allocated blocks, what an
/// operator's disk fills with, not the files' lengths).
pub fn du(path: &std::path::Path) -> u64 {
    let out = std::process::Command::new("du")
        .args(["-s", "-B1"])
        .arg(path)
        .output()
        .expect("du");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("du output")
}
