//! The gRPC adapter: the only module that names tonic. Each RPC validates
//! its request into library types, runs the engine on the blocking pool
//! (engine calls do storage I/O and CPU-heavy tokenizing), and converts the
//! answer back. Errors become statuses in [`status`].

pub mod status;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::engine::{Engine, TrainOutcome};
use crate::error::Error;
use crate::proto::{self, chaff_server::ChaffServer};
use crate::types::{MessageId, UserId};

/// Encoded descriptor of chaff.v1, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("chaff_descriptor");

/// The `chaff.v1.Chaff` service over an [`Engine`].
#[derive(Clone)]
pub struct ChaffService {
    engine: Arc<Engine>,
    health: tonic_health::server::HealthReporter,
}

impl ChaffService {
    /// Runs `f` on the blocking pool. Storage failures also flip health to
    /// NOT_SERVING, so load balancers stop sending traffic to a node that
    /// cannot write.
    async fn run<T, E, F>(&self, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        E: Failure,
        F: FnOnce(&Engine) -> Result<T, E> + Send + 'static,
    {
        let engine = self.engine.clone();
        let result = tokio::task::spawn_blocking(move || f(&engine))
            .await
            .map_err(|e| Status::internal(format!("request task failed: {e}")))?;
        if let Err(failure) = &result
            && let Error::Storage(e) = failure.error()
        {
            warn!(error = %e, "storage failure; reporting NOT_SERVING");
            self.health
                .set_not_serving::<ChaffServer<ChaffService>>()
                .await;
        }
        result.map_err(Failure::into_status)
    }
}

/// An engine failure as `run` sees it: the library error (to notice storage
/// trouble) and how it reaches the caller.
trait Failure: Send + 'static {
    fn error(&self) -> &Error;
    fn into_status(self) -> Status;
}

impl Failure for Error {
    fn error(&self) -> &Error {
        self
    }

    fn into_status(self) -> Status {
        Status::from(self)
    }
}

/// A batch item's failure: its index and its error.
impl Failure for (usize, Error) {
    fn error(&self) -> &Error {
        &self.1
    }

    fn into_status(self) -> Status {
        indexed(self.0, self.1)
    }
}

/// Most items one ScoreBatch call may carry.
pub const MAX_BATCH: usize = 1000;

/// A batch item's error, with the item's index in front of its message.
fn indexed(i: usize, e: Error) -> Status {
    let s = Status::from(e);
    Status::new(s.code(), format!("item {i}: {}", s.message()))
}

fn score_response(scored: crate::engine::Scored) -> proto::ScoreResponse {
    proto::ScoreResponse {
        spam_probability: scored.probability,
        spam_log_odds: scored.log_odds,
        verdict: status::verdict_to_wire(scored.verdict).into(),
        tokens_known: scored.tokens_known,
        tokens_used: scored.tokens_used,
        limits_hit: scored
            .limits_hit
            .iter()
            .map(|l| l.as_str().to_string())
            .collect(),
    }
}

fn user_id(raw: String) -> Result<UserId, Status> {
    UserId::new(raw).map_err(Status::from)
}

#[tonic::async_trait]
impl proto::chaff_server::Chaff for ChaffService {
    async fn score(
        &self,
        req: Request<proto::ScoreRequest>,
    ) -> Result<Response<proto::ScoreResponse>, Status> {
        let req = req.into_inner();
        let user = user_id(req.user_id)?;
        let message = req.message;
        let scored = self.run(move |e| e.score(&user, &message)).await?;
        Ok(Response::new(score_response(scored)))
    }

