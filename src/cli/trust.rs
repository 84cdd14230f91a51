//! The trust flags: TLS and caller limits for `chaff serve`, `chaff keys`
//! for the operator, and how client commands present credentials
//! (`--token`, `--tls-ca`, `https://` servers).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use chaff::auth::keys::{KeyFile, NewKey, unix_now};
use chaff::auth::limits::CallerLimits;
use chaff::auth::{Scopes, Tenant, check_exposure};
use chaff::service::guard::Trust;
use chaff::service::tls::TlsFiles;

/// `chaff serve`'s security flags.
#[derive(Args, Debug)]
pub struct ServeTrustArgs {
    /// PEM certificate chain for TLS on the gRPC port (leaf first). With
    /// TLS on, every call needs a key or a client certificate. SIGHUP
    /// rereads the certificate and key files without dropping calls.
    #[arg(
        long,
        env = "CHAFF_TLS_CERT",
        requires = "tls_key",
        help_heading = "Security"
    )]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(
        long,
        env = "CHAFF_TLS_KEY",
        requires = "tls_cert",
        help_heading = "Security"
    )]
    tls_key: Option<PathBuf>,
    /// PEM CA certificates that sign client certificates (mutual TLS). A
    /// client certificate identifies the caller whose `chaff keys create
    /// --certificate-name` matches one of its subject alternative names;
    /// callers without a certificate may still use API keys.
    #[arg(
        long,
        env = "CHAFF_TLS_CLIENT_CA",
        requires = "tls_cert",
        help_heading = "Security"
    )]
    tls_client_ca: Option<PathBuf>,
    /// The API keys file (default: keys.json in --data). Once it holds any
    /// key, calls without credentials are refused (health and reflection
    /// stay open). Changes are picked up within a second, and on SIGHUP.
    #[arg(long, env = "CHAFF_KEYS_FILE", help_heading = "Security")]
    keys_file: Option<PathBuf>,
    /// Allow listening on a non-loopback address without TLS and keys
    /// (only on a network you trust completely).
    #[arg(long, env = "CHAFF_INSECURE", help_heading = "Security")]
    insecure: bool,
    /// Calls one caller (a key, a client certificate, or in open mode a
    /// client IP) may have in flight; more get RESOURCE_EXHAUSTED. 0 = no
    /// limit.
    #[arg(
        long,
        env = "CHAFF_CALLER_MAX_IN_FLIGHT",
        default_value_t = 0,
        help_heading = "Security"
    )]
    caller_max_in_flight: u32,
    /// Calls one caller may start per second (bursts of one second's
    /// worth); more get RESOURCE_EXHAUSTED. 0 = no limit.
    #[arg(
        long,
        env = "CHAFF_CALLER_MAX_PER_SECOND",
        default_value_t = 0.0,
        help_heading = "Security"
    )]
    caller_max_per_second: f64,
}

impl ServeTrustArgs {
    /// Loads keys and TLS and refuses an exposed address without them.
    pub fn trust(&self, data: &Path, listen: SocketAddr) -> anyhow::Result<Arc<Trust>> {
        chaff::service::tls::install_crypto_provider();
        let keys = keys_file(self.keys_file.as_deref(), data);
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            }),
            _ => None,
        };
        let limits = CallerLimits {
            in_flight: (self.caller_max_in_flight > 0).then_some(self.caller_max_in_flight),
            per_second: (self.caller_max_per_second > 0.0).then_some(self.caller_max_per_second),
        };
        let trust = Trust::new(Some(keys), tls, limits)?;
        check_exposure(
            listen,
            trust.tls().is_some(),
            trust.callers_configured(),
            self.insecure,
        )
        .map_err(anyhow::Error::msg)?;
        if let Some(warning) = chaff::auth::insecure_exposure(
            listen,
            trust.tls().is_some(),
            trust.callers_configured(),
            self.insecure,
        ) {
            tracing::warn!("{warning}");
        }
        if trust.tls().is_some() && !trust.callers_configured() {
            tracing::warn!(
                "TLS is on but no key is on file and no --tls-client-ca is set: every call \
                 except health and reflection will be refused until `chaff keys create`"
            );
        }
        Ok(trust)
    }
}

