//! The gRPC adapter: the only module that names tonic. Each RPC validates
//! its request into library types, runs the engine on the blocking pool
//! (engine calls do storage I/O and CPU-heavy tokenizing), and converts the
//! answer back. Errors become statuses in [`status`]; a request that panics
//! is answered INTERNAL by [`catch_panic`] while the server goes on.

pub mod admission;
pub mod catch_panic;
pub mod codec;
pub mod guard;
pub mod metrics;
mod server;
pub mod status;
mod storage;
mod throttle;
pub mod tls;

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

use crate::auth::{Caller, Rpc};
use crate::engine::{DecisionQuery, Engine, ListRef};
use crate::error::Error;
use crate::policy::Entry;
use crate::policy::settings::SettingsUpdate;
use crate::proto;
use crate::types::{MessageId, Owner, UserId};

use self::storage::{Storage, report_failure};

pub use server::{KEYS_POLL, Network, serve, serve_logging_stats, serve_network, serve_with};

/// Encoded descriptor of chaff.v1, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("chaff_descriptor");

/// The `chaff.v1.Chaff` service over an [`Engine`].
#[derive(Clone)]
pub struct ChaffService {
    storage: Arc<Storage>,
    health: tonic_health::server::HealthReporter,
    metrics: Option<Arc<metrics::Metrics>>,
    /// The keys file in effect, copied into a backup as its `keys.json`:
    /// a directory restored without it would serve without keys.
    keys_file: Option<std::path::PathBuf>,
    /// The bytes ImportUser streams hold now, and their bound.
    imports: Arc<ImportBuffer>,
}

/// The bound on the bytes all ImportUser streams hold at once
/// ([`Network::max_import_buffer`], `--max-import-buffer`). Why: an import
/// is received whole before it is decoded (up to
/// [`MAX_IMPORT_BYTES`](crate::engine::MAX_IMPORT_BYTES) each), and a
/// tenant's admin key could otherwise start enough of them at once to use
/// up the machine's memory, every tenant's server with it.
struct ImportBuffer {
    limit: usize,
    bytes: Arc<tokio::sync::Semaphore>,
}

impl ImportBuffer {
    fn new(limit: usize) -> Self {
        let limit = limit.clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        ImportBuffer {
            limit,
            bytes: Arc::new(tokio::sync::Semaphore::new(limit)),
        }
    }

    /// Counts `n` more bytes into `held` (one import's share), or refuses
    /// the import RESOURCE_EXHAUSTED naming the limit: it is not waited
    /// for, since the bytes are already arriving.
    fn take(
        &self,
        held: &mut Option<tokio::sync::OwnedSemaphorePermit>,
        n: usize,
    ) -> Result<(), Status> {
        if n == 0 {
            return Ok(());
        }
        let more = u32::try_from(n)
            .ok()
            .and_then(|n| self.bytes.clone().try_acquire_many_owned(n).ok())
            .ok_or_else(|| {
                Status::resource_exhausted(format!(
                    "ImportUser streams already hold {} of the {} bytes imports may buffer at \
                     once (--max-import-buffer); not imported, retry once other imports are done",
                    self.limit - self.bytes.available_permits(),
                    self.limit
                ))
            })?;
        match held {
            Some(h) => h.merge(more),
            None => *held = Some(more),
        }
        Ok(())
    }
}

