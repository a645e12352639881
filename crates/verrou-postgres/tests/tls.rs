//! TLS (feature `tls`), against a private PostgreSQL that takes TLS connections only
//! (`hostssl ... trust`, then `hostnossl ... reject`), with a certificate for 127.0.0.1 from a
//! certificate authority made for this test process: the conformance suite and
//! wake-on-release over TLS, and what each `sslmode` checks.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::{acquired_after, chain, invalid_config, patient, start_waiting, unique};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use verrou_core::{Error, LockFactory, LockStore};
use verrou_postgres::{PostgresConfig, PostgresStore, LISTENER_APPLICATION_NAME};
use verrou_testkit::PostgresServer;

/// How soon after a release a woken waiter must have the lock (generous: loaded machines).
const PROMPTLY: Duration = Duration::from_secs(2);

/// The private server, and the PEM certificates of its certificate authority and of another
/// one.
struct TlsServer {
    server: PostgresServer,
    ca: String,
    other_ca: String,
}

/// A certificate authority named `name`.
fn certificate_authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().expect("a CA key");
    CertifiedIssuer::self_signed(params, key).expect("a CA certificate")
}

/// The server of this test process, started on first use.
fn tls_server() -> &'static TlsServer {
    static SERVER: OnceLock<TlsServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let ca = certificate_authority("verrou test CA");
        let other_ca = certificate_authority("verrou other test CA");
        // 127.0.0.1 only: `localhost` is another name.
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("server parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, "verrou test server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("a server key");
        let certificate = params.signed_by(&key, &ca).expect("a server certificate");
        let server = PostgresServer::start_with(
            &[
                ("server.crt", certificate.pem().as_bytes()),
                ("server.key", key.serialize_pem().as_bytes()),
            ],
            &[
                "ssl = on",
                "ssl_cert_file = 'server.crt'",
                "ssl_key_file = 'server.key'",
            ],
            &[
                "hostssl all all 127.0.0.1/32 trust",
                "hostnossl all all 127.0.0.1/32 reject",
            ],
        )
        .expect("a private PostgreSQL server with TLS (see verrou-testkit)");
        TlsServer {
            server,
            ca: ca.pem(),
            other_ca: other_ca.pem(),
        }
    })
}

/// A PEM file, removed when dropped.
struct PemFile(PathBuf);

impl PemFile {
    fn new(contents: &str) -> Self {
        let path = std::env::temp_dir().join(format!("{}.pem", unique("verrou_tls")));
        std::fs::write(&path, contents).expect("a PEM file");
        Self(path)
    }
}

impl Drop for PemFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The server's URL through `host` (`127.0.0.1`, which its certificate names, or
/// `localhost`, which it does not) with `sslmode`, if given.
fn url(host: &str, sslmode: Option<&str>) -> String {
    let port = tls_server().server.port();
    let url = format!("postgres://postgres@{host}:{port}/postgres");
    match sslmode {
        Some(mode) => format!("{url}?sslmode={mode}"),
        None => url,
    }
}

/// Connects to `url` on `table`, with `root_cert` (PEM) as `ssl_root_cert`.
async fn connect(
    url: String,
    table: &str,
    root_cert: Option<&str>,
) -> Result<PostgresStore, Error> {
    let file = root_cert.map(PemFile::new);
    let mut config = PostgresConfig::new(url);
    config.table = table.to_owned();
    config.connect_timeout = Duration::from_secs(2);
    config.ssl_root_cert = file.as_ref().map(|file| file.0.clone());
    // The file is read once, by `connect`.
    PostgresStore::connect(config).await
}

/// A store that checks the server's certificate fully against the test's authority.
async fn verified_store(table: &str) -> PostgresStore {
    connect(
        url("127.0.0.1", Some("verify-full")),
        table,
        Some(&tls_server().ca),
    )
    .await
    .expect("a store over TLS, the certificate checked")
}

/// Whether the store's own sessions are encrypted, as the server sees them.
async fn session_is_encrypted(store: &PostgresStore) -> bool {
    let client = store.pool().get().await.expect("a pooled connection");
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0)
}

/// Takes and gives back a lock through `store`.
async fn take_and_release(store: PostgresStore) {
    let lock = LockFactory::new(store)
        .create_lock(unique("key"))
        .expect("valid key");
    assert!(lock.acquire_immediately().await.expect("acquire"));
    lock.release().await.expect("release");
}

/// The chain of a storage error, or a panic naming what came instead.
fn storage_error(result: Result<PostgresStore, Error>) -> String {
    match result {
        Err(error @ Error::Storage { .. }) => chain(&error),
        other => panic!("expected Error::Storage, got {other:?}"),
    }
}