fn keys_file(explicit: Option<&Path>, data: &Path) -> KeyFile {
    match explicit {
        Some(p) => KeyFile::new(p),
        None => KeyFile::in_data_dir(data),
    }
}

/// Reloads keys and TLS files on SIGHUP, for as long as the server runs.
pub async fn reload_on_sighup(trust: Arc<Trust>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            // Keys first, then TLS: say which one stays as it was.
            match trust.reload() {
                Ok(()) => tracing::info!("SIGHUP: keys and TLS files reloaded"),
                Err(e @ chaff::service::guard::TrustError::Keys(_)) => tracing::warn!(
                    error = %e,
                    "SIGHUP: the keys file did not load; the keys and TLS files in effect stay"
                ),
                Err(e @ chaff::service::guard::TrustError::Tls(_)) => tracing::warn!(
                    error = %e,
                    "SIGHUP: the keys file was reloaded, the TLS files did not load; the certificate in effect stays"
                ),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = trust;
}

/// Where `chaff keys` finds the keys file.
#[derive(Args, Debug)]
pub struct KeysFileArg {
    /// The server's data directory; the keys file is keys.json in it.
    #[arg(long, env = "CHAFF_DATA", default_value = "./chaff-data")]
    data: PathBuf,
    /// The keys file, when not in --data.
    #[arg(long, env = "CHAFF_KEYS_FILE")]
    keys_file: Option<PathBuf>,
}

impl KeysFileArg {
    fn file(&self) -> KeyFile {
        keys_file(self.keys_file.as_deref(), &self.data)
    }
}

/// `chaff keys`: API keys (and client certificate names) for the server.
/// A running server picks changes up within a second.
#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Issue a key; its secret is printed once and only its hash is kept.
    Create(CreateArgs),
    /// Show the keys on file (ids, names, scopes; never secrets).
    List(KeysFileArg),
    /// Revoke a key by id (or by name when the name is unique).
    Revoke(RevokeArgs),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    file: KeysFileArg,
    /// Who holds the key (printed in the audit log), e.g. `mx-pipeline`.
    #[arg(long)]
    name: String,
    /// Comma-separated: score (Score, ScoreBatch), train (Train, Forget,
    /// GetUser, UpdateUser, the user's lists), support (FindDecisions,
    /// GetUser, ListEntries; read-only), admin (everything).
    #[arg(long)]
    scopes: Scopes,
    /// Bind the key to a tenant: it may only name user ids "<tenant>/...".
    #[arg(long, value_parser = |s: &str| Tenant::new(s))]
    tenant: Option<Tenant>,
    /// Expire the key after this long (e.g. `90d`, `12h`).
    #[arg(long, value_parser = humantime::parse_duration)]
    expires_in: Option<Duration>,
    /// Identify a client certificate (signed by --tls-client-ca) by this
    /// subject alternative name instead of issuing a secret. Its type is
    /// read from its form and must match the certificate's: `mx1.example`
    /// is a DNS name, `ops@example.com` an e-mail address,
    /// `spiffe://example/mx1` a URI.
    #[arg(long)]
    certificate_name: Option<String>,
}

#[derive(Args, Debug)]
pub struct RevokeArgs {
    #[command(flatten)]
    file: KeysFileArg,
    /// The key's id (`chaff keys list`) or its unique name.
    key: String,
}