/// Bytes per ExportUser message.
const EXPORT_CHUNK_BYTES: usize = 1 << 20;

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
        // The call's admission, taken now that its request has arrived and
        // been checked (not at its headers: a body that never comes must
        // not hold a slot): its deadline, and its slot, which the work
        // holds until it ends even if the caller's future is dropped.
        let call = match admission::current() {
            Some(c) => Some(c.admit().await?),
            None => None,
        };
        if let Some(c) = &call {
            c.check(admission::Stage::Work)?;
        }
        let engine = self.storage.engine()?;
        let result = tokio::task::spawn_blocking(move || {
            // The blocking pool may have queued the work: check again, so
            // an expired call is answered without tokenizing.
            if let Some(c) = &call {
                c.check(admission::Stage::Work)?;
            }
            Ok::<_, admission::Refused>(f(&engine))
        })
        .await
        .map_err(catch_panic::resume_if_panicked)??;
        // A failure of the decision log's own cluster (`--decision-store`)
        // is not the store's: Scores and clicks go on, so health stays
        // SERVING (docs/SCALING.md), as the readiness probe, which asks
        // the click cluster only, would say 500 ms later anyway.
        if let Err(failure) = &result
            && failure.error().is_storage()
            && !matches!(failure.error(), Error::Storage(e) if e.is_decision_store())
            && !self
                .storage
                .failed
                .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            let e = failure.error();
            warn!(
                error = %e,
                "storage failure; reporting NOT_SERVING until a probe of the storage succeeds again"
            );
            report_failure(&self.health).await;
        }
        result.map_err(Failure::into_status)
    }
}

impl ChaffService {
    /// Runs the engine's queued prunes (models past `--max-user-tokens`,
    /// `engine::quota`) on the blocking pool, detached: the Train reply
    /// does not wait, and no Score ever runs one.
    fn prune_in_background(&self) {
        let Ok(engine) = self.storage.engine() else {
            return;
        };
        if engine.prune_wanted() {
            tokio::task::spawn_blocking(move || {
                if let Err(e) = engine.prune_pending() {
                    warn!(error = %e, "pruning a model to its quota failed; the next click retries");
                }
            });
        }
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
        status::indexed(self.0, self.1)
    }
}

/// The caller the guard identified (absent only when the service runs
/// without the guard, which `serve` never does).
type CallerRef = Option<Arc<Caller>>;

fn caller_of<T>(req: &Request<T>) -> CallerRef {
    req.extensions().get::<Arc<Caller>>().cloned()
}

/// A user id the caller may name (the tenant rule of [`crate::auth`]).
fn named_user(caller: &CallerRef, rpc: Rpc, raw: String) -> Result<UserId, Status> {
    let user = user_id_of(rpc, raw)?;
    allowed(caller, rpc, &user)?;
    Ok(user)
}

/// A user id as `rpc` takes it: checked in full ([`UserId::new`]: not
/// blank or padded) where the call would store state for the user, and
/// as stored ids are ([`UserId::stored`]) where it reads, scores or
/// removes it, so a user an older build stored under a padded id can
/// still be scored, read, exported and deleted.
fn user_id_of(rpc: Rpc, raw: String) -> Result<UserId, Error> {
    match rpc {
        Rpc::Train | Rpc::UpdateUser | Rpc::ImportUser | Rpc::AddListEntry => UserId::new(raw),
        _ => UserId::stored(raw),
    }
}

fn allowed(caller: &CallerRef, rpc: Rpc, user: &UserId) -> Result<(), Status> {
    if let Some(c) = caller
        && let Err(d) = c.may_touch(user)
    {
        guard::audit_denied(c, rpc, Some(user.as_str()), &d);
        return Err(Status::from(d));
    }
    Ok(())
}

/// A list the caller may touch: a user's (the tenant rule) or the
/// operator's (operator-wide rights).
fn list_ref(
    caller: &CallerRef,
    rpc: Rpc,
    user_id: String,
    operator_wide: bool,
    kind: i32,
) -> Result<ListRef, Status> {
    let list = status::list_ref(user_id, operator_wide, kind, |raw| user_id_of(rpc, raw))?;
    match &list.owner {
        Owner::User(user) => allowed(caller, rpc, user)?,
        Owner::Operator => {
            if let Some(c) = caller
                && let Err(d) = c.may_touch_operator()
            {
                guard::audit_denied(c, rpc, None, &d);
                return Err(Status::from(d));
            }
        }
    }
    Ok(list)
}

fn list_entry(raw: &str) -> Result<Entry, Status> {
    raw.parse::<Entry>().map_err(Status::from)
}