    async fn score_batch(
        &self,
        req: Request<proto::ScoreBatchRequest>,
    ) -> Result<Response<proto::ScoreBatchResponse>, Status> {
        let requests = req.into_inner().requests;
        if requests.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "batch has {} items; the limit is {MAX_BATCH}",
                requests.len()
            )));
        }
        let mut items = Vec::with_capacity(requests.len());
        for (i, r) in requests.into_iter().enumerate() {
            let user = UserId::new(r.user_id).map_err(|e| indexed(i, e))?;
            items.push((user, r.message));
        }
        let scored = self.run(move |e| e.score_batch(&items)).await?;
        Ok(Response::new(proto::ScoreBatchResponse {
            responses: scored.into_iter().map(score_response).collect(),
        }))
    }

    async fn train(
        &self,
        req: Request<proto::TrainRequest>,
    ) -> Result<Response<proto::TrainResponse>, Status> {
        let req = req.into_inner();
        let user = user_id(req.user_id)?;
        let label = status::label_from_wire(req.label)?;
        let message_id = match req.message_id.is_empty() {
            true => None,
            false => Some(MessageId::new(req.message_id).map_err(Status::from)?),
        };
        let message = req.message;
        let log_user = user.clone();
        let t = self
            .run(move |e| e.train(&user, &message, label, message_id))
            .await?;
        info!(user = %log_user, message_id = %t.message_id, %label, outcome = ?t.outcome, "train");
        let outcome = match t.outcome {
            TrainOutcome::Learned => proto::TrainOutcome::Learned,
            TrainOutcome::AlreadyLearned => proto::TrainOutcome::AlreadyLearned,
            TrainOutcome::Relearned => proto::TrainOutcome::Relearned,
        };
        Ok(Response::new(proto::TrainResponse {
            outcome: outcome.into(),
            message_id: t.message_id.to_string(),
            spam_learned: t.spam_learned,
            ham_learned: t.ham_learned,
        }))
    }

    async fn forget(
        &self,
        req: Request<proto::ForgetRequest>,
    ) -> Result<Response<proto::ForgetResponse>, Status> {
        let req = req.into_inner();
        let user = user_id(req.user_id)?;
        let message_id = MessageId::new(req.message_id).map_err(Status::from)?;
        let (log_user, log_id) = (user.clone(), message_id.clone());
        let f = self.run(move |e| e.forget(&user, &message_id)).await?;
        info!(user = %log_user, message_id = %log_id, label = %f.label, "forget");
        Ok(Response::new(proto::ForgetResponse {
            forgotten_label: status::label_to_wire(f.label).into(),
            spam_learned: f.spam_learned,
            ham_learned: f.ham_learned,
        }))
    }

    async fn get_user(
        &self,
        req: Request<proto::GetUserRequest>,
    ) -> Result<Response<proto::UserInfo>, Status> {
        let user = user_id(req.into_inner().user_id)?;
        let name = user.to_string();
        let s = self.run(move |e| e.user_summary(&user)).await?;
        Ok(Response::new(proto::UserInfo {
            user_id: name,
            spam_learned: s.spam_learned,
            ham_learned: s.ham_learned,
            tokens: s.tokens,
            tokenizer_version: s.tokenizer_version,
        }))
    }
}

/// Serves chaff, gRPC health and reflection on `listener` until `shutdown`
/// completes, then snapshots models and flushes storage.
///
/// After `shutdown`, in-flight requests get up to `grace` to finish. The
/// bound matters: hyper's graceful shutdown can wait forever for a client
/// that keeps an idle HTTP/2 connection open (hyperium/hyper#4170), and a
/// mail pipeline always does. Requests cut off by the bound lose only their
/// reply: each click is committed atomically or not at all, and retrying it
/// is harmless.
///
/// tonic's own decode limit is set well above the engine's message limit so
/// that an oversized message gets chaff's RESOURCE_EXHAUSTED naming the
/// limit, not a transport error.
pub async fn serve(
    engine: Arc<Engine>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    grace: Duration,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let local: SocketAddr = listener.local_addr()?;
    let limit = engine.settings().max_message_bytes;
    let transport_limit = limit.saturating_mul(2).saturating_add(1 << 20);

    let (health, health_service) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let chaff = ChaffServer::new(ChaffService {
        engine: engine.clone(),
        health: health.clone(),
    })
    .max_decoding_message_size(transport_limit);
    // Storage was opened before we got here, so we can serve.
    health.set_serving::<ChaffServer<ChaffService>>().await;

    info!(%local, max_message_bytes = limit, "serving chaff.v1.Chaff, grpc.health.v1.Health, reflection");
    let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(chaff)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
            shutdown.await;
            info!(
                grace_ms = grace.as_millis() as u64,
                "shutdown requested: draining in-flight requests"
            );
            let _ = draining_tx.send(());
        });
    let grace_expired = async move {
        if draining_rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        served = server => served?,
        () = grace_expired => warn!("grace period over with connections still open; closing them"),
    }

    info!("shutting down: snapshotting models and flushing storage");
    tokio::task::spawn_blocking(move || engine.shutdown()).await??;
    info!("storage flushed; bye");
    Ok(())
}
