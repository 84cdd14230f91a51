//! Who may call what: API keys, scopes per RPC, tenants, per-caller limits.
//!
//! Plain library types: nothing here knows tonic or HTTP. The gRPC adapter
//! (`service::guard`) reads the credentials a call carries, asks this module
//! who the caller is and whether it may call the method, and turns the
//! answer into a status.
//!
//! The rules (docs/SECURITY.md says the same for operators):
//! - **Scopes** are granted per key: `score`, `train`, `support`, `admin`.
//!   Each RPC accepts a set of scopes ([`Rpc::scopes`]); `admin` is accepted
//!   everywhere.
//! - **Tenants**: a caller bound to tenant `t` may only name user ids that
//!   start with `t/` ([`Caller::may_touch`]), and never operator-wide state
//!   (shared model, operator lists, server stats).
//! - **Open mode**: with no key on file and no TLS, every caller is
//!   [`Caller::local`] (all scopes, no tenant): the loopback two-command
//!   start stays as it was.

pub mod cert_name;
pub mod keys;
pub mod limits;

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

pub use cert_name::CertName;

use crate::types::UserId;

/// A permission a key carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Score and ScoreBatch: the mail pipeline.
    Score,
    /// Train, Forget, GetUser, UpdateUser and the user's own lists: the
    /// webmail backend.
    Train,
    /// FindDecisions, GetUser, ListEntries: read-only support staff.
    Support,
    /// Everything, including operator-wide state and DeleteUser.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Score, Scope::Train, Scope::Support, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Score => "score",
            Scope::Train => "train",
            Scope::Support => "support",
            Scope::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| AuthError::UnknownScope(s.to_string()))
    }
}

/// A set of scopes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Scopes(u8);

impl Scopes {
    pub const ALL: Scopes = Scopes(0b1111);

    pub fn of(scopes: &[Scope]) -> Self {
        Scopes(scopes.iter().fold(0, |acc, s| acc | s.bit()))
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    pub fn intersects(self, other: Scopes) -> bool {
        self.0 & other.0 != 0
    }

    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Scope::as_str).collect();
        f.write_str(&names.join(","))
    }
}

/// A comma-separated list: `score,train`.
impl FromStr for Scopes {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parsed = s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(Scope::from_str)
            .collect::<Result<Vec<_>, _>>()?;
        if parsed.is_empty() {
            return Err(AuthError::UnknownScope(s.to_string()));
        }
        Ok(Scopes::of(&parsed))
    }
}

/// The RPCs of `chaff.v1.Chaff`, as the authorization table knows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rpc {
    Score,
    ScoreBatch,
    Train,
    Forget,
    GetUser,
    UpdateUser,
    AddListEntry,
    RemoveListEntry,
    ListEntries,
    FindDecisions,
    DeleteUser,
    SeedShared,
    ClearSeed,
    GetShared,
    GetStats,
    ListUsers,
    ExportUser,
    ImportUser,
    Backup,
}

impl Rpc {
    pub const ALL: [Rpc; 19] = [
        Rpc::Score,
        Rpc::ScoreBatch,
        Rpc::Train,
        Rpc::Forget,
        Rpc::GetUser,
        Rpc::UpdateUser,
        Rpc::AddListEntry,
        Rpc::RemoveListEntry,
        Rpc::ListEntries,
        Rpc::FindDecisions,
        Rpc::DeleteUser,
        Rpc::SeedShared,
        Rpc::ClearSeed,
        Rpc::GetShared,
        Rpc::GetStats,
        Rpc::ListUsers,
        Rpc::ExportUser,
        Rpc::ImportUser,
        Rpc::Backup,
    ];

