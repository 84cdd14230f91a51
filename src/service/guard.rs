//! The trust boundary as a tower layer: it sees which RPC is called (tonic
//! interceptors cannot), identifies the caller from its client certificate
//! or `authorization: Bearer` key, checks the RPC's scopes and the caller's
//! limits, writes the audit log, and hands the [`Caller`] to the handlers
//! (request extension) for the per-user tenant check. The decisions are
//! made by [`crate::auth`]; this file only adapts them to HTTP/gRPC.
//!
//! Health and reflection pass untouched: load balancers and generic tools
//! need them without credentials.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use http::{Request, Response};
use tonic::Status;
use tonic::body::Body;
use tonic::transport::server::TcpConnectInfo;
use tower::{Layer, Service};
use tracing::{debug, info, warn};

use super::tls::{PeerInfo, Tls, TlsError, TlsFiles};
use crate::auth::keys::{KeyFile, KeyRing, Unknown, parse_bearer, unix_now};
use crate::auth::limits::{CallerLimits, Limiter, OverLimit};
use crate::auth::{AuthError, Caller, CertName, Denied, Rpc};

const CHAFF_PREFIX: &str = "/chaff.v1.Chaff/";

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(transparent)]
    Keys(#[from] AuthError),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// The largest request the transport decodes for a `max_message_bytes`
/// limit: one message at the limit with room for its fields, or a
/// ScoreBatch of two, and 1 MiB more for the rest of the request.
pub(crate) fn transport_limit(max_message_bytes: usize) -> usize {
    max_message_bytes.saturating_mul(2).saturating_add(1 << 20)
}

/// Who may call: the keys on file, TLS, per-caller limits. Shared by the
/// layer, the key-file watcher and the SIGHUP handler.
#[derive(Debug)]
pub struct Trust {
    keys: Option<KeyFile>,
    ring: RwLock<Arc<KeyRing>>,
    stamp: Mutex<Option<(u64, SystemTime)>>,
    tls: Option<Arc<Tls>>,
    limiter: Arc<Limiter>,
}

impl Trust {
    /// Open mode: no keys, no TLS, no limits (what tests and the loopback
    /// quick start get).
    pub fn open() -> Arc<Self> {
        Arc::new(Trust {
            keys: None,
            ring: RwLock::new(Arc::new(KeyRing::default())),
            stamp: Mutex::new(None),
            tls: None,
            limiter: Limiter::new(CallerLimits::default()),
        })
    }

    /// Loads the keys file (if any) and the TLS files (if any).
    pub fn new(
        keys: Option<KeyFile>,
        tls: Option<TlsFiles>,
        limits: CallerLimits,
    ) -> Result<Arc<Self>, TrustError> {
        let (ring, stamp) = match &keys {
            Some(f) => (f.load()?, f.stamp()),
            None => (KeyRing::default(), None),
        };
        let tls = tls.map(Tls::load).transpose()?.map(Arc::new);
        Ok(Arc::new(Trust {
            keys,
            ring: RwLock::new(Arc::new(ring)),
            stamp: Mutex::new(stamp),
            tls,
            limiter: Limiter::new(limits),
        }))
    }

    /// The keys file checked (a backup copies it beside the data).
    pub fn keys_file(&self) -> Option<&std::path::Path> {
        self.keys.as_ref().map(KeyFile::path)
    }

    pub fn tls(&self) -> Option<Arc<Tls>> {
        self.tls.clone()
    }

    fn ring(&self) -> Arc<KeyRing> {
        self.ring.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Calls need credentials once any key exists or TLS is on.
    pub fn required(&self) -> bool {
        self.tls.is_some() || !self.ring().is_empty()
    }

    /// Some caller can be identified: a key on file or a client CA.
    pub fn callers_configured(&self) -> bool {
        !self.ring().is_empty() || self.tls.as_ref().is_some_and(|t| t.mutual())
    }

    /// Rereads the keys file if it changed since the last look (a stat, no
    /// read, when it did not). On a bad file the keys in effect stay.
    pub fn refresh_keys(&self) -> Result<bool, AuthError> {
        let Some(file) = &self.keys else {
            return Ok(false);
        };
        let now = file.stamp();
        let mut last = self.stamp.lock().unwrap_or_else(|e| e.into_inner());
        if *last == now {
            return Ok(false);
        }
        // Recorded first: a file that does not parse is reported once, not
        // every second, and read again when it changes.
        *last = now;
        if now.is_none() && !self.ring().is_empty() {
            // A keys file that disappears (moved, deleted, a volume not
            // mounted) must not reopen the server to anyone: the keys in
            // effect stay until the file is back or the server restarts.
            warn!(
                file = %file.path().display(),
                "keys file is missing; the keys in effect stay (to serve without keys, stop the server, remove the file, start it again)"
            );
            return Ok(false);
        }
        let ring = file.load()?;
        info!(keys = ring.len(), file = %file.path().display(), "keys file reloaded");
        *self.ring.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ring);
        Ok(true)
    }

    /// SIGHUP: the keys file and the TLS files.
    pub fn reload(&self) -> Result<(), TrustError> {
        *self.stamp.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.refresh_keys()?;
        if let Some(tls) = &self.tls {
            tls.reload()?;
        }
        Ok(())
    }

    /// Who is calling, from the connection and the headers.
    fn identify(&self, req: &Request<Body>, peer: &Peer) -> Result<Caller, Unknown> {
        let ring = self.ring();
        if self.tls.is_none() && ring.is_empty() {
            return Ok(Caller::local(peer.addr));
        }
        let now = unix_now();
        let mut caller = match (req.headers().get(http::header::AUTHORIZATION), &peer.names) {
            (Some(h), _) => {
                let key = parse_bearer(h.as_bytes()).map_err(Unknown::Header)?;
                ring.verify(&key, now)?
            }
            (None, Some(names)) => ring.verify_certificate(names, now)?,
            (None, None) => return Err(Unknown::Missing),
        };
        caller.peer = peer.addr;
        Ok(caller)
    }
}

/// The connection's address and client certificate names.
struct Peer {
    addr: Option<SocketAddr>,
    names: Option<Arc<[CertName]>>,
}

fn peer_of(req: &Request<Body>) -> Peer {
    if let Some(info) = req.extensions().get::<PeerInfo>() {
        return Peer {
            addr: info.remote,
            names: info.client_names.clone(),
        };
    }
    Peer {
        addr: req
            .extensions()
            .get::<TcpConnectInfo>()
            .and_then(TcpConnectInfo::remote_addr),
        names: None,
    }
}

/// Installs [`GuardService`] around tonic's router.
#[derive(Clone)]
pub struct GuardLayer {
    trust: Arc<Trust>,
    /// `--max-message-bytes`, for the oversize message.
    max_message_bytes: usize,
}

impl GuardLayer {
    pub fn new(trust: Arc<Trust>, max_message_bytes: usize) -> Self {
        GuardLayer {
            trust,
            max_message_bytes,
        }
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = GuardService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GuardService {
            inner,
            trust: self.trust.clone(),
            max_message_bytes: self.max_message_bytes,
        }
    }
}

#[derive(Clone)]
pub struct GuardService<S> {
    inner: S,
    trust: Arc<Trust>,
    max_message_bytes: usize,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

fn refuse<E: Send + 'static>(status: Status) -> BoxFuture<Response<Body>, E> {
    Box::pin(std::future::ready(Ok(status.into_http())))
}

/// Logs a refused call: who (key name, never the secret), what, why.
fn audit_refused(caller: &str, rpc: &str, peer: Option<SocketAddr>, outcome: &Status) {
    // One line per caller, peer address, method and code each 10 s
    // (`throttle.rs`): the peer too, so one client that keeps sending a
    // revoked key cannot hide another's attempts behind a count.
    let kind = (
        "audit",
        caller,
        peer.map(|p| p.ip()),
        rpc,
        outcome.code() as i32,
    );
    let Some(held_back) = super::throttle::admit(kind) else {
        return;
    };
    warn!(
        target: "chaff::audit",
        caller,
        method = rpc,
        peer = %peer_text(peer),
        code = ?outcome.code(),
        reason = outcome.message(),
        held_back,
        "call refused"
    );
}

/// A peer address for a log line: the address, or `-` when unknown (not
/// Rust's `Some(…)`, which log pipelines cannot parse).
fn peer_text(peer: Option<SocketAddr>) -> String {
    peer.map_or_else(|| "-".into(), |p| p.to_string())
}

/// Logs a refusal the handler made after reading the request (tenant and
/// operator-list checks): these know the user.
pub(crate) fn audit_denied(caller: &Caller, rpc: Rpc, user: Option<&str>, denied: &Denied) {
    let kind = (
        "audit",
        caller.name.as_str(),
        caller.peer.map(|p| p.ip()),
        rpc.name(),
        "denied",
    );
    let Some(held_back) = super::throttle::admit(kind) else {
        return;
    };
    warn!(
        target: "chaff::audit",
        caller = caller.name.as_str(),
        method = rpc.name(),
        user = user.unwrap_or(""),
        peer = %peer_text(caller.peer),
        code = ?tonic::Code::PermissionDenied,
        reason = %denied,
        held_back,
        "call refused"
    );
}

/// The gRPC status a response carries in its headers (trailers-only
/// responses: every refusal and error of a unary call).
fn header_status(r: &Response<Body>) -> Option<tonic::Code> {
    r.headers()
        .get("grpc-status")
        .map(|v| tonic::Code::from_bytes(v.as_bytes()))
}

impl<S> Service<Request<Body>> for GuardService<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Response<Body>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        // The clone is the one that was made ready; keep it (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let max = self.max_message_bytes;
        let Some(rpc) = req
            .uri()
            .path()
            .strip_prefix(CHAFF_PREFIX)
            .and_then(Rpc::from_name)
        else {
            // Health, reflection, unknown methods (tonic answers
            // UNIMPLEMENTED): no credentials needed.
            return Box::pin(inner.call(req));
        };
        let peer = peer_of(&req);
        let caller = match self.trust.identify(&req, &peer) {
            Ok(c) => c,
            Err(e) => {
                let s = Status::unauthenticated(e.to_string());
                audit_refused("unidentified", rpc.name(), peer.addr, &s);
                return refuse(s);
            }
        };
        if let Err(d) = caller.may_call(rpc) {
            let s = Status::from(d);
            audit_refused(&caller.name, rpc.name(), peer.addr, &s);
            return refuse(s);
        }
        // No limits (the default): no key string, no lock.
        let limited = self.trust.limiter.limits() != CallerLimits::default();
        let permit = match limited
            .then(|| {
                self.trust
                    .limiter
                    .admit(&caller.limit_key(), Instant::now())
            })
            .transpose()
        {
            Ok(p) => p.flatten(),
            Err(over) => {
                let s = over_limit(over);
                audit_refused(&caller.name, rpc.name(), peer.addr, &s);
                return refuse(s);
            }
        };
        let caller = Arc::new(caller);
        req.extensions_mut().insert(caller.clone());
        let started = Instant::now();
        Box::pin(async move {
            let response = inner.call(req).await?;
            drop(permit);
            let code = header_status(&response);
            // tonic's refusal over its transport limit is answered as
            // chaff's RESOURCE_EXHAUSTED below; log it as such.
            let answered = match code {
                Some(tonic::Code::OutOfRange) => tonic::Code::ResourceExhausted,
                other => other.unwrap_or(tonic::Code::Ok),
            };
            log_call(&caller, rpc, answered, started);
            if rpc.audited() {
                info!(
                    target: "chaff::audit",
                    caller = caller.name.as_str(),
                    method = rpc.name(),
                    peer = %peer_text(caller.peer),
                    code = ?code.unwrap_or(tonic::Code::Ok),
                    "admin call"
                );
            }
            // tonic refuses a request over its transport limit with
            // OUT_OF_RANGE in its own words; chaff never answers
            // OUT_OF_RANGE itself, so this is that refusal.
            if code == Some(tonic::Code::OutOfRange) {
                return Ok(Status::resource_exhausted(format!(
                    "the request is larger than this server accepts: {} bytes in all \
                     (twice --max-message-bytes, plus 1 MiB), and each message at most {max} \
                     bytes (--max-message-bytes); split a ScoreBatch whose messages add up \
                     to more",
                    transport_limit(max)
                ))
                .into_http());
            }
            Ok(response)
        })
    }
}

