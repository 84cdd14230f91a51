//! Online backup (`chaff backup DIR`) and restore (`chaff serve --data
//! DIR`): taken while clicks keep flowing, the copy holds every click
//! acknowledged before the backup started, none half, and answers as the
//! original did for users untouched since.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chaff::proto::{self, Label};
use parking_lot::Mutex;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_training_holds_every_acknowledged_click_and_none_half() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    for u in ["still-a", "still-b"] {
        train(&mut c, u, SPAM, Label::Spam, "s1").await;
        train(&mut c, u, HAM, Label::Ham, "h1").await;
        train(&mut c, u, HAM2, Label::Ham, "h2").await;
    }
    c.seed_shared(proto::SeedSharedRequest {
        message: SPAM2.to_vec(),
        label: Label::Spam.into(),
        message_id: "seed-1".into(),
    })
    .await
    .unwrap();

    // Clicks go on for the busy users before, during and after the backup;
    // `acked` is every click the server acknowledged, in order.
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let trainer = {
        let (acked, stop, mut c) = (acked.clone(), stop.clone(), c.clone());
        tokio::spawn(async move {
            let mut i = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let (user, id) = (format!("busy-{}", i % 3), format!("m{i}"));
                let (msg, label) = match i % 4 {
                    0 => (SPAM, Label::Spam),
                    1 => (HAM, Label::Ham),
                    2 => (SPAM2, Label::Spam),
                    _ => (HAM2, Label::Ham),
                };
                train(&mut c, &user, msg, label, &id).await;
                acked.lock().push((user, id));
                i += 1;
            }
        })
    };
    while acked.lock().len() < 30 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }

    let dir = tempfile::tempdir().unwrap();
    let backup_dir = dir.path().join("backup");
    let before_start: Vec<(String, String)> = acked.lock().clone();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_chaff"))
        .args(["backup", "--server", &server.url()])
        .arg(&backup_dir)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("backed up"));
    // Clicks went on while it ran.
    let during = acked.lock().len();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    stop.store(true, Ordering::SeqCst);
    trainer.await.unwrap();
    assert!(acked.lock().len() > during, "clicks kept flowing");
    let all: Vec<(String, String)> = acked.lock().clone();

    // A second backup into the same directory is refused.
    let again = c
        .backup(proto::BackupRequest {
            directory: backup_dir.display().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::InvalidArgument);

    let still: Vec<_> = {
        let mut v = Vec::new();
        for u in ["still-a", "still-b"] {
            v.push(observe(&mut c, u).await);
        }
        v
    };
    let shared = c
        .get_shared(proto::GetSharedRequest {})
        .await
        .unwrap()
        .into_inner();
    server.stop().await;

    let restored = TestServer::start_in(&backup_dir).await;
    let mut r = restored.client().await;
    // Untouched users answer exactly as the original did.
    for (u, before) in ["still-a", "still-b"].into_iter().zip(&still) {
        assert_eq!(&observe(&mut r, u).await, before, "{u}");
    }
    assert_eq!(
        r.get_shared(proto::GetSharedRequest {})
            .await
            .unwrap()
            .into_inner(),
        shared
    );
    // Every click acknowledged before the backup started is in it.
    for (user, id) in &before_start {
        r.forget(proto::ForgetRequest {
            user_id: user.clone(),
            message_id: id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("{user} {id} acknowledged before the backup: {e}"));
    }
    // Nothing half: once every click made at all is forgotten (those from
    // during the backup are there or not, whole), the models are empty.
    for (user, id) in &all[before_start.len()..] {
        let f = r
            .forget(proto::ForgetRequest {
                user_id: user.clone(),
                message_id: id.clone(),
            })
            .await;
        assert!(
            f.is_ok() || f.as_ref().unwrap_err().code() == tonic::Code::NotFound,
            "{f:?}"
        );
    }
    for u in ["busy-0", "busy-1", "busy-2"] {
        let info = user(&mut r, u).await;
        assert_eq!(
            (info.spam_learned, info.ham_learned, info.tokens),
            (0, 0, 0),
            "{u}"
        );
    }
    // The restored server takes new clicks, and keeps them across a restart.
    train(&mut r, "busy-0", SPAM, Label::Spam, "after").await;
    restored.stop().await;
    let restarted = TestServer::start_in(&backup_dir).await;
    let mut r = restarted.client().await;
    assert_eq!(user(&mut r, "busy-0").await.spam_learned, 1);
    restarted.stop().await;
}