    /// The method name as it appears in the proto and the gRPC path.
    pub fn name(self) -> &'static str {
        match self {
            Rpc::Score => "Score",
            Rpc::ScoreBatch => "ScoreBatch",
            Rpc::Train => "Train",
            Rpc::Forget => "Forget",
            Rpc::GetUser => "GetUser",
            Rpc::UpdateUser => "UpdateUser",
            Rpc::AddListEntry => "AddListEntry",
            Rpc::RemoveListEntry => "RemoveListEntry",
            Rpc::ListEntries => "ListEntries",
            Rpc::FindDecisions => "FindDecisions",
            Rpc::DeleteUser => "DeleteUser",
            Rpc::SeedShared => "SeedShared",
            Rpc::ClearSeed => "ClearSeed",
            Rpc::GetShared => "GetShared",
            Rpc::GetStats => "GetStats",
            Rpc::ListUsers => "ListUsers",
            Rpc::ExportUser => "ExportUser",
            Rpc::ImportUser => "ImportUser",
            Rpc::Backup => "Backup",
        }
    }

    pub fn from_name(name: &str) -> Option<Rpc> {
        Rpc::ALL.into_iter().find(|r| r.name() == name)
    }

    /// The scopes any one of which lets a caller make this call. `admin`
    /// is accepted for every RPC. User lists take `train` to change and
    /// `train` or `support` to read; operator-wide lists additionally need
    /// `admin` (checked by [`Caller::may_touch_operator`] once the request
    /// says which list it means).
    pub fn scopes(self) -> Scopes {
        use Scope::*;
        let s: &[Scope] = match self {
            Rpc::Score | Rpc::ScoreBatch => &[Score, Admin],
            Rpc::Train | Rpc::Forget | Rpc::UpdateUser => &[Train, Admin],
            Rpc::AddListEntry | Rpc::RemoveListEntry => &[Train, Admin],
            Rpc::GetUser | Rpc::ListEntries => &[Train, Support, Admin],
            Rpc::FindDecisions => &[Support, Admin],
            Rpc::DeleteUser
            | Rpc::SeedShared
            | Rpc::ClearSeed
            | Rpc::GetShared
            | Rpc::GetStats
            | Rpc::ListUsers
            | Rpc::ExportUser
            | Rpc::ImportUser
            | Rpc::Backup => &[Admin],
        };
        Scopes::of(s)
    }

    /// RPCs that read or change state of every tenant at once.
    pub fn operator_wide(self) -> bool {
        matches!(
            self,
            Rpc::SeedShared | Rpc::ClearSeed | Rpc::GetShared | Rpc::GetStats | Rpc::Backup
        )
    }

    /// Calls written to the audit log even when they succeed.
    pub fn audited(self) -> bool {
        self.scopes() == Scopes::of(&[Scope::Admin])
    }
}

/// A tenant name: what a key or certificate is bound to, and the prefix
/// (`<tenant>/`) of every user id the caller may name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tenant(String);