pub fn keys(cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Create(a) => {
            let file = a.file.file();
            let created = file.create(NewKey {
                name: a.name,
                scopes: a.scopes,
                tenant: a.tenant,
                expires_unix: a.expires_in.map(|d| unix_now() + d.as_secs()),
                certificate_name: a.certificate_name,
            })?;
            let e = &created.entry;
            eprintln!(
                "created {} ({}) with scopes {}{} in {}",
                e.id,
                e.name,
                e.scopes.join(","),
                e.tenant
                    .as_ref()
                    .map(|t| format!(", tenant {t}"))
                    .unwrap_or_default(),
                file.path().display()
            );
            if created.key.is_empty() {
                eprintln!(
                    "client certificates naming {} now identify this caller",
                    e.certificate_name.as_deref().unwrap_or_default()
                );
            } else {
                eprintln!("the key (shown once; pass it as --token or CHAFF_TOKEN):");
                println!("{}", created.key);
            }
            Ok(())
        }
        KeysCommand::List(f) => {
            let file = f.file();
            let now = unix_now();
            println!(
                "{:<12}  {:<20}  {:<22}  {:<10}  state",
                "id", "name", "scopes", "tenant"
            );
            for e in file.entries()? {
                let state = if e.revoked {
                    "revoked".to_string()
                } else if e.expires_unix.is_some_and(|t| t <= now) {
                    "expired".to_string()
                } else if let Some(t) = e.expires_unix {
                    format!(
                        "expires in {}",
                        humantime::format_duration(Duration::from_secs(t - now))
                    )
                } else {
                    "active".to_string()
                };
                let what = e
                    .certificate_name
                    .as_ref()
                    .map(|n| format!(" (certificate {n})"))
                    .unwrap_or_default();
                println!(
                    "{:<12}  {:<20}  {:<22}  {:<10}  {state}{what}",
                    e.id,
                    e.name,
                    e.scopes.join(","),
                    e.tenant.as_deref().unwrap_or("-")
                );
            }
            Ok(())
        }
        KeysCommand::Revoke(a) => {
            let e = a.file.file().revoke(&a.key)?;
            println!("revoked {} ({})", e.id, e.name);
            Ok(())
        }
    }
}

/// The `--help` section of the connection flags: clap shows global flags
/// in every command's help, so the heading says whom they are for.
const CLIENT_HEADING: &str = "Connecting to a chaff server (client commands only)";

/// The commands that never connect to a chaff server: given on their
/// command line, a connection flag is refused rather than ignored.
pub(crate) const NOT_CLIENTS: &[&str] = &[
    "serve", "metrics", "tokens", "repair", "compact", "upgrade", "keys",
];

/// How client commands reach the server: global flags, so every command
/// takes them (`chaff score --token ...`).
#[derive(Args, Debug, Clone, Default)]
pub struct ConnectArgs {
    /// API key sent as `authorization: Bearer <key>` (from `chaff keys
    /// create`).
    #[arg(long, env = "CHAFF_TOKEN", global = true, hide_env_values = true, help_heading = CLIENT_HEADING)]
    token: Option<String>,
    /// PEM CA certificate that signed the server's certificate; implies
    /// TLS. Without it, `https://` servers are checked against the system's
    /// roots.
    #[arg(long, env = "CHAFF_TLS_CA", global = true, help_heading = CLIENT_HEADING)]
    tls_ca: Option<PathBuf>,
    /// PEM client certificate to present (mutual TLS, a server with
    /// --tls-client-ca); implies TLS. Named apart from `serve --tls-cert`,
    /// which is the server's own certificate.
    #[arg(
        long,
        env = "CHAFF_CLIENT_CERT",
        global = true,
        requires = "client_key",
        help_heading = CLIENT_HEADING
    )]
    client_cert: Option<PathBuf>,
    /// PEM private key for --client-cert.
    #[arg(
        long,
        env = "CHAFF_CLIENT_KEY",
        global = true,
        requires = "client_cert",
        hide_env_values = true,
        help_heading = CLIENT_HEADING
    )]
    client_key: Option<PathBuf>,
}