#[tonic::async_trait]
impl proto::chaff_server::Chaff for ChaffService {
    async fn score(
        &self,
        req: Request<proto::ScoreRequest>,
    ) -> Result<Response<proto::ScoreResponse>, Status> {
        let caller = caller_of(&req);
        let req = req.into_inner();
        let user = named_user(&caller, Rpc::Score, req.user_id)?;
        #[cfg(feature = "fault-injection")]
        crate::fault::panic_if(&user, crate::fault::PANIC_IN_HANDLER);
        let env = status::envelope(&req.client_ip, req.message_id, req.dry_run)?;
        let dry_run = env.dry_run;
        let message = req.message;
        let evaluated = self
            .run(move |e| {
                #[cfg(feature = "fault-injection")]
                crate::fault::sleep_if(&user, crate::fault::SLOW_IN_WORK);
                e.evaluate(&user, &message, &env)
            })
            .await?;
        // A dry run is support looking, not mail scored.
        if !dry_run {
            self.metrics.iter().for_each(|m| m.scored(&evaluated));
        }
        Ok(Response::new(status::score_response(evaluated)))
    }

    async fn score_batch(
        &self,
        req: Request<proto::ScoreBatchRequest>,
    ) -> Result<Response<proto::ScoreBatchResponse>, Status> {
        let caller = caller_of(&req);
        let requests = req.into_inner().requests;
        status::check_batch(requests.len())?;
        let mut items = Vec::with_capacity(requests.len());
        for (i, r) in requests.into_iter().enumerate() {
            let user = user_id_of(Rpc::ScoreBatch, r.user_id).map_err(|e| status::indexed(i, e))?;
            allowed(&caller, Rpc::ScoreBatch, &user)
                .map_err(|s| Status::new(s.code(), format!("item {i}: {}", s.message())))?;
            let env = status::envelope(&r.client_ip, r.message_id, r.dry_run)
                .map_err(|e| status::indexed(i, e))?;
            items.push((user, r.message, env));
        }
        let dry: Vec<bool> = items.iter().map(|(_, _, env)| env.dry_run).collect();
        let scored = self.run(move |e| e.evaluate_batch(&items)).await?;
        self.metrics.iter().for_each(|m| {
            scored
                .iter()
                .zip(&dry)
                .filter(|(_, dry)| !**dry)
                .for_each(|(e, _)| m.scored(e))
        });
        Ok(Response::new(proto::ScoreBatchResponse {
            responses: scored.into_iter().map(status::score_response).collect(),
        }))
    }

    async fn train(
        &self,
        req: Request<proto::TrainRequest>,
    ) -> Result<Response<proto::TrainResponse>, Status> {
        let caller = caller_of(&req);
        let req = req.into_inner();
        let user = named_user(&caller, Rpc::Train, req.user_id)?;
        let label = status::label_from_wire(req.label)?;
        let message_id = status::optional_message_id(req.message_id)?;
        let message = req.message;
        let log_user = user.clone();
        let t = self
            .run(move |e| e.train(&user, &message, label, message_id))
            .await?;
        self.prune_in_background();
        self.metrics
            .iter()
            .for_each(|m| m.learned(metrics::Learn::Trained(t.outcome)));
        // One line per click at DEBUG only: clicks come by the thousand
        // (the per-call log, `guard::log_call`, has method, code, time).
        debug!(
            user = log_user.as_str(),
            message_id = t.message_id.as_str(),
            %label,
            outcome = ?t.outcome,
            low_effect = t.low_effect,
            "train"
        );
        Ok(Response::new(proto::TrainResponse {
            outcome: status::outcome_to_wire(t.outcome).into(),
            message_id: t.message_id.to_string(),
            spam_learned: t.spam_learned,
            ham_learned: t.ham_learned,
            low_effect: t.low_effect,
            unsubscribe_one_click: t.unsubscribe.as_ref().is_some_and(|u| u.one_click),
            unsubscribe: t.unsubscribe.map(|u| u.target).unwrap_or_default(),
        }))
    }