impl Tenant {
    /// Letters, digits, `.`, `-`, `_`; 1 to 64 bytes (no `/`: the tenant is
    /// the user id's first path segment).
    pub fn new(name: impl Into<String>) -> Result<Self, AuthError> {
        let name = name.into();
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if !ok {
            return Err(AuthError::BadTenant(name));
        }
        Ok(Tenant(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when `user` is `<tenant>/<something>`.
    pub fn owns(&self, user: &UserId) -> bool {
        user.as_str()
            .strip_prefix(self.0.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|rest| !rest.is_empty())
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a caller proved who it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// Open mode (no keys, no TLS): nobody is asked.
    None,
    /// An API key, by its public id.
    Key(String),
    /// A client certificate, by the keys-file name that matched.
    Certificate(CertName),
}

/// An identified caller: what the audit log names and what the checks read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The key's (or certificate entry's) name, as the operator gave it.
    pub name: String,
    pub credential: Credential,
    pub scopes: Scopes,
    pub tenant: Option<Tenant>,
    /// The connection's remote address, for the audit log.
    pub peer: Option<SocketAddr>,
}

impl Caller {
    /// The caller in open mode: all scopes, no tenant.
    pub fn local(peer: Option<SocketAddr>) -> Self {
        Caller {
            name: "local".to_string(),
            credential: Credential::None,
            scopes: Scopes::ALL,
            tenant: None,
            peer,
        }
    }

    /// What per-caller limits count this caller under: its key id or
    /// certificate name, or in open mode its IP address (so one local
    /// process cannot starve another even without keys).
    pub fn limit_key(&self) -> String {
        match &self.credential {
            Credential::Key(id) => format!("key:{id}"),
            Credential::Certificate(name) => format!("cert:{name}"),
            Credential::None => match self.peer {
                Some(p) => format!("ip:{}", p.ip()),
                None => "local".to_string(),
            },
        }
    }

    /// May this caller make `rpc` at all (scopes, and operator-wide RPCs
    /// for tenant-bound callers)?
    pub fn may_call(&self, rpc: Rpc) -> Result<(), Denied> {
        let needed = rpc.scopes();
        if !self.scopes.intersects(needed) {
            return Err(Denied::Scope { rpc, needed });
        }
        if rpc.operator_wide() {
            self.may_touch_operator()?;
        }
        Ok(())
    }

    /// May this caller read or change operator-wide state (the shared
    /// model, the operator's lists, server stats)? Only an `admin` caller
    /// bound to no tenant.
    pub fn may_touch_operator(&self) -> Result<(), Denied> {
        if !self.scopes.contains(Scope::Admin) {
            return Err(Denied::OperatorScope);
        }
        if let Some(t) = &self.tenant {
            return Err(Denied::OperatorTenant(t.clone()));
        }
        Ok(())
    }

    /// The user id prefix this caller may list users under (`ListUsers`):
    /// `prefix` itself, or for a tenant-bound caller its tenant's
    /// `"<tenant>/"` when `prefix` is empty; a prefix reaching outside the
    /// tenant is refused.
    pub fn list_prefix(&self, prefix: &str) -> Result<String, Denied> {
        match &self.tenant {
            None => Ok(prefix.to_string()),
            Some(t) if prefix.is_empty() => Ok(format!("{t}/")),
            Some(t) if prefix.starts_with(&format!("{t}/")) => Ok(prefix.to_string()),
            Some(t) => Err(Denied::TenantPrefix {
                tenant: t.clone(),
                prefix: prefix.to_string(),
            }),
        }
    }

    /// May this caller name `user`? A tenant-bound caller only names
    /// `<tenant>/...` user ids; others name any.
    pub fn may_touch(&self, user: &UserId) -> Result<(), Denied> {
        match &self.tenant {
            Some(t) if !t.owns(user) => Err(Denied::Tenant {
                tenant: t.clone(),
                user: user.clone(),
            }),
            _ => Ok(()),
        }
    }
}

/// Why an identified caller may not do what it asked (PERMISSION_DENIED).
/// Messages name what is needed, never a secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("{} needs scope {needed}; this caller's key does not have it", rpc.name(), needed = scope_list(*needed))]
    Scope { rpc: Rpc, needed: Scopes },
    #[error("operator-wide lists need scope admin; this caller's key does not have it")]
    OperatorScope,
    #[error(
        "operator-wide state needs an admin key bound to no tenant; this caller is bound to tenant {0}"
    )]
    OperatorTenant(Tenant),
    #[error(
        "user_id {user} is not in tenant {tenant}; this caller may only name users \"{tenant}/...\""
    )]
    Tenant { tenant: Tenant, user: UserId },
    #[error(
        "prefix {prefix:?} reaches outside tenant {tenant}; this caller may only list users \"{tenant}/...\""
    )]
    TenantPrefix { tenant: Tenant, prefix: String },
}

/// `score or admin`.
fn scope_list(s: Scopes) -> String {
    let names: Vec<&str> = s.iter().map(Scope::as_str).collect();
    names.join(" or ")
}

/// Errors of the auth library itself: unreadable keys files, bad flags,
/// credentials that identify nobody.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("unknown scope {0:?}; scopes are score, train, support, admin (comma-separated)")]
    UnknownScope(String),
    #[error("tenant {0:?} is not a valid name: use 1-64 letters, digits, '.', '-' or '_'")]
    BadTenant(String),
    #[error("cannot read keys file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("keys file {path} is not valid: {reason}")]
    Invalid { path: String, reason: String },
    #[error("cannot write keys file {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
}