static CONNECT: OnceLock<ConnectArgs> = OnceLock::new();

/// Records the connection flags for [`endpoint`] and [`Auth`].
pub fn set_connect_args(args: ConnectArgs) {
    let _ = CONNECT.set(args);
}

fn connect_args() -> &'static ConnectArgs {
    CONNECT.get_or_init(ConnectArgs::default)
}

/// How long a client waits for the connection to a server: TCP and, for
/// a TLS server, its handshake ([`channel`]).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a client with a call in flight pings the server over HTTP/2,
/// and how long it waits for the answer before it gives the connection up
/// (the call then fails, UNAVAILABLE): a silent server is found within
/// about 30 seconds. Generous, so a slow link carrying a large message is
/// not mistaken for a dead server; no pings while idle.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// A channel to `server` ([`endpoint`]), connected now. The connector is
/// given explicitly so that tonic bounds TCP and the TLS handshake together
/// by [`CONNECT_TIMEOUT`] (`Endpoint::connect` bounds TCP alone: a server
/// that accepts and never answers the handshake would hang a TLS client),
/// for the first connection and every reconnection.
pub async fn channel(server: &str) -> anyhow::Result<tonic::transport::Channel> {
    // The connect timeout is the endpoint's, applied to TCP and TLS alike.
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    endpoint(server)?
        .connect_with_connector(http)
        .await
        .with_context(|| format!("cannot reach chaff at {server}; is `chaff serve` running there?"))
}

/// The endpoint for `server`, with TLS for `https://` or --tls-ca.
fn endpoint(server: &str) -> anyhow::Result<Endpoint> {
    let args = connect_args();
    let https = server.starts_with("https://");
    let tls_wanted = args.tls_ca.is_some() || args.client_cert.is_some();
    let server = match server.strip_prefix("http://") {
        Some(rest) if tls_wanted => format!("https://{rest}"),
        _ => server.to_string(),
    };
    // A server that takes the connection but never answers (stopped,
    // wedged, or not chaff at all) must not hang a client for good: the
    // connection attempt is bounded ([`channel`]), and HTTP/2 pings find a
    // silent peer while a call waits. No whole-call deadline: a large
    // ScoreBatch, an export or a backup may rightly take minutes while the
    // server answers the pings.
    let mut ep = Endpoint::from_shared(server.clone())
        .with_context(|| format!("{server}: not a valid server address"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT);
    if https || tls_wanted {
        chaff::service::tls::install_crypto_provider();
        let mut tls = match &args.tls_ca {
            Some(ca) => {
                let pem = std::fs::read(ca)
                    .with_context(|| format!("cannot read --tls-ca {}", ca.display()))?;
                ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem))
            }
            None => ClientTlsConfig::new().with_native_roots(),
        };
        if let (Some(cert), Some(key)) = (&args.client_cert, &args.client_key) {
            let cert = std::fs::read(cert)
                .with_context(|| format!("cannot read --client-cert {}", cert.display()))?;
            let key = std::fs::read(key)
                .with_context(|| format!("cannot read --client-key {}", key.display()))?;
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        ep = ep.tls_config(tls).context("TLS configuration refused")?;
    }
    Ok(ep)
}

/// Adds the --token to every call.
#[derive(Clone)]
pub struct Auth(Option<MetadataValue<Ascii>>);

impl Auth {
    pub fn from_flags() -> anyhow::Result<Self> {
        match &connect_args().token {
            None => Ok(Auth(None)),
            Some(t) => {
                let v = format!("Bearer {}", t.trim())
                    .parse()
                    .map_err(|_| anyhow::anyhow!("--token has characters a header cannot carry"))?;
                if !t.trim().starts_with("chaff_") {
                    bail!(
                        "--token is not a chaff key (chaff_<id>_<secret>, from `chaff keys create`)"
                    );
                }
                Ok(Auth(Some(v)))
            }
        }
    }
}

impl Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}