/// The conformance suite over TLS, the certificate checked.
mod conformance {
    use super::*;

    async fn new_store() -> Arc<dyn LockStore> {
        Arc::new(verified_store("verrou_conformance").await)
    }

    verrou_core::conformance_tests!(new_store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_woken_over_tls() {
    let table = unique("tls_wake");
    let key = unique("key");
    let waiters = verified_store(&table).await;
    let holders = verified_store(&table).await;
    assert!(session_is_encrypted(&waiters).await);
    let waiters = patient(waiters);
    let holder = LockFactory::new(holders.clone())
        .create_lock(key.as_str())
        .expect("valid key");
    assert!(holder.acquire().await.expect("acquire"));
    let waiting = start_waiting(waiters.create_lock(key.as_str()).expect("key")).await;
    holder.release().await.expect("release");
    let waited = acquired_after(waiting, Instant::now()).await;
    assert!(waited < PROMPTLY, "acquired {waited:?} after the release");

    let client = holders.pool().get().await.expect("a pooled connection");
    let listeners: Vec<bool> = client
        .query(
            "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.application_name = $1",
            &[&LISTENER_APPLICATION_NAME],
        )
        .await
        .expect("the listeners' sessions")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(listeners.len() >= 2, "{listeners:?}");
    assert!(listeners.iter().all(|&ssl| ssl), "{listeners:?}");
}

#[tokio::test]
async fn verify_full_without_the_authority_is_refused_naming_tls() {
    let chain = storage_error(connect(url("127.0.0.1", Some("verify-full")), "verrou", None).await);
    assert!(
        chain.contains("(sslmode=verify-full: TLS, certificate and host name checked)"),
        "{chain}"
    );
    assert!(chain.contains("TLS handshake"), "{chain}");
    assert!(chain.contains("UnknownIssuer"), "{chain}");
}

#[tokio::test]
async fn verify_full_checks_the_host_name_and_verify_ca_does_not() {
    let ca = Some(tls_server().ca.as_str());
    let chain = storage_error(connect(url("localhost", Some("verify-full")), "verrou", ca).await);
    assert!(chain.contains("TLS handshake"), "{chain}");
    assert!(chain.contains("not valid for name"), "{chain}");

    let store = connect(url("localhost", Some("verify-ca")), "verrou", ca)
        .await
        .expect("verify-ca: the chain is good, the name is not checked");
    take_and_release(store).await;
}

#[tokio::test]
async fn another_authority_is_refused_by_every_mode_that_checks() {
    let other = Some(tls_server().other_ca.as_str());
    for mode in ["require", "verify-ca", "verify-full"] {
        let chain = storage_error(connect(url("127.0.0.1", Some(mode)), "verrou", other).await);
        assert!(chain.contains("UnknownIssuer"), "{mode}: {chain}");
    }
}

#[tokio::test]
async fn require_and_prefer_encrypt_without_checking() {
    for mode in [Some("require"), Some("prefer"), None] {
        let store = connect(url("localhost", mode), "verrou", None)
            .await
            .unwrap_or_else(|error| panic!("{mode:?}: {}", chain(&error)));
        assert!(session_is_encrypted(&store).await, "{mode:?}");
        take_and_release(store).await;
    }
}

#[tokio::test]
async fn disable_is_refused_by_the_server() {
    let chain = storage_error(connect(url("127.0.0.1", Some("disable")), "verrou", None).await);
    assert!(chain.contains("pg_hba.conf rejects connection"), "{chain}");
    assert!(chain.contains("no encryption"), "{chain}");
}

#[tokio::test]
async fn ssl_root_cert_problems_are_invalid_config() {
    let ca = Some(tls_server().ca.as_str());
    for (mode, root_cert, expected) in [
        ("verify-ca", None, "needs `ssl_root_cert`"),
        ("disable", ca, "`ssl_root_cert` is set"),
        (
            "verify-full",
            Some("not a certificate"),
            "no PEM certificate",
        ),
    ] {
        let config = connect(url("127.0.0.1", Some(mode)), "verrou", root_cert).await;
        let message = invalid_config(config);
        assert!(message.contains(expected), "{mode}: {message}");
    }
    let missing = Path::new("/nonexistent/verrou-ca.pem");
    let mut config = PostgresConfig::new(url("127.0.0.1", Some("verify-full")));
    config.ssl_root_cert = Some(missing.to_owned());
    let message = invalid_config(PostgresStore::connect(config).await);
    assert!(message.contains("`ssl_root_cert`"), "{message}");
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );
}