/// Why the server refuses to start on an exposed address.
///
/// Bearer keys in plaintext over a network can be read by anyone on the
/// path; an open server on a network can be used by anyone who reaches it.
pub fn check_exposure(
    listen: SocketAddr,
    tls: bool,
    callers_configured: bool,
    insecure: bool,
) -> Result<(), String> {
    if listen.ip().is_loopback() || insecure || (tls && callers_configured) {
        return Ok(());
    }
    let missing = match (tls, callers_configured) {
        (false, false) => "TLS and API keys (or client certificates)",
        (false, true) => "TLS",
        _ => "API keys (or client certificates)",
    };
    Err(format!(
        "refusing to listen on {listen} without {missing}: anyone who can reach this address \
         could score, train, read decision logs and delete users. Configure --tls-cert and \
         --tls-key, create a key with `chaff keys create` (or give --tls-client-ca), or pass \
         --insecure if the network itself is trusted"
    ))
}

/// The WARN line for a server that [`check_exposure`] let listen on a
/// non-loopback address only because of `insecure`: what anyone who
/// reaches the port can do, and how to stop it. Why: `--insecure` (or
/// `insecure = true` in a config file) is easy to forget, and it opens
/// every RPC, admin ones included, to the network.
pub fn insecure_exposure(
    listen: SocketAddr,
    tls: bool,
    callers_configured: bool,
    insecure: bool,
) -> Option<String> {
    if listen.ip().is_loopback() || !insecure || (tls && callers_configured) {
        return None;
    }
    let what = if callers_configured {
        "without TLS: API keys and mail cross the network in clear text, and anyone who \
         reads them can replay the keys"
    } else {
        "without API keys or client certificates: anyone who can reach this address has \
         full admin (score, train, read decision logs, export and delete any user, \
         Backup to any path the server may write)"
    };
    Some(format!(
        "--insecure: serving on {listen} {what}. Configure --tls-cert and --tls-key, create \
         a key with `chaff keys create` (or give --tls-client-ca), and drop --insecure; or \
         listen on 127.0.0.1"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(s: &str) -> UserId {
        UserId::new(s).unwrap()
    }

    #[test]
    fn tenant_owns_only_its_prefix() {
        let t = Tenant::new("acme").unwrap();
        assert!(t.owns(&user("acme/alice")));
        assert!(!t.owns(&user("acme")));
        assert!(!t.owns(&user("acme/")));
        assert!(!t.owns(&user("acmex/alice")));
        assert!(!t.owns(&user("other/acme/alice")));
        assert!(Tenant::new("a/b").is_err());
        assert!(Tenant::new("").is_err());
    }

    #[test]
    fn every_rpc_accepts_admin_and_scope_errors_name_the_scope() {
        for rpc in Rpc::ALL {
            assert!(rpc.scopes().contains(Scope::Admin), "{rpc:?}");
            assert_eq!(Rpc::from_name(rpc.name()), Some(rpc));
        }
        let c = Caller {
            scopes: Scopes::of(&[Scope::Score]),
            ..Caller::local(None)
        };
        let e = c.may_call(Rpc::Train).unwrap_err();
        assert!(e.to_string().contains("train or admin"), "{e}");
        assert!(c.may_call(Rpc::Score).is_ok());
    }

    #[test]
    fn scopes_parse_from_a_comma_list() {
        let s: Scopes = "score, support".parse().unwrap();
        assert!(s.contains(Scope::Score) && s.contains(Scope::Support));
        assert!(!s.contains(Scope::Admin));
        assert_eq!(s.to_string(), "score,support");
        assert!("scor".parse::<Scopes>().is_err());
        assert!("".parse::<Scopes>().is_err());
    }

    #[test]
    fn exposed_addresses_need_tls_and_callers() {
        let lo: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:1".parse().unwrap();
        assert!(check_exposure(lo, false, false, false).is_ok());
        assert!(check_exposure(any, true, true, false).is_ok());
        assert!(check_exposure(any, false, false, true).is_ok());
        let e = check_exposure(any, false, true, false).unwrap_err();
        assert!(e.contains("--tls-cert") && e.contains("--insecure"), "{e}");
        assert!(check_exposure(any, true, false, false).is_err());
    }
}