    async fn forget(
        &self,
        req: Request<proto::ForgetRequest>,
    ) -> Result<Response<proto::ForgetResponse>, Status> {
        let caller = caller_of(&req);
        let req = req.into_inner();
        let user = named_user(&caller, Rpc::Forget, req.user_id)?;
        let message_id = MessageId::new(req.message_id)?;
        let (log_user, log_id) = (user.clone(), message_id.clone());
        let f = self.run(move |e| e.forget(&user, &message_id)).await?;
        self.metrics
            .iter()
            .for_each(|m| m.learned(metrics::Learn::Forgotten));
        debug!(user = log_user.as_str(), message_id = log_id.as_str(), label = %f.label, "forget");
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
        let caller = caller_of(&req);
        let user = named_user(&caller, Rpc::GetUser, req.into_inner().user_id)?;
        self.user_info(user).await
    }

    async fn update_user(
        &self,
        req: Request<proto::UpdateUserRequest>,
    ) -> Result<Response<proto::UserInfo>, Status> {
        let caller = caller_of(&req);
        let req = req.into_inner();
        let user = named_user(&caller, Rpc::UpdateUser, req.user_id)?;
        let update = SettingsUpdate {
            mode: status::mode_from_wire(req.handling_mode)?,
            spam_threshold: req.spam_threshold,
            reject_threshold: req.reject_threshold,
            share_training: req.share_training,
        };
        let u = user.clone();
        let done = self.run(move |e| e.update_settings(&u, &update)).await?;
        let s = &done.settings;
        // A line for each change; a read, or the same values sent again
        // (a retry, a looping client), only at DEBUG.
        if done.changed {
            info!(
                user = user.as_str(),
                mode = s.mode.as_str(),
                spam_threshold = s.spam_threshold,
                reject_threshold = s.reject_threshold,
                share_training = s.share_training,
                "settings updated"
            );
        } else {
            debug!(user = user.as_str(), "settings unchanged");
        }
        self.user_info(user).await
    }

    async fn add_list_entry(
        &self,
        req: Request<proto::ListEntryRequest>,
    ) -> Result<Response<proto::ListEntryResponse>, Status> {
        let caller = caller_of(&req);
        self.change_list(&caller, Rpc::AddListEntry, req.into_inner(), true)
            .await
    }

    async fn remove_list_entry(
        &self,
        req: Request<proto::ListEntryRequest>,
    ) -> Result<Response<proto::ListEntryResponse>, Status> {
        let caller = caller_of(&req);
        self.change_list(&caller, Rpc::RemoveListEntry, req.into_inner(), false)
            .await
    }

    async fn list_entries(
        &self,
        req: Request<proto::ListEntriesRequest>,
    ) -> Result<Response<proto::ListEntriesResponse>, Status> {
        let caller = caller_of(&req);
        let req = req.into_inner();
        let list = list_ref(
            &caller,
            Rpc::ListEntries,
            req.user_id,
            req.operator_wide,
            req.kind,
        )?;
        let entries = self.run(move |e| e.list_entries(&list)).await?;
        Ok(Response::new(proto::ListEntriesResponse {
            entries: entries.iter().map(ToString::to_string).collect(),
        }))
    }

    async fn find_decisions(
        &self,
        req: Request<proto::FindDecisionsRequest>,
    ) -> Result<Response<proto::FindDecisionsResponse>, Status> {
        let caller = caller_of(&req);
        let req = req.into_inner();
        let user = named_user(&caller, Rpc::FindDecisions, req.user_id)?;
        let query = DecisionQuery::new(
            req.since_unix_ms,
            req.until_unix_ms,
            req.sender,
            req.subject,
            req.limit,
        )?
        .about(&req.message_id);
        let found = self.run(move |e| e.find_decisions(&user, &query)).await?;
        Ok(Response::new(proto::FindDecisionsResponse {
            decisions: found.iter().map(status::decision_to_wire).collect(),
        }))
    }

    async fn delete_user(
        &self,
        req: Request<proto::DeleteUserRequest>,
    ) -> Result<Response<proto::DeleteUserResponse>, Status> {
        let caller = caller_of(&req);
        let user = named_user(&caller, Rpc::DeleteUser, req.into_inner().user_id)?;
        let u = user.clone();
        let existed = self.run(move |e| e.delete_user(&u)).await?;
        let by = caller.as_ref().map_or("local", |c| c.name.as_str());
        info!(target: "chaff::audit", caller = by, user = user.as_str(), existed, "user deleted");
        Ok(Response::new(proto::DeleteUserResponse { existed }))
    }

