//! The trust boundary over real loopback connections: real keys files,
//! real TLS (certificates made here with rcgen; no private key is
//! committed), the real guard layer.

use std::path::Path;
use std::time::Duration;

use chaff::auth::keys::{KeyFile, NewKey, unix_now};
use chaff::auth::limits::CallerLimits;
use chaff::auth::{Rpc, Scope, Scopes, Tenant};
use chaff::engine::Settings;
use chaff::proto::{self, Label, ListKind, chaff_client::ChaffClient};
use chaff::service::guard::Trust;
use chaff::service::tls::{TlsFiles, install_crypto_provider};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Code, Request, Status};

use crate::common::*;

/// A test certificate authority.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A PEM certificate and its PEM key.
struct Leaf {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Ca {
            issuer: CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn leaf(&self, name: &str, client: bool) -> Leaf {
        let p = CertificateParams::new(vec![name.to_string()]).unwrap();
        self.leaf_of(p, client)
    }

    /// A client certificate whose only subject alternative name is `san`,
    /// of the type given.
    fn client_leaf_naming(&self, san: SanType) -> Leaf {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = vec![san];
        self.leaf_of(p, true)
    }

    fn leaf_of(&self, mut p: CertificateParams, client: bool) -> Leaf {
        let key = KeyPair::generate().unwrap();
        p.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// Writes the server's PEM files into `dir`.
fn write_server_files(dir: &Path, ca: &Ca, client_ca: Option<&Ca>) -> TlsFiles {
    let leaf = ca.leaf("localhost", false);
    std::fs::write(dir.join("server.pem"), &leaf.cert).unwrap();
    std::fs::write(dir.join("server.key"), &leaf.key).unwrap();
    if let Some(cca) = client_ca {
        std::fs::write(dir.join("client-ca.pem"), cca.pem()).unwrap();
    }
    TlsFiles {
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        client_ca: client_ca.map(|_| dir.join("client-ca.pem")),
    }
}

fn key(file: &KeyFile, name: &str, scopes: &[Scope], tenant: Option<&str>) -> String {
    file.create(NewKey {
        name: name.into(),
        scopes: Scopes::of(scopes),
        tenant: tenant.map(|t| Tenant::new(t).unwrap()),
        expires_unix: None,
        certificate_name: None,
    })
    .unwrap()
    .key
}

/// `m` with `authorization: Bearer <key>` when a key is given.
fn req<T>(key: Option<&str>, m: T) -> Request<T> {
    let mut r = Request::new(m);
    if let Some(k) = key {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {k}").parse().unwrap());
    }
    r
}

/// Makes one call of `rpc` naming `user` (where the RPC names one).
async fn call(c: &mut Client, key: Option<&str>, rpc: Rpc, user: &str) -> Result<(), Status> {
    let u = user.to_string();
    let list = |u: &str| proto::ListEntryRequest {
        user_id: u.into(),
        operator_wide: false,
        kind: ListKind::Allow.into(),
        entry: "friend@example.com".into(),
        force: false,
    };
    match rpc {
        Rpc::Score => c
            .score(req(
                key,
                proto::ScoreRequest {
                    user_id: u,
                    message: HAM.to_vec(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        Rpc::ScoreBatch => c
            .score_batch(req(
                key,
                proto::ScoreBatchRequest {
                    requests: vec![proto::ScoreRequest {
                        user_id: u,
                        message: HAM.to_vec(),
                        ..Default::default()
                    }],
                },
            ))
            .await
            .map(drop),
        Rpc::Train => c
            .train(req(
                key,
                proto::TrainRequest {
                    user_id: u,
                    message: SPAM.to_vec(),
                    label: Label::Spam.into(),
                    message_id: "m1".into(),
                },
            ))
            .await
            .map(drop),
        Rpc::Forget => c
            .forget(req(
                key,
                proto::ForgetRequest {
                    user_id: u,
                    message_id: "never-learned".into(),
                },
            ))
            .await
            .map(drop),
        Rpc::GetUser => c
            .get_user(req(key, proto::GetUserRequest { user_id: u }))
            .await
            .map(drop),
        Rpc::UpdateUser => c
            .update_user(req(
                key,
                proto::UpdateUserRequest {
                    user_id: u,
                    share_training: Some(true),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        Rpc::AddListEntry => c.add_list_entry(req(key, list(&u))).await.map(drop),
        Rpc::RemoveListEntry => c.remove_list_entry(req(key, list(&u))).await.map(drop),
        Rpc::ListEntries => c
            .list_entries(req(
                key,
                proto::ListEntriesRequest {
                    user_id: u,
                    operator_wide: false,
                    kind: ListKind::Allow.into(),
                },
            ))
            .await
            .map(drop),
        Rpc::FindDecisions => c
            .find_decisions(req(
                key,
                proto::FindDecisionsRequest {
                    user_id: u,
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        Rpc::DeleteUser => c
            .delete_user(req(key, proto::DeleteUserRequest { user_id: u }))
            .await
            .map(drop),
        Rpc::SeedShared => c
            .seed_shared(req(
                key,
                proto::SeedSharedRequest {
                    message: HAM.to_vec(),
                    label: Label::Ham.into(),
                    message_id: "seed-1".into(),
                },
            ))
            .await
            .map(drop),
        Rpc::ClearSeed => c
            .clear_seed(req(key, proto::ClearSeedRequest {}))
            .await
            .map(drop),
        Rpc::GetShared => c
            .get_shared(req(key, proto::GetSharedRequest {}))
            .await
            .map(drop),
        Rpc::GetStats => c
            .get_stats(req(key, proto::GetStatsRequest {}))
            .await
            .map(drop),
        Rpc::ExportUser => c
            .export_user(req(key, proto::ExportUserRequest { user_id: u }))
            .await
            .map(drop),
        Rpc::ImportUser => {
            let mut r = Request::new(tokio_stream::iter(vec![proto::ImportUserRequest {
                user_id: u,
                replace: false,
                data: b"not an export".to_vec(),
            }]));
            if let Some(k) = key {
                r.metadata_mut()
                    .insert("authorization", format!("Bearer {k}").parse().unwrap());
            }
            c.import_user(r).await.map(drop)
        }
        Rpc::Backup => c
            .backup(req(key, proto::BackupRequest::default()))
            .await
            .map(drop),
        Rpc::ListUsers => c
            .list_users(req(
                key,
                proto::ListUsersRequest {
                    prefix: u,
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
    }
}

/// True when the guard let the call through (the engine may still refuse
/// it for its own reasons, e.g. NOT_FOUND for Forget).
fn let_through(r: &Result<(), Status>) -> bool {
    !matches!(r, Err(s) if matches!(s.code(), Code::Unauthenticated | Code::PermissionDenied))
}

/// A server with a keys file; `setup` issues keys before it starts.
async fn keyed_server<T>(
    limits: CallerLimits,
    setup: impl FnOnce(&KeyFile) -> T,
) -> (TestServer, T) {
    keyed_server_on(On::Sled, limits, setup).await
}

/// [`keyed_server`] on the store `on`. On Redis, a cluster of its own
/// ([`On::RedisAlone`]): the keys name users and tenants as they are.
async fn keyed_server_on<T>(
    on: On,
    limits: CallerLimits,
    setup: impl FnOnce(&KeyFile) -> T,
) -> (TestServer, T) {
    let mut out = None;
    let server = on
        .start_trusted(Settings::default(), |dir| {
            let file = KeyFile::in_data_dir(dir);
            out = Some(setup(&file));
            Trust::new(Some(file), None, limits).unwrap()
        })
        .await;
    (server, out.unwrap())
}

on_both_stores!(
    RedisAlone,
    every_scope_reaches_exactly_its_rpcs,
    async |on| {
        let (server, keys) = keyed_server_on(on, CallerLimits::default(), |f| {
            Scope::ALL.map(|s| (s, key(f, s.as_str(), &[s], None)))
        })
        .await;
        let mut c = server.client().await;
        for (scope, k) in &keys {
            for rpc in Rpc::ALL {
                let r = call(&mut c, Some(k), rpc, "alice").await;
                let expected = rpc.scopes().contains(*scope);
                assert_eq!(let_through(&r), expected, "{scope} key on {rpc:?}: {r:?}");
                if let Err(s) = &r
                    && s.code() == Code::PermissionDenied
                {
                    assert!(
                        s.message().contains("needs scope") && s.message().contains("admin"),
                        "{rpc:?}: {}",
                        s.message()
                    );
                    assert!(!s.message().contains(k.rsplit('_').next().unwrap()));
                }
            }
        }
        server.stop().await;
    }
);

#[tokio::test]
async fn without_credentials_only_health_and_reflection_answer() {
    let (server, _) = keyed_server(CallerLimits::default(), |f| {
        key(f, "admin", &[Scope::Admin], None)
    })
    .await;
    let mut c = server.client().await;
    for rpc in Rpc::ALL {
        let e = call(&mut c, None, rpc, "alice").await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{rpc:?}");
        assert!(e.message().contains("Bearer"), "{}", e.message());
    }
    let channel = Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut h = tonic_health::pb::health_client::HealthClient::new(channel);
    let r = h
        .check(tonic_health::pb::HealthCheckRequest {
            service: "chaff.v1.Chaff".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status, 1, "SERVING");
    let channel = Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut r =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(channel);
    let list = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let mut stream = r
        .server_reflection_info(tokio_stream::iter([list]))
        .await
        .expect("reflection needs no credentials")
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());
    server.stop().await;
}

#[tokio::test]
async fn wrong_secret_expired_and_revoked_keys_are_unauthenticated() {
    let (server, (good, file)) = keyed_server(CallerLimits::default(), |f| {
        let good = key(f, "good", &[Scope::Score], None);
        let expired = f
            .create(NewKey {
                name: "old".into(),
                scopes: Scopes::of(&[Scope::Score]),
                tenant: None,
                expires_unix: Some(unix_now() - 1),
                certificate_name: None,
            })
            .unwrap()
            .key;
        ((good, expired), f.clone())
    })
    .await;
    let (good, expired) = good;
    let mut c = server.client().await;
    assert!(call(&mut c, Some(&good), Rpc::Score, "a").await.is_ok());

    let secret = good.rsplit('_').next().unwrap();
    let wrong = good.replace(secret, &"0".repeat(64));
    let e = call(&mut c, Some(&wrong), Rpc::Score, "a")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(!e.message().contains(secret), "{}", e.message());

    let e = call(&mut c, Some(&expired), Rpc::Score, "a")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("expired"), "{}", e.message());

    let e = call(&mut c, Some("not-a-key"), Rpc::Score, "a")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);

    // Revoked while the server runs: picked up from the file.
    let id = good.split('_').nth(1).unwrap();
    file.revoke(id).unwrap();
    let mut refused = None;
    for _ in 0..40 {
        match call(&mut c, Some(&good), Rpc::Score, "a").await {
            Ok(()) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let e = refused.expect("a revoked key is refused within 4 s");
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("revoked"), "{}", e.message());
    server.stop().await;
}

on_both_stores!(
    RedisAlone,
    a_tenant_key_cannot_touch_another_tenants_user_with_any_rpc,
    async |on| {
        let all = [Scope::Score, Scope::Train, Scope::Support, Scope::Admin];
        let (server, (a, b)) = keyed_server_on(on, CallerLimits::default(), |f| {
            (
                key(f, "tenant-a", &all, Some("a")),
                key(f, "tenant-b", &all, Some("b")),
            )
        })
        .await;
        let mut c = server.client().await;
        // Tenant b's user has state worth protecting.
        call(&mut c, Some(&b), Rpc::Train, "b/bob").await.unwrap();
        call(&mut c, Some(&b), Rpc::Score, "b/bob").await.unwrap();
        server.settle_delivered();
        let before = c
            .get_user(req(
                Some(&b),
                proto::GetUserRequest {
                    user_id: "b/bob".into(),
                },
            ))
            .await
            .unwrap()
            .into_inner();

        let naming_a_user = Rpc::ALL.into_iter().filter(|r| !r.operator_wide());
        for rpc in naming_a_user {
            for victim in ["b/bob", "bob", "a"] {
                let e = call(&mut c, Some(&a), rpc, victim).await.unwrap_err();
                assert_eq!(e.code(), Code::PermissionDenied, "{rpc:?} on {victim}");
                assert!(e.message().contains("tenant a"), "{}", e.message());
            }
            // Its own users are fine.
            let r = call(&mut c, Some(&a), rpc, "a/alice").await;
            assert!(let_through(&r), "{rpc:?} on a/alice: {r:?}");
        }
        // Operator-wide state is nobody's tenant.
        for rpc in Rpc::ALL.into_iter().filter(|r| r.operator_wide()) {
            let e = call(&mut c, Some(&a), rpc, "").await.unwrap_err();
            assert_eq!(e.code(), Code::PermissionDenied, "{rpc:?}");
        }
        let e = c
            .add_list_entry(req(
                Some(&a),
                proto::ListEntryRequest {
                    user_id: String::new(),
                    operator_wide: true,
                    kind: ListKind::Block.into(),
                    entry: "evil.example".into(),
                    force: false,
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);

        let after = c
            .get_user(req(
                Some(&b),
                proto::GetUserRequest {
                    user_id: "b/bob".into(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(before, after, "tenant b's user is untouched");
        assert_eq!(after.spam_learned, 1);
        server.stop().await;
    }
);

#[tokio::test]
async fn one_noisy_caller_is_limited_and_others_are_not_starved() {
    let (server, (noisy, quiet)) = keyed_server(
        CallerLimits {
            in_flight: None,
            per_second: Some(5.0),
        },
        |f| {
            (
                key(f, "noisy", &[Scope::Score], None),
                key(f, "quiet", &[Scope::Score], None),
            )
        },
    )
    .await;
    let mut c = server.client().await;
    let mut refused = 0;
    for _ in 0..20 {
        if let Err(e) = call(&mut c, Some(&noisy), Rpc::Score, "u").await {
            assert_eq!(e.code(), Code::ResourceExhausted);
            assert!(
                e.message().contains("--caller-max-per-second"),
                "{}",
                e.message()
            );
            refused += 1;
        }
    }
    assert!(refused >= 10, "only {refused} of 20 refused");
    for _ in 0..4 {
        call(&mut c, Some(&quiet), Rpc::Score, "u").await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    call(&mut c, Some(&noisy), Rpc::Score, "u")
        .await
        .expect("the noisy caller recovers");
    server.stop().await;
}

#[tokio::test]
async fn in_flight_limit_answers_resource_exhausted_naming_it() {
    let (server, k) = keyed_server(
        CallerLimits {
            in_flight: Some(1),
            per_second: None,
        },
        |f| key(f, "one-at-a-time", &[Scope::Score], None),
    )
    .await;
    let c = server.client().await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (mut c, k) = (c.clone(), k.clone());
        tasks.push(tokio::spawn(async move {
            call(&mut c, Some(&k), Rpc::ScoreBatch, "u").await
        }));
    }
    let mut exhausted = 0;
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            assert_eq!(e.code(), Code::ResourceExhausted);
            assert!(
                e.message().contains("--caller-max-in-flight"),
                "{}",
                e.message()
            );
            exhausted += 1;
        }
    }
    assert!(exhausted > 0, "16 concurrent calls against a limit of 1");
    server.stop().await;
}

/// A TLS channel to `server` trusting `ca`, with a client identity.
async fn tls_channel(
    addr: std::net::SocketAddr,
    ca: &Ca,
    identity: Option<&Leaf>,
) -> Result<Channel, tonic::transport::Error> {
    install_crypto_provider();
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.pem()))
        .domain_name("localhost");
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(&id.cert, &id.key));
    }
    Channel::from_shared(format!("https://localhost:{}", addr.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
}

fn chaff_client(ch: Channel) -> Client {
    ChaffClient::new(ch)
}

#[tokio::test]
async fn mutual_tls_identifies_trusted_certificates_and_refuses_others() {
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let stranger_ca = Ca::new("someone else");
    let trusted = client_ca.leaf("mx1.example", true);
    let unlisted = client_ca.leaf("mx2.example", true);
    let untrusted = stranger_ca.leaf("mx1.example", true);
    let (server, k) = keyed_server_tls(&server_ca, Some(&client_ca), |f| {
        f.create(NewKey {
            name: "mx1".into(),
            scopes: Scopes::of(&[Scope::Score]),
            tenant: None,
            expires_unix: None,
            certificate_name: Some("mx1.example".into()),
        })
        .unwrap();
        key(f, "webmail", &[Scope::Train], None)
    })
    .await;

    // A trusted certificate named in the keys file: its scopes, no key.
    let mut c = chaff_client(
        tls_channel(server.addr, &server_ca, Some(&trusted))
            .await
            .unwrap(),
    );
    call(&mut c, None, Rpc::Score, "u").await.unwrap();
    let e = call(&mut c, None, Rpc::Train, "u").await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // Trusted but named nowhere: identified as nobody.
    let mut c = chaff_client(
        tls_channel(server.addr, &server_ca, Some(&unlisted))
            .await
            .unwrap(),
    );
    let e = call(&mut c, None, Rpc::Score, "u").await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);

    // No certificate: an API key over TLS works, nothing does not.
    let mut c = chaff_client(tls_channel(server.addr, &server_ca, None).await.unwrap());
    call(&mut c, Some(&k), Rpc::Train, "u").await.unwrap();
    let e = call(&mut c, None, Rpc::Score, "u").await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);

    // A certificate from a CA the server does not trust: the handshake
    // fails, no call gets through.
    let refused = match tls_channel(server.addr, &server_ca, Some(&untrusted)).await {
        Err(_) => true,
        Ok(ch) => call(&mut chaff_client(ch), None, Rpc::Score, "u")
            .await
            .is_err(),
    };
    assert!(refused, "an untrusted client certificate must be refused");

    // Plaintext to a TLS port gets nowhere either.
    let plain = Channel::from_shared(server.url()).unwrap().connect().await;
    if let Ok(ch) = plain {
        assert!(
            call(&mut chaff_client(ch), Some(&k), Rpc::Train, "u")
                .await
                .is_err()
        );
    }
    server.stop().await;
}

/// A keys-file name stands for one type of subject alternative name: an
/// e-mail entry in a certificate (which a CA may hand to any of its users)
/// does not stand for the DNS name of a mail server, nor the reverse.
#[tokio::test]
async fn a_certificate_name_matches_only_a_name_of_the_same_type() {
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let entry = |f: &KeyFile, name: &str, cert: &str| {
        f.create(NewKey {
            name: name.into(),
            scopes: Scopes::of(&[Scope::Score]),
            tenant: None,
            expires_unix: None,
            certificate_name: Some(cert.into()),
        })
        .unwrap();
    };
    let (server, ()) = keyed_server_tls(&server_ca, Some(&client_ca), |f| {
        entry(f, "mx1", "mx1.example");
        entry(f, "ops", "ops@example.com");
        entry(f, "mesh", "spiffe://example/mx3");
    })
    .await;
    let ia5 = |s: &str| s.to_string().try_into().unwrap();
    let cases = [
        (SanType::DnsName(ia5("mx1.example")), true),
        (SanType::DnsName(ia5("MX1.example")), true),
        (SanType::Rfc822Name(ia5("mx1.example")), false),
        (SanType::URI(ia5("mx1.example")), false),
        (SanType::Rfc822Name(ia5("ops@example.com")), true),
        (SanType::DnsName(ia5("ops@example.com")), false),
        (SanType::URI(ia5("ops@example.com")), false),
        (SanType::URI(ia5("spiffe://example/mx3")), true),
        (SanType::DnsName(ia5("spiffe://example/mx3")), false),
    ];
    for (san, identified) in cases {
        let shown = format!("{san:?}");
        let leaf = client_ca.client_leaf_naming(san);
        let mut c = chaff_client(
            tls_channel(server.addr, &server_ca, Some(&leaf))
                .await
                .unwrap(),
        );
        let got = call(&mut c, None, Rpc::Score, "u").await;
        if identified {
            got.unwrap_or_else(|e| panic!("{shown}: {e:?}"));
        } else {
            let e = got.expect_err(&shown);
            assert_eq!(e.code(), Code::Unauthenticated, "{shown}");
            assert!(
                e.message().contains("names no caller"),
                "{shown}: {}",
                e.message()
            );
        }
    }
    server.stop().await;
}

/// A keys-file certificate name that is no name of any type is refused
/// when it is created, with what the forms are.
#[test]
fn a_certificate_name_of_no_known_form_is_refused_at_creation() {
    let dir = tempfile::tempdir().unwrap();
    let f = KeyFile::in_data_dir(dir.path());
    let e = f
        .create(NewKey {
            name: "wild".into(),
            scopes: Scopes::of(&[Scope::Score]),
            tenant: None,
            expires_unix: None,
            certificate_name: Some("*.example".into()),
        })
        .err()
        .expect("a wildcard is not a name a client proves");
    let text = e.to_string();
    assert!(
        text.contains("--certificate-name") && text.contains("DNS name"),
        "{text}"
    );
    assert!(f.entries().unwrap().is_empty());
}

async fn keyed_server_tls<T>(
    ca: &Ca,
    client_ca: Option<&Ca>,
    setup: impl FnOnce(&KeyFile) -> T,
) -> (TestServer, T) {
    let mut out = None;
    let server = TestServer::start_trusted(Settings::default(), |dir| {
        let file = KeyFile::in_data_dir(dir);
        out = Some(setup(&file));
        let tls = write_server_files(dir, ca, client_ca);
        Trust::new(Some(file), Some(tls), CallerLimits::default()).unwrap()
    })
    .await;
    (server, out.unwrap())
}

#[tokio::test]
async fn sighup_reloads_the_certificate_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let old_ca = Ca::new("old CA");
    let tls = write_server_files(dir.path(), &old_ca, None);
    let k = key(&KeyFile::in_data_dir(&data), "mx", &[Scope::Score], None);
    let (cert, key_path) = (
        tls.cert.display().to_string(),
        tls.key.display().to_string(),
    );
    let server = ServerProcess::start_args(&data, &["--tls-cert", &cert, "--tls-key", &key_path]);
    let addr: std::net::SocketAddr = server.addr.trim_start_matches("http://").parse().unwrap();

    let mut before = chaff_client(tls_channel(addr, &old_ca, None).await.unwrap());
    call(&mut before, Some(&k), Rpc::Score, "u").await.unwrap();

    let new_ca = Ca::new("new CA");
    write_server_files(dir.path(), &new_ca, None);
    let status = std::process::Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    let mut reloaded = None;
    for _ in 0..50 {
        if let Ok(ch) = tls_channel(addr, &new_ca, None).await {
            reloaded = Some(ch);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut after = chaff_client(reloaded.expect("new connections get the new certificate"));
    call(&mut after, Some(&k), Rpc::Score, "u").await.unwrap();
    // The connection made before the reload still serves.
    call(&mut before, Some(&k), Rpc::Score, "u").await.unwrap();
    // And the old certificate is gone for new connections.
    assert!(tls_channel(addr, &old_ca, None).await.is_err());
    server.terminate();
}

#[tokio::test]
async fn open_mode_keeps_the_loopback_start_as_easy_as_before() {
    // No keys, no TLS: no credentials needed, every RPC answers.
    let server = TestServer::start().await;
    let mut c = server.client().await;
    for rpc in Rpc::ALL {
        let r = call(&mut c, None, rpc, "alice").await;
        assert!(let_through(&r), "{rpc:?}: {r:?}");
    }
    server.stop().await;
}

#[test]
fn exposed_listen_without_tls_and_keys_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chaff"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--tls-cert")
            && err.contains("chaff keys create")
            && err.contains("--insecure"),
        "{err}"
    );
}

/// `--insecure` on a non-loopback address, and metrics on one, start (as
/// asked) but say at WARN what anyone who reaches the port can do and how
/// to close it; they used to start without a word.
#[test]
fn insecure_and_exposed_metrics_are_warned_about_at_start() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_chaff"))
        .args(["serve", "--listen", "0.0.0.0:0", "--insecure"])
        .args(["--metrics-listen", "0.0.0.0:0", "--log-format", "json"])
        .args(["--shutdown-grace", "300ms", "--data"])
        .arg(dir.path())
        .env_remove("CHAFF_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.starts_with("chaff listening on"), "{line:?}");
    sigterm(&child);
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    assert!(child.wait().unwrap().success(), "{log}");
    let warns: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"level\":\"WARN\""))
        .collect();
    assert!(
        warns.iter().any(|l| l.contains("--insecure")
            && l.contains("full admin")
            && l.contains("--tls-cert")),
        "{log}"
    );
    assert!(
        warns
            .iter()
            .any(|l| l.contains("--metrics-listen") && l.contains("without credentials")),
        "{log}"
    );
}

#[test]
fn keys_cli_creates_lists_and_revokes_without_printing_hashes_or_secrets_twice() {
    let dir = tempfile::tempdir().unwrap();
    let chaff = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_chaff"))
            .args(args)
            .arg("--data")
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let out = chaff(&[
        "keys", "create", "--name", "mx", "--scopes", "score", "--tenant", "acme",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(key.starts_with("chaff_"), "{key}");
    let out = chaff(&["keys", "list"]);
    let listed = String::from_utf8(out.stdout).unwrap();
    let secret = key.rsplit('_').next().unwrap();
    assert!(listed.contains("mx") && listed.contains("acme") && listed.contains("active"));
    assert!(!listed.contains(secret));
    let id = key.split('_').nth(1).unwrap();
    assert!(chaff(&["keys", "revoke", id]).status.success());
    let listed = String::from_utf8(chaff(&["keys", "list"]).stdout).unwrap();
    assert!(listed.contains("revoked"), "{listed}");
    let bad = chaff(&["keys", "create", "--name", "x", "--scopes", "everything"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("score, train, support, admin"));
}

#[tokio::test]
async fn key_holders_reach_the_server_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ca = Ca::new("cli CA");
    let tls = write_server_files(dir.path(), &ca, None);
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    let k = key(&KeyFile::in_data_dir(&data), "ops", &[Scope::Admin], None);
    let (cert, key_path) = (
        tls.cert.display().to_string(),
        tls.key.display().to_string(),
    );
    let server = ServerProcess::start_args(&data, &["--tls-cert", &cert, "--tls-key", &key_path]);
    let port = server.addr.rsplit(':').next().unwrap().to_string();
    let url = format!("https://localhost:{port}");
    let ca_path = dir.path().join("ca.pem");
    let run = |token: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_chaff"));
        cmd.args(["stats", "--server", &url, "--tls-ca"])
            .arg(&ca_path);
        cmd.env_remove("CHAFF_TOKEN");
        if let Some(t) = token {
            cmd.env("CHAFF_TOKEN", t);
        }
        cmd.output().unwrap()
    };
    let ok = run(Some(&k));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("models in memory"));
    let refused = run(None);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Unauthenticated"));
    server.terminate();
}

/// The chaff binary with `args`, and no credentials from the environment.
async fn chaff_cli(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_chaff"))
        .args(args)
        .env_remove("CHAFF_TOKEN")
        .env_remove("CHAFF_TLS_CA")
        .env_remove("CHAFF_CLIENT_CERT")
        .env_remove("CHAFF_CLIENT_KEY")
        .output()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_presents_a_client_certificate_for_mutual_tls() {
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let ops = client_ca.leaf("ops.example", true);
    let (server, _) = keyed_server_tls(&server_ca, Some(&client_ca), |f| {
        f.create(NewKey {
            name: "ops".into(),
            scopes: Scopes::of(&[Scope::Admin]),
            tenant: None,
            expires_unix: None,
            certificate_name: Some("ops.example".into()),
        })
        .unwrap();
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let (ca, cert, key) = (
        path("ca.pem", &server_ca.pem()),
        path("ops.pem", &ops.cert),
        path("ops.key", &ops.key),
    );
    let url = format!("https://localhost:{}", server.addr.port());
    let with_cert = chaff_cli(&[
        "stats",
        "--server",
        &url,
        "--tls-ca",
        &ca,
        "--client-cert",
        &cert,
        "--client-key",
        &key,
    ])
    .await;
    assert!(
        with_cert.status.success(),
        "{}",
        String::from_utf8_lossy(&with_cert.stderr)
    );
    assert!(String::from_utf8_lossy(&with_cert.stdout).contains("models in memory"));
    let without = chaff_cli(&["stats", "--server", &url, "--tls-ca", &ca]).await;
    assert!(!without.status.success());
    assert!(
        String::from_utf8_lossy(&without.stderr).contains("Unauthenticated"),
        "{}",
        String::from_utf8_lossy(&without.stderr)
    );
    server.stop().await;
}

/// A TREC index of the four test messages in `dir`.
fn tiny_corpus(dir: &Path) -> String {
    let mut index = String::new();
    for (i, (label, msg)) in [("spam", SPAM), ("ham", HAM), ("spam", SPAM2), ("ham", HAM2)]
        .into_iter()
        .enumerate()
    {
        std::fs::write(dir.join(format!("m{i}.eml")), msg).unwrap();
        index.push_str(&format!("{label} m{i}.eml\n"));
    }
    std::fs::write(dir.join("index"), index).unwrap();
    dir.join("index").display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eval_server_and_tenant_loadtest_use_keys_like_every_client_command() {
    let (server, (admin, acme, acme_admin)) = keyed_server(CallerLimits::default(), |f| {
        (
            key(f, "ops", &[Scope::Admin], None),
            key(f, "acme-load", &[Scope::Score, Scope::Train], Some("acme")),
            key(f, "acme-ops", &[Scope::Admin], Some("acme")),
        )
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let index = tiny_corpus(dir.path());
    let url = server.url();

    let eval = |token: Option<String>| {
        let (url, index) = (url.clone(), index.clone());
        async move {
            let mut args = vec!["eval", "--server", &url, "--index", &index];
            let t;
            if let Some(k) = token {
                t = k;
                args.extend(["--token", &t]);
            }
            chaff_cli(&args).await
        }
    };
    let ok = eval(Some(admin.clone())).await;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let refused = eval(None).await;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("no credentials"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let loadtest = |prefix: &'static str| {
        let (url, index, acme) = (url.clone(), index.clone(), acme.clone());
        async move {
            let out = chaff_cli(&[
                "loadtest",
                "--server",
                &url,
                "--corpus",
                &index,
                "--token",
                &acme,
                "--rpc",
                "train",
                "--duration",
                "300ms",
                "--concurrency",
                "2",
                "--users",
                "2",
                "--user-prefix",
                prefix,
                "--json",
            ])
            .await;
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
        }
    };
    let inside = loadtest("acme/").await;
    assert!(inside["calls"].as_u64().unwrap() > 0, "{inside}");
    assert_eq!(inside["errors"], 0, "{inside}");
    let outside = loadtest("").await;
    assert_eq!(outside["calls"], 0, "{outside}");
    assert!(
        outside["errors_by_code"]
            .to_string()
            .contains("PermissionDenied"),
        "{outside}"
    );

    // What both made: the eval user, and acme's two load users (which is
    // all an acme admin key may list).
    let mut c = server.client().await;
    let listed = |key: String| {
        let mut c = c.clone();
        async move {
            c.list_users(req(Some(&key), proto::ListUsersRequest::default()))
                .await
                .unwrap()
                .into_inner()
                .users
                .into_iter()
                .map(|u| u.user_id)
                .collect::<Vec<_>>()
        }
    };
    let all = listed(admin.clone()).await;
    assert!(all.iter().any(|u| u.starts_with("eval-")), "{all:?}");
    assert_eq!(all.len(), 3, "{all:?}");
    assert_eq!(
        listed(acme_admin.clone()).await,
        ["acme/loadtest-0", "acme/loadtest-1"]
    );
    let e = c
        .list_users(req(
            Some(&acme_admin),
            proto::ListUsersRequest {
                prefix: "other/".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("tenant acme"), "{}", e.message());
    server.stop().await;
}

/// Issue #15's audit point: every admin call and every refused call is one
/// `chaff::audit` line naming the caller's key, the method, the user where
/// the call names one, and the outcome; no secret and no message body ever
/// reaches the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_and_refused_calls_are_audited_by_key_name_without_secrets_or_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let keys = KeyFile::in_data_dir(&data);
    let ops = key(&keys, "ops-console", &[Scope::Admin], None);
    let mx = key(&keys, "mx-relay", &[Scope::Score], None);
    let acme = key(&keys, "acme-webmail", &[Scope::Train], Some("acme"));
    let server = LogServer::start(&data);
    let mut c = connect(server.url()).await;

    // Admin calls: a user trained, exported and deleted; an operator list.
    let train = |u: &str| proto::TrainRequest {
        user_id: u.into(),
        message_id: "m1".into(),
        label: Label::Spam.into(),
        message: SPAM.to_vec(),
    };
    c.train(req(Some(&ops), train("alice"))).await.unwrap();
    let mut export = c
        .export_user(req(
            Some(&ops),
            proto::ExportUserRequest {
                user_id: "alice".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    while export.message().await.unwrap().is_some() {}
    c.add_list_entry(req(
        Some(&ops),
        proto::ListEntryRequest {
            operator_wide: true,
            kind: ListKind::Block.into(),
            entry: "spammer.example".into(),
            ..Default::default()
        },
    ))
    .await
    .unwrap();
    c.delete_user(req(
        Some(&ops),
        proto::DeleteUserRequest {
            user_id: "alice".into(),
        },
    ))
    .await
    .unwrap();
    // Refused: a scope the key lacks, another tenant's user, a wrong secret.
    let lacks = c.train(req(Some(&mx), train("bob"))).await.unwrap_err();
    assert_eq!(lacks.code(), Code::PermissionDenied);
    let other = c
        .train(req(Some(&acme), train("globex/carol")))
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::PermissionDenied);
    let forged = format!("{}WRONG", &ops[..ops.len() - 5]);
    let wrong = c
        .get_stats(req(Some(&forged), proto::GetStatsRequest {}))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    drop(c);
    let stderr = server.stop();

    for secret in [&ops, &mx, &acme, &forged] {
        let s = secret.rsplit('_').next().unwrap();
        assert!(!stderr.contains(s), "a secret reached the log: {stderr}");
    }
    assert!(
        !stderr.contains("Cheap pills"),
        "a message body reached the log"
    );
    let audit: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .filter(|l: &serde_json::Value| l["target"] == "chaff::audit")
        .collect();
    let has = |what: &str, want: &[(&str, &str)]| {
        audit.iter().any(|l| {
            let f = &l["fields"];
            f["message"] == what && want.iter().all(|(k, v)| f[*k].as_str() == Some(*v))
        })
    };
    let text = || {
        audit
            .iter()
            .map(|l| l["fields"].to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        has(
            "user exported",
            &[("caller", "ops-console"), ("user", "alice")]
        ),
        "{}",
        text()
    );
    assert!(
        has(
            "user deleted",
            &[("caller", "ops-console"), ("user", "alice")]
        ),
        "{}",
        text()
    );
    assert!(
        has(
            "admin call",
            &[
                ("caller", "ops-console"),
                ("method", "DeleteUser"),
                ("code", "Ok")
            ]
        ),
        "{}",
        text()
    );
    assert!(
        has(
            "operator list changed",
            &[
                ("caller", "ops-console"),
                ("method", "AddListEntry"),
                ("entry", "spammer.example")
            ]
        ),
        "{}",
        text()
    );
    assert!(
        has(
            "call refused",
            &[
                ("caller", "mx-relay"),
                ("method", "Train"),
                ("code", "PermissionDenied")
            ]
        ),
        "{}",
        text()
    );
    assert!(
        has(
            "call refused",
            &[
                ("caller", "acme-webmail"),
                ("method", "Train"),
                ("user", "globex/carol")
            ]
        ),
        "{}",
        text()
    );
    assert!(
        has(
            "call refused",
            &[("method", "GetStats"), ("code", "Unauthenticated")]
        ),
        "{}",
        text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_gives_up_on_a_server_that_never_answers_the_handshake() {
    // Takes the TCP connection and never answers the TLS ClientHello:
    // `Endpoint::connect` bounds only the TCP connect, so without the
    // client's own connector this hung for good.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, Ca::new("silent CA").pem()).unwrap();
    let args = ["stats", "--server", &addr, "--tls-ca", ca.to_str().unwrap()];
    let run = chaff_cli(&args);
    // The connect timeout is 10 s; a minute bounds a hang.
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the TLS client hung on a silent server");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("cannot reach chaff at"), "{stderr}");
    silent.abort();
}

#[tokio::test]
async fn a_backup_carries_the_keys_file_so_a_restore_is_not_open_to_anyone() {
    let (server, admin) = keyed_server(CallerLimits::default(), |f| {
        key(f, "ops", &[Scope::Admin], None)
    })
    .await;
    let mut c = server.client().await;
    let out = tempfile::tempdir().unwrap();
    let bk = out.path().join("bk");
    c.backup(req(
        Some(&admin),
        proto::BackupRequest {
            directory: bk.to_str().unwrap().into(),
        },
    ))
    .await
    .unwrap();
    let keys = KeyFile::in_data_dir(&bk).entries().unwrap();
    assert_eq!(keys.len(), 1, "the backup holds the keys in effect");
    assert_eq!(keys[0].name, "ops");
    server.stop().await;
}

/// A user id is the caller's text, and may hold spaces, `=` and bidi
/// controls (only control characters are refused). In a text log it is
/// quoted and escaped, so it cannot make a line look as if it carried
/// other fields, nor reorder what a reader sees.
#[tokio::test]
async fn a_user_id_cannot_forge_fields_in_a_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = LogServer::start_format(dir.path(), "text");
    let mut c = connect(server.url()).await;
    let hostile = "bob caller=ops-console method=ExportUser \u{202e}gpj.exe";
    let deleted = c
        .delete_user(proto::DeleteUserRequest {
            user_id: hostile.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!deleted.existed);
    let log = server.stop();
    let line = log
        .lines()
        .find(|l| l.contains("user deleted"))
        .unwrap_or_else(|| panic!("no audit line for the delete: {log}"));
    assert!(
        line.contains(r#"user="bob caller=ops-console method=ExportUser \u{202e}gpj.exe""#),
        "{line}"
    );
    assert!(!line.contains('\u{202e}'), "a raw bidi control: {line}");
}
