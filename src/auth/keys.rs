//! API keys: `chaff_<id>_<secret>`, of which only a SHA-256 of the secret is
//! kept, in a JSON file the operator manages with `chaff keys`.
//!
//! Secrets are 32 random bytes (256 bits), so a fast hash is enough: nobody
//! can guess such a secret, and a slow password hash would cost every call
//! (or need a cache) for no gain. Digests are compared in constant time.
//!
//! The file (default `<data>/keys.json`) is written atomically (a temporary
//! file in the same directory, fsync, rename) so a reader sees the old or
//! the new list, never half of one. A file rather than the sled database:
//! sled allows one process per database, so `chaff keys create` could not
//! run beside the server; the server notices the new file on its own.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{AuthError, Caller, CertName, Credential, Scopes, Tenant};

/// Hex digits of a key's public id (48 bits: unique in any real key file).
const ID_HEX: usize = 12;
/// Hex digits of a key's secret (256 bits).
const SECRET_HEX: usize = 64;
const PREFIX: &str = "chaff_";

/// The parts of a presented key. The secret is kept only as long as the
/// check needs it and is never printed (Debug hides it).
#[derive(Clone, PartialEq, Eq)]
pub struct Presented {
    pub id: String,
    secret: String,
}

impl std::fmt::Debug for Presented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Presented {{ id: {:?}, secret: <hidden> }}", self.id)
    }
}

/// Why an `authorization` header is not a chaff key. No variant carries the
/// header's text: a secret must not reach a log by way of an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadHeader {
    #[error("the authorization header is not \"Bearer <key>\"")]
    NotBearer,
    #[error("the bearer token is not a chaff key (chaff_<id>_<secret>)")]
    NotChaffKey,
}

/// Parses `Bearer chaff_<12 hex>_<64 hex>` (the scheme is case-insensitive,
/// as RFC 7235 says; one or more spaces after it).
pub fn parse_bearer(header: &[u8]) -> Result<Presented, BadHeader> {
    let header = std::str::from_utf8(header).map_err(|_| BadHeader::NotBearer)?;
    let (scheme, token) = header.split_once(' ').ok_or(BadHeader::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(BadHeader::NotBearer);
    }
    parse_key(token.trim_start_matches(' ').trim_end())
}

/// Parses `chaff_<12 hex>_<64 hex>`.
pub fn parse_key(token: &str) -> Result<Presented, BadHeader> {
    let rest = token.strip_prefix(PREFIX).ok_or(BadHeader::NotChaffKey)?;
    let (id, secret) = rest.split_once('_').ok_or(BadHeader::NotChaffKey)?;
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex(id, ID_HEX) || !hex(secret, SECRET_HEX) {
        return Err(BadHeader::NotChaffKey);
    }
    Ok(Presented {
        id: id.to_ascii_lowercase(),
        secret: secret.to_ascii_lowercase(),
    })
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn random_hex(bytes: usize) -> Result<String, AuthError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf)
        .map_err(|e| AuthError::Usage(format!("no randomness from the OS: {e}")))?;
    Ok(to_hex(&buf))
}

/// Seconds since 1970.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One entry of the keys file: an API key (with `sha256`) or a client
/// certificate name (with `certificate_name`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEntry {
    /// Public id (the `<id>` of `chaff_<id>_<secret>`).
    pub id: String,
    /// The operator's name for the caller; what the audit log prints.
    pub name: String,
    /// Hex SHA-256 of the secret; absent for certificate entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// A subject alternative name that identifies a client certificate
    /// signed by --tls-client-ca: a DNS name, an e-mail address or a URI,
    /// its type read from its form ([`CertName::parse`]). It matches only a
    /// name of that type in the certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_name: Option<String>,
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub created_unix: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_unix: Option<u64>,
    #[serde(default)]
    pub revoked: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct KeyFileBody {
    keys: Vec<KeyEntry>,
}

/// A validated entry, ready for per-call checks.
#[derive(Clone, Debug)]
struct Verified {
    entry: KeyEntry,
    digest: Option<[u8; 32]>,
    /// The typed `certificate_name`.
    cert: Option<CertName>,
    scopes: Scopes,
    tenant: Option<Tenant>,
}