    async fn seed_shared(
        &self,
        req: Request<proto::SeedSharedRequest>,
    ) -> Result<Response<proto::SeedSharedResponse>, Status> {
        let req = req.into_inner();
        let label = status::label_from_wire(req.label)?;
        let message_id = status::optional_message_id(req.message_id)?;
        let message = req.message;
        let s = self
            .run(move |e| e.seed(&message, label, message_id))
            .await?;
        self.prune_in_background();
        Ok(Response::new(proto::SeedSharedResponse {
            outcome: status::outcome_to_wire(s.outcome).into(),
            message_id: s.message_id.to_string(),
        }))
    }

    async fn clear_seed(
        &self,
        _req: Request<proto::ClearSeedRequest>,
    ) -> Result<Response<proto::ClearSeedResponse>, Status> {
        let (spam_removed, ham_removed) = self.run(|e| e.clear_seed()).await?;
        info!(spam_removed, ham_removed, "seed cleared");
        Ok(Response::new(proto::ClearSeedResponse {
            spam_removed,
            ham_removed,
        }))
    }

    async fn get_shared(
        &self,
        _req: Request<proto::GetSharedRequest>,
    ) -> Result<Response<proto::SharedInfo>, Status> {
        let s = self.run(|e| Ok::<_, Error>(e.shared_summary())).await?;
        Ok(Response::new(proto::SharedInfo {
            contributing_users: s.users,
            spam_learned: s.spam_learned,
            ham_learned: s.ham_learned,
            tokens: s.tokens,
            seed_spam: s.seed_spam,
            seed_ham: s.seed_ham,
        }))
    }

    type ExportUserStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<proto::ExportChunk, Status>> + Send>,
    >;

