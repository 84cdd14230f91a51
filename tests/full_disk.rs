//! A full disk, as a new user meets it: the data directory on a small tmpfs
//! (mounted by the test; skipped with a printed reason where the machine
//! cannot mount one), trained with large messages until it is full, then
//! given room again.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::common::*;
use chaff::proto;

/// A tmpfs mounted on a fresh directory; unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Self, String> {
        let parent = tempfile::tempdir().map_err(|e| e.to_string())?;
        let dir = parent.path().join("disk");
        std::fs::create_dir(&dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Self {
            dir,
            _parent: parent,
        })
    }

    fn grow(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .status()
            .unwrap();
        assert!(status.success(), "remount failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: the server may still hold files open while it stops.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// A message of 3,000 words no other message shares, so each click adds
/// thousands of tokens to the model.
fn big_message(n: usize) -> Vec<u8> {
    let mut m = format!("From: sender{n}@bulk.example\r\nSubject: offer {n}\r\n\r\n");
    let mut x = n as u64 * 7919 + 1;
    for _ in 0..3000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let word: String = (0..8)
            .map(|i| (b'a' + ((x >> (i * 5)) % 26) as u8) as char)
            .collect();
        m.push_str(&word);
        m.push(' ');
    }
    m.push_str("\r\n");
    m.into_bytes()
}

async fn train_big(
    c: &mut Client,
    n: usize,
) -> (Result<proto::TrainResponse, tonic::Status>, Duration) {
    let started = Instant::now();
    // A click that takes this long is hung (CHAFF_TEST_HANG_SECS raises it,
    // to attach a debugger).
    let hang = std::env::var("CHAFF_TEST_HANG_SECS").map_or(10, |s| s.parse().unwrap());
    let r = tokio::time::timeout(
        Duration::from_secs(hang),
        c.train(proto::TrainRequest {
            user_id: "alice".into(),
            message: big_message(n),
            label: proto::Label::Spam.into(),
            message_id: format!("m{n}"),
        }),
    )
    .await
    .unwrap_or_else(|_| {
        // A panic would leave the runtime waiting for the stuck blocking
        // thread forever: end the test binary instead.
        eprintln!("click {n} hung past {hang} s (sled flush waiting on a full disk?)");
        std::process::exit(101);
    });
    (r.map(|r| r.into_inner()), started.elapsed())
}

fn data_dir(disk: &Path) -> PathBuf {
    disk.join("data")
}

#[tokio::test]
async fn a_full_disk_answers_unavailable_at_once_reports_not_serving_and_recovers_by_itself() {
    let disk = match Tmpfs::mount("8m") {
        Ok(d) => d,
        Err(why) => {
            eprintln!("skipping the full-disk test: cannot mount a tmpfs here ({why})");
            return;
        }
    };
    let server = TestServer::start_in(&data_dir(&disk.dir)).await;
    let mut c = server.client().await;

    // Fill the disk.
    let mut learned = 0;
    let mut failure = None;
    for n in 0..2000 {
        match train_big(&mut c, n).await {
            (Ok(r), _) => learned = r.spam_learned,
            (Err(status), took) => {
                failure = Some((n, status, took));
                break;
            }
        }
    }
    let (first, status, took) = failure.expect("an 8 MiB disk filled up");
    eprintln!("first click that did not fit: #{first}, answered in {took:?}");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status
            .message()
            .contains("the data directory's disk is full"),
        "{}",
        status.message()
    );
    assert!(!status.message().contains("Os {"), "{}", status.message());
    // Within a second on a quiet machine; the bound leaves room for a
    // loaded one (4.25 s was seen at load average 16). What it rules out
    // is the bug the issue found: a click hanging past a 5 s deadline.
    assert!(
        took < Duration::from_secs(5),
        "first failing click took {took:?}"
    );
    let (later, took) = train_big(&mut c, first + 1).await;
    assert_eq!(later.unwrap_err().code(), Code::Unavailable);
    assert!(took < Duration::from_secs(5), "a later click took {took:?}");

    for service in ["", "chaff.v1.Chaff"] {
        assert_eq!(
            health(&server.url(), service).await,
            ServingStatus::NotServing as i32,
            "health {service:?} while the disk is full"
        );
    }

    // Room again: health comes back by itself, and clicks are learned on
    // top of everything acknowledged before.
    disk.grow("64m");
    let deadline = Instant::now() + Duration::from_secs(20);
    while health(&server.url(), "").await != ServingStatus::Serving as i32 {
        assert!(
            Instant::now() < deadline,
            "not SERVING 20 s after the disk grew"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        health(&server.url(), "chaff.v1.Chaff").await,
        ServingStatus::Serving as i32
    );
    let (again, _) = train_big(&mut c, first + 2).await;
    let again = again.expect("a click after the disk grew");
    // Every acknowledged click is there, plus this one; the first refused
    // click is in doubt (its write may have reached storage before its
    // flush failed, and storage keeps it once it can write), the second
    // was refused before any write.
    assert!(
        (learned + 1..=learned + 2).contains(&again.spam_learned),
        "acknowledged {learned} before the disk filled, now {}: acknowledged clicks lost or a refused-before-writing click applied",
        again.spam_learned
    );
    server.stop().await;
}