/// Why presented credentials identify nobody (UNAUTHENTICATED). The
/// messages name the key id at most, never a secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unknown {
    #[error(
        "no credentials: send \"authorization: Bearer chaff_<id>_<secret>\" or a client certificate"
    )]
    Missing,
    #[error("{0}")]
    Header(BadHeader),
    #[error("key {0} is not known or its secret does not match")]
    NoMatch(String),
    #[error("key {0} was revoked")]
    Revoked(String),
    #[error("key {0} expired")]
    Expired(String),
    #[error("client certificate ({0}) is trusted but names no caller in the keys file")]
    UnknownCertificate(String),
}

/// The keys in effect: what the server checks each call against.
#[derive(Clone, Debug, Default)]
pub struct KeyRing {
    entries: Vec<Verified>,
}

impl KeyRing {
    /// No entries at all (revoked ones count as entries: revoking every
    /// key must not silently reopen the server).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    fn from_entries(path: &Path, entries: Vec<KeyEntry>) -> Result<Self, AuthError> {
        let invalid = |reason: String| AuthError::Invalid {
            path: path.display().to_string(),
            reason,
        };
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let scopes = entry
                .scopes
                .join(",")
                .parse::<Scopes>()
                .map_err(|e| invalid(format!("key {}: {e}", entry.id)))?;
            let tenant = entry
                .tenant
                .clone()
                .map(Tenant::new)
                .transpose()
                .map_err(|e| invalid(format!("key {}: {e}", entry.id)))?;
            let digest = match (&entry.sha256, &entry.certificate_name) {
                (Some(h), None) => {
                    let bytes = from_hex(h).filter(|b| b.len() == 32).ok_or_else(|| {
                        invalid(format!("key {}: sha256 is not 64 hex digits", entry.id))
                    })?;
                    let mut d = [0u8; 32];
                    d.copy_from_slice(&bytes);
                    Some(d)
                }
                (None, Some(_)) => None,
                _ => {
                    return Err(invalid(format!(
                        "key {}: give exactly one of sha256 and certificate_name",
                        entry.id
                    )));
                }
            };
            let cert = entry
                .certificate_name
                .as_deref()
                .map(CertName::parse)
                .transpose()
                .map_err(|e| invalid(format!("key {}: {e}", entry.id)))?;
            out.push(Verified {
                entry,
                digest,
                cert,
                scopes,
                tenant,
            });
        }
        Ok(KeyRing { entries: out })
    }

    fn caller(v: &Verified, credential: Credential, now: u64) -> Result<Caller, Unknown> {
        if v.entry.revoked {
            return Err(Unknown::Revoked(v.entry.id.clone()));
        }
        if v.entry.expires_unix.is_some_and(|t| t <= now) {
            return Err(Unknown::Expired(v.entry.id.clone()));
        }
        Ok(Caller {
            name: v.entry.name.clone(),
            credential,
            scopes: v.scopes,
            tenant: v.tenant.clone(),
            peer: None,
        })
    }

    /// The caller a presented key identifies at time `now` (unix seconds).
    /// One SHA-256 of the secret and a constant-time comparison; an unknown
    /// id and a wrong secret give the same answer.
    pub fn verify(&self, key: &Presented, now: u64) -> Result<Caller, Unknown> {
        let d = digest(&key.secret);
        let found = self.entries.iter().find(|v| v.entry.id == key.id);
        let matched = found
            .and_then(|v| v.digest.as_ref().map(|stored| (v, stored)))
            .filter(|(_, stored)| bool::from(stored.ct_eq(&d)));
        match matched {
            Some((v, _)) => Self::caller(v, Credential::Key(v.entry.id.clone()), now),
            None => Err(Unknown::NoMatch(key.id.clone())),
        }
    }

    /// The caller a trusted client certificate identifies: the first entry
    /// whose `certificate_name` matches one of the certificate's names of
    /// the same type ([`CertName::matches`]).
    pub fn verify_certificate(&self, names: &[CertName], now: u64) -> Result<Caller, Unknown> {
        for v in &self.entries {
            if let Some(n) = &v.cert
                && names.iter().any(|name| n.matches(name))
            {
                return Self::caller(v, Credential::Certificate(n.clone()), now);
            }
        }
        if names.is_empty() {
            // A certificate with a common name only: chaff matches its
            // subject alternative names, which it has none of.
            return Err(Unknown::UnknownCertificate(
                "none: it has no subject alternative name, and the common name is not read".into(),
            ));
        }
        let listed: Vec<String> = names.iter().map(CertName::to_string).collect();
        Err(Unknown::UnknownCertificate(listed.join(", ")))
    }
}