/// The per-call log (target `chaff::calls`): method, code, duration and
/// caller, never message content. A call that did not succeed is logged at
/// INFO, so refusals (a bad argument, a message over the limit, NOT_FOUND,
/// storage UNAVAILABLE) are seen at the default level; a successful one
/// only at DEBUG (`--log info,chaff::calls=debug`), since a busy server
/// answers thousands per second. Refusals by the guard itself (no or bad
/// credentials, missing scope, over a caller limit) are logged by the
/// audit log instead (`chaff::audit`, WARN), with the reason.
fn log_call(caller: &Caller, rpc: Rpc, code: tonic::Code, started: Instant) {
    // Whole microseconds: `as_secs_f64() * 1e3` printed float noise
    // (0.15810100000000002).
    let duration_ms = started.elapsed().as_micros() as f64 / 1e3;
    if code == tonic::Code::Ok {
        debug!(
            target: "chaff::calls",
            caller = caller.name.as_str(),
            method = rpc.name(),
            code = ?code,
            duration_ms,
            "call"
        );
    } else if let Some(held_back) =
        super::throttle::admit(("calls", caller.name.as_str(), rpc.name(), code as i32))
    {
        // One line per caller, method and code each 10 s (`throttle.rs`).
        info!(
            target: "chaff::calls",
            caller = caller.name.as_str(),
            method = rpc.name(),
            code = ?code,
            duration_ms,
            held_back,
            "call refused"
        );
    }
}

fn over_limit(over: OverLimit) -> Status {
    Status::resource_exhausted(over.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::NewKey;
    use crate::auth::{Scope, Scopes};

    #[test]
    fn a_keys_file_that_disappears_keeps_the_keys_in_effect() {
        let dir = tempfile::tempdir().unwrap();
        let file = KeyFile::in_data_dir(dir.path());
        file.create(NewKey {
            name: "mx".into(),
            scopes: Scopes::of(&[Scope::Score]),
            tenant: None,
            expires_unix: None,
            certificate_name: None,
        })
        .unwrap();
        let trust = Trust::new(Some(file.clone()), None, CallerLimits::default()).unwrap();
        assert!(trust.required());
        std::fs::remove_file(file.path()).unwrap();
        assert!(!trust.refresh_keys().unwrap(), "nothing was reloaded");
        assert!(trust.required(), "a missing file reopened the server");
        trust.reload().unwrap();
        assert!(
            trust.required(),
            "SIGHUP with the file missing reopened the server"
        );
        assert_eq!(trust.ring().len(), 1);
    }
}