    async fn export_user(
        &self,
        req: Request<proto::ExportUserRequest>,
    ) -> Result<Response<Self::ExportUserStream>, Status> {
        let caller = caller_of(&req);
        let user = named_user(&caller, Rpc::ExportUser, req.into_inner().user_id)?;
        let u = user.clone();
        let bytes = self.run(move |e| e.export_user(&u)).await?.ok_or_else(|| {
            Status::not_found(format!("user {user} has nothing stored on this server"))
        })?;
        let by = caller.as_ref().map_or("local", |c| c.name.as_str());
        info!(target: "chaff::audit", caller = by, user = user.as_str(), bytes = bytes.len(), "user exported");
        let chunks: Vec<Result<proto::ExportChunk, Status>> = bytes
            .chunks(EXPORT_CHUNK_BYTES)
            .map(|c| Ok(proto::ExportChunk { data: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn import_user(
        &self,
        req: Request<tonic::Streaming<proto::ImportUserRequest>>,
    ) -> Result<Response<proto::ImportUserResponse>, Status> {
        use tokio_stream::StreamExt;
        let caller = caller_of(&req);
        let mut stream = req.into_inner();
        let first = stream.next().await.ok_or_else(|| {
            Status::invalid_argument("ImportUser needs at least one message naming user_id")
        })??;
        let user = named_user(&caller, Rpc::ImportUser, first.user_id)?;
        let replace = first.replace;
        // Every byte held counts against --max-import-buffer until the
        // import's work ends; the stream's start is checked as soon as it
        // arrives, so one that is no export is refused before the rest of
        // it is received.
        let mut held = None;
        self.imports.take(&mut held, first.data.len())?;
        let mut bytes = first.data;
        crate::store::export::check_start(&bytes)?;
        while let Some(m) = stream.next().await {
            let m = m?;
            if bytes.len() + m.data.len() > crate::engine::MAX_IMPORT_BYTES {
                return Err(Status::resource_exhausted(format!(
                    "the export is larger than {} bytes, the most ImportUser takes",
                    crate::engine::MAX_IMPORT_BYTES
                )));
            }
            self.imports.take(&mut held, m.data.len())?;
            let checked = bytes.len() >= 12;
            bytes.extend_from_slice(&m.data);
            if !checked {
                crate::store::export::check_start(&bytes)?;
            }
        }
        let u = user.clone();
        let done = self
            .run(move |e| {
                let _held = held;
                e.import_user(&u, &bytes, replace)
            })
            .await?;
        let by = caller.as_ref().map_or("local", |c| c.name.as_str());
        info!(target: "chaff::audit", caller = by, user = user.as_str(), replaced = done.replaced, messages = done.messages, "user imported");
        Ok(Response::new(proto::ImportUserResponse {
            messages: done.messages,
            decisions: done.decisions,
            list_entries: done.list_entries,
            replaced: done.replaced,
        }))
    }

    async fn backup(
        &self,
        req: Request<proto::BackupRequest>,
    ) -> Result<Response<proto::BackupResponse>, Status> {
        let dir = std::path::PathBuf::from(req.into_inner().directory);
        if !dir.is_absolute() {
            return Err(Status::invalid_argument(format!(
                "directory {:?} is not an absolute path on the server's machine",
                dir.display()
            )));
        }
        let d = dir.clone();
        let started = std::time::Instant::now();
        // Not through `run`: a failure here is as likely the backup
        // directory's (its disk full) as the store's, and must not report
        // the server NOT_SERVING; a store failure shows at the next click.
        let engine = self.storage.engine()?;
        let done = tokio::task::spawn_blocking(move || engine.backup_to(&d))
            .await
            .map_err(catch_panic::resume_if_panicked)?
            .map_err(Status::from)?;
        if let Some(keys) = self.keys_file.as_ref().filter(|k| k.exists()) {
            std::fs::copy(keys, dir.join("keys.json")).map_err(|e| {
                Status::internal(format!(
                    "the data is backed up in {}, but the keys file {} could not be copied there ({e}): copy it by hand before serving from the backup",
                    dir.display(),
                    keys.display()
                ))
            })?;
        }
        info!(
            directory = %dir.display(),
            users = done.users,
            records = done.records,
            seconds = started.elapsed().as_secs_f64(),
            "backup written"
        );
        Ok(Response::new(proto::BackupResponse {
            users: done.users,
            records: done.records,
        }))
    }

    async fn list_users(
        &self,
        req: Request<proto::ListUsersRequest>,
    ) -> Result<Response<proto::ListUsersResponse>, Status> {
        let caller = caller_of(&req);
        let req = req.into_inner();
        let prefix = match &caller {
            Some(c) => c.list_prefix(&req.prefix).map_err(|d| {
                guard::audit_denied(c, Rpc::ListUsers, None, &d);
                Status::from(d)
            })?,
            None => req.prefix,
        };
        let (size, after) = status::users_page_request(req.page_size, req.page_token)?;
        let page = self
            .run(move |e| e.list_users(&prefix, after.as_ref(), size))
            .await?;
        Ok(Response::new(status::users_page_to_wire(page)))
    }

    async fn get_stats(
        &self,
        _req: Request<proto::GetStatsRequest>,
    ) -> Result<Response<proto::ServerStats>, Status> {
        // Atomics and brief read locks: no need for the blocking pool.
        let engine = self.storage.engine()?;
        let s = engine.stats();
        let shared = engine.shared_summary();
        drop(engine);
        Ok(Response::new(proto::ServerStats {
            model_hits: s.cache.hits,
            model_misses: s.cache.misses,
            model_absent: s.cache.absent,
            model_evictions: s.cache.evictions,
            resident_users: s.cache.resident_users,
            resident_bytes: s.cache.resident_bytes,
            model_memory_bytes: s.cache.budget_bytes,
            durable_waits: s.commit.waits,
            flushes: s.commit.flushes,
            shared_model_bytes: shared.bytes,
            delivered_queued: s.delivered.queued,
            delivered_learned: s.delivered.learned,
            delivered_dropped: s.delivered.dropped,
        }))
    }
}

/// A list owner as the log names it.
fn owner_name(owner: &Owner) -> String {
    match owner {
        Owner::User(u) => u.to_string(),
        Owner::Operator => "operator".to_string(),
    }
}

impl ChaffService {
    async fn user_info(&self, user: UserId) -> Result<Response<proto::UserInfo>, Status> {
        let name = user.to_string();
        let (s, settings) = self
            .run(move |e| Ok::<_, Error>((e.user_summary(&user)?, e.user_settings(&user)?)))
            .await?;
        Ok(Response::new(proto::UserInfo {
            user_id: name,
            spam_learned: s.spam_learned,
            ham_learned: s.ham_learned,
            tokens: s.tokens,
            tokenizer_version: s.tokenizer_version,
            settings: Some(status::settings_to_wire(&settings)),
        }))
    }

    async fn change_list(
        &self,
        caller: &CallerRef,
        rpc: Rpc,
        req: proto::ListEntryRequest,
        add: bool,
    ) -> Result<Response<proto::ListEntryResponse>, Status> {
        let list = list_ref(caller, rpc, req.user_id, req.operator_wide, req.kind)?;
        // A removal also takes the entry as stored ones read back
        // (`Entry::stored`): one an older build stored under looser rules,
        // or in an older form (an IPv4-mapped IP kept as written).
        let stored = (!add).then(|| Entry::stored(&req.entry).ok()).flatten();
        let entry = match (list_entry(&req.entry), &stored) {
            (Ok(entry), _) => entry,
            (Err(_), Some(stored)) => stored.clone(),
            (Err(refused), None) => return Err(refused),
        };
        if add {
            crate::policy::lists::check_reach(&entry, req.force).map_err(Status::from)?;
        }
        let older = stored.filter(|o| *o != entry);
        let (l, en) = (list.clone(), entry.clone());
        let changed = self
            .run(move |e| match add {
                true => e.add_list_entry(&l, &en),
                false => {
                    let mut changed = e.remove_list_entry(&l, &en)?;
                    if let Some(older) = &older {
                        changed |= e.remove_list_entry(&l, older)?;
                    }
                    Ok(changed)
                }
            })
            .await?;
        if list.owner == Owner::Operator {
            let by = caller.as_ref().map_or("local", |c| c.name.as_str());
            info!(
                target: "chaff::audit",
                caller = by,
                method = rpc.name(),
                list = list.kind.as_str(),
                %entry,
                changed,
                "operator list changed"
            );
        }
        // A line for each change; adding an entry that is there or
        // removing one that is not (a retry, a looping client) only at
        // DEBUG.
        let what = if add {
            "list entry added"
        } else {
            "list entry removed"
        };
        if changed {
            info!(owner = %owner_name(&list.owner), list = list.kind.as_str(), %entry, "{what}");
        } else {
            debug!(owner = %owner_name(&list.owner), list = list.kind.as_str(), %entry, "{what}: no change");
        }
        Ok(Response::new(proto::ListEntryResponse {
            changed,
            entry: entry.to_string(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_padded_user_id_is_refused_where_state_would_be_stored_and_taken_elsewhere() {
        for rpc in [
            Rpc::Train,
            Rpc::UpdateUser,
            Rpc::ImportUser,
            Rpc::AddListEntry,
        ] {
            let e = user_id_of(rpc, " alice".into()).unwrap_err().to_string();
            assert!(e.contains("whitespace"), "{rpc:?}: {e}");
        }
        // A user an older build stored that way can still be reached.
        for rpc in [
            Rpc::Score,
            Rpc::GetUser,
            Rpc::Forget,
            Rpc::FindDecisions,
            Rpc::DeleteUser,
            Rpc::ExportUser,
            Rpc::RemoveListEntry,
            Rpc::ListEntries,
        ] {
            assert_eq!(user_id_of(rpc, " alice".into()).unwrap().as_str(), " alice");
        }
        // Empty is refused everywhere.
        assert!(user_id_of(Rpc::GetUser, String::new()).is_err());
    }
}