/// The keys file on disk.
#[derive(Clone, Debug)]
pub struct KeyFile {
    path: PathBuf,
}

/// A key as `chaff keys create` returns it: the entry and, once, the full
/// secret key to hand to the caller.
pub struct Created {
    pub entry: KeyEntry,
    /// `chaff_<id>_<secret>` (empty for certificate entries).
    pub key: String,
}

/// What `chaff keys create` is asked for.
pub struct NewKey {
    pub name: String,
    pub scopes: Scopes,
    pub tenant: Option<Tenant>,
    pub expires_unix: Option<u64>,
    /// Identify a client certificate by this name instead of issuing a
    /// secret.
    pub certificate_name: Option<String>,
}

impl KeyFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        KeyFile { path: path.into() }
    }

    /// `<data>/keys.json`.
    pub fn in_data_dir(data: &Path) -> Self {
        Self::new(data.join("keys.json"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The entries on file; none when the file does not exist.
    pub fn entries(&self) -> Result<Vec<KeyEntry>, AuthError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(AuthError::Read {
                    path: self.path.display().to_string(),
                    source,
                });
            }
        };
        let body: KeyFileBody = serde_json::from_str(&text).map_err(|e| AuthError::Invalid {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(body.keys)
    }

    /// The entries, validated for checking calls.
    pub fn load(&self) -> Result<KeyRing, AuthError> {
        KeyRing::from_entries(&self.path, self.entries()?)
    }

    /// A fingerprint of the file's state (length and modification time), to
    /// notice changes without reading it.
    pub fn stamp(&self) -> Option<(u64, SystemTime)> {
        let m = fs::metadata(&self.path).ok()?;
        Some((m.len(), m.modified().ok()?))
    }

    /// The file's folder, created if missing (the temporary file and the
    /// lock go beside the file).
    fn folder(&self) -> Result<PathBuf, AuthError> {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&dir).map_err(|source| AuthError::Write {
            path: self.path.display().to_string(),
            source,
        })?;
        Ok(dir)
    }

    fn save(&self, keys: Vec<KeyEntry>) -> Result<(), AuthError> {
        let write_err = |source| AuthError::Write {
            path: self.path.display().to_string(),
            source,
        };
        let dir = self.folder()?;
        let text = serde_json::to_string_pretty(&KeyFileBody { keys })
            .map_err(|e| write_err(std::io::Error::other(e)))?;
        let mut tmp = tempfile::NamedTempFile::new_in(&dir).map_err(write_err)?;
        tmp.write_all(text.as_bytes()).map_err(write_err)?;
        tmp.write_all(b"\n").map_err(write_err)?;
        tmp.as_file().sync_all().map_err(write_err)?;
        tmp.persist(&self.path).map_err(|e| write_err(e.error))?;
        Ok(())
    }

    /// Runs `change` on the entries and saves them, holding an exclusive
    /// lock (`<file>.lock` beside it) from the read to the rename: two
    /// `chaff keys` commands at once would otherwise each save what they
    /// read, the last one winning, so a key handed out or a revocation
    /// reported done could be lost. The server only reads the file (the
    /// rename is atomic), so it never waits on the lock.
    fn edit<T>(
        &self,
        change: impl FnOnce(&mut Vec<KeyEntry>) -> Result<T, AuthError>,
    ) -> Result<T, AuthError> {
        self.folder()?;
        let mut lock_path = self.path.clone().into_os_string();
        lock_path.push(".lock");
        let lock_path = PathBuf::from(lock_path);
        let lock_err = |source| AuthError::Write {
            path: lock_path.display().to_string(),
            source,
        };
        // Created if missing; an existing one we may not write (made once
        // by another user) still locks when opened to read.
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .or_else(|e| match e.kind() {
                std::io::ErrorKind::PermissionDenied => fs::File::open(&lock_path),
                _ => Err(e),
            })
            .map_err(lock_err)?;
        lock.lock().map_err(lock_err)?;
        let mut keys = self.entries()?;
        let out = change(&mut keys)?;
        self.save(keys)?;
        Ok(out)
    }

    /// Adds a key (or certificate entry) and returns it with its secret.
    pub fn create(&self, new: NewKey) -> Result<Created, AuthError> {
        if new.name.trim().is_empty() {
            return Err(AuthError::Usage("a key needs a --name".into()));
        }
        if new.scopes.is_empty() {
            return Err(AuthError::Usage("a key needs at least one scope".into()));
        }
        if let Some(name) = &new.certificate_name {
            CertName::parse(name)
                .map_err(|e| AuthError::Usage(format!("--certificate-name: {e}")))?;
        }
        self.edit(|keys| Self::add(keys, new))
    }

    fn add(keys: &mut Vec<KeyEntry>, new: NewKey) -> Result<Created, AuthError> {
        let id = random_hex(ID_HEX / 2)?;
        let (sha256, key) = match &new.certificate_name {
            Some(_) => (None, String::new()),
            None => {
                let secret = random_hex(SECRET_HEX / 2)?;
                (
                    Some(to_hex(&digest(&secret))),
                    format!("{PREFIX}{id}_{secret}"),
                )
            }
        };
        let entry = KeyEntry {
            id,
            name: new.name,
            sha256,
            certificate_name: new.certificate_name,
            scopes: new.scopes.iter().map(|s| s.as_str().to_string()).collect(),
            tenant: new.tenant.map(|t| t.as_str().to_string()),
            created_unix: unix_now(),
            expires_unix: new.expires_unix,
            revoked: false,
        };
        keys.push(entry.clone());
        Ok(Created { entry, key })
    }

    /// Marks the entry with this id (or, failing that, the one name) as
    /// revoked. The entry stays on file so the audit trail can name it.
    pub fn revoke(&self, id_or_name: &str) -> Result<KeyEntry, AuthError> {
        self.edit(|keys| self.mark_revoked(keys, id_or_name))
    }

    fn mark_revoked(&self, keys: &mut [KeyEntry], id_or_name: &str) -> Result<KeyEntry, AuthError> {
        let by_id: Vec<usize> = (0..keys.len())
            .filter(|&i| keys[i].id == id_or_name)
            .collect();
        let matches = if by_id.is_empty() {
            (0..keys.len())
                .filter(|&i| keys[i].name == id_or_name)
                .collect()
        } else {
            by_id
        };
        let i = match matches.as_slice() {
            [i] => *i,
            [] => {
                return Err(AuthError::Usage(format!(
                    "no key with id or name {id_or_name:?} in {}",
                    self.path.display()
                )));
            }
            _ => {
                return Err(AuthError::Usage(format!(
                    "several keys are named {id_or_name:?}; revoke by id (see `chaff keys list`)"
                )));
            }
        };
        keys[i].revoked = true;
        Ok(keys[i].clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Scope;
    use proptest::prelude::*;

    fn new_key(name: &str, expires: Option<u64>) -> NewKey {
        NewKey {
            name: name.into(),
            scopes: Scopes::of(&[Scope::Score]),
            tenant: None,
            expires_unix: expires,
            certificate_name: None,
        }
    }

    #[test]
    fn keys_commands_at_once_lose_no_key_and_no_revocation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        KeyFile::new(&path).create(new_key("victim", None)).unwrap();
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    // Each its own KeyFile, as separate `chaff keys` runs.
                    let file = KeyFile::new(&path);
                    if i == 7 {
                        file.revoke("victim").unwrap();
                    } else {
                        file.create(new_key(&format!("k{i}"), None)).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let keys = KeyFile::new(&path).entries().unwrap();
        assert_eq!(keys.len(), 16, "a created key was lost");
        assert!(
            keys.iter().any(|k| k.name == "victim" && k.revoked),
            "the revocation was undone"
        );
    }

    #[test]
    fn created_key_verifies_and_only_its_digest_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let file = KeyFile::in_data_dir(dir.path());
        let c = file.create(new_key("mx", None)).unwrap();
        let text = fs::read_to_string(file.path()).unwrap();
        let secret = c.key.rsplit('_').next().unwrap();
        assert!(!text.contains(secret), "the secret must not be on disk");
        let ring = file.load().unwrap();
        let p = parse_bearer(format!("Bearer {}", c.key).as_bytes()).unwrap();
        let caller = ring.verify(&p, unix_now()).unwrap();
        assert_eq!(caller.name, "mx");
        assert!(caller.scopes.contains(Scope::Score));
    }

    #[test]
    fn wrong_secret_expired_and_revoked_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = KeyFile::in_data_dir(dir.path());
        let good = file.create(new_key("a", None)).unwrap();
        let old = file.create(new_key("b", Some(100))).unwrap();
        let ring = file.load().unwrap();
        let mut wrong = parse_key(&good.key).unwrap();
        wrong.secret = "0".repeat(SECRET_HEX);
        assert!(matches!(
            ring.verify(&wrong, unix_now()),
            Err(Unknown::NoMatch(_))
        ));
        let p = parse_key(&old.key).unwrap();
        assert!(matches!(ring.verify(&p, 200), Err(Unknown::Expired(_))));
        assert!(ring.verify(&p, 50).is_ok());
        file.revoke(&good.entry.id).unwrap();
        let ring = file.load().unwrap();
        let p = parse_key(&good.key).unwrap();
        assert!(matches!(
            ring.verify(&p, unix_now()),
            Err(Unknown::Revoked(_))
        ));
        assert_eq!(ring.len(), 2);
    }

    #[test]
    fn header_parser_accepts_the_documented_forms_only() {
        let key = format!("chaff_{}_{}", "a".repeat(12), "b".repeat(64));
        assert!(parse_bearer(format!("Bearer {key}").as_bytes()).is_ok());
        assert!(parse_bearer(format!("bearer  {key}").as_bytes()).is_ok());
        assert_eq!(
            parse_bearer(format!("Basic {key}").as_bytes()),
            Err(BadHeader::NotBearer)
        );
        assert_eq!(parse_bearer(key.as_bytes()), Err(BadHeader::NotBearer));
        assert_eq!(
            parse_bearer(b"Bearer chaff_abc_def"),
            Err(BadHeader::NotChaffKey)
        );
        assert_eq!(
            parse_bearer(format!("Bearer {key}x").as_bytes()),
            Err(BadHeader::NotChaffKey)
        );
    }

    proptest! {
        /// Any bytes: no panic, and an error never carries the input.
        #[test]
        fn header_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_bearer(&bytes);
        }

        #[test]
        fn header_parser_round_trips_well_formed_keys(
            id in "[0-9a-fA-F]{12}", secret in "[0-9a-fA-F]{64}", spaces in 1usize..4,
        ) {
            let header = format!("Bearer{}chaff_{id}_{secret}", " ".repeat(spaces));
            let p = parse_bearer(header.as_bytes()).unwrap();
            prop_assert_eq!(p.id, id.to_ascii_lowercase());
        }

        #[test]
        fn header_parser_refuses_mangled_keys(
            id in "[0-9a-f]{12}", secret in "[0-9a-f]{64}", cut in 0usize..95, junk in "[g-z]",
        ) {
            let key = format!("chaff_{id}_{secret}");
            let cut = cut.min(key.len() - 1);
            let mut mangled = key.clone();
            mangled.replace_range(cut..=cut, &junk);
            // Replacing one byte of the id or secret with a non-hex char
            // (or the separators with something else) breaks the key.
            if mangled != key {
                prop_assert!(parse_key(&mangled).is_err());
            }
        }
    }
}
