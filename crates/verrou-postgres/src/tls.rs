//! TLS: the `sslmode` a connection string asks for, and the connector that does it.
//!
//! `tokio-postgres` reads three of libpq's `sslmode`s (`disable`, `prefer`, `require`) and
//! leaves certificates to the TLS connector. The store reads all five itself: it takes
//! `sslmode` out of the connection string, tells the driver whether TLS is off, optional or
//! required, and (feature `tls`) gives it a rustls connector that checks the server's
//! certificate as the mode says (see `verify.rs`).

use std::path::Path;
#[cfg(feature = "tls")]
use std::sync::Arc;

use deadpool_postgres::tokio_postgres::config::SslMode as DriverSslMode;
use percent_encoding::percent_decode_str;
use verrou_core::{Error, Result};

/// The connector the store's connections are opened with: rustls with the `tls` feature,
/// none without (the driver then never starts TLS).
#[cfg(feature = "tls")]
pub(crate) type MakeTls = tokio_postgres_rustls::MakeRustlsConnect;
/// The connector the store's connections are opened with: rustls with the `tls` feature,
/// none without (the driver then never starts TLS).
#[cfg(not(feature = "tls"))]
pub(crate) type MakeTls = deadpool_postgres::tokio_postgres::NoTls;

/// The `sslmode` of a connection string (libpq's names; `prefer` when it names none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it, else a plain connection.
    #[default]
    Prefer,
    /// TLS, or no connection.
    Require,
    /// TLS, with the server's certificate chained to `ssl_root_cert`; any host name.
    VerifyCa,
    /// TLS, with the server's certificate chained to a trusted root and naming the host.
    VerifyFull,
}

impl SslMode {
    /// The mode named `value`.
    fn parse(value: &str) -> Result<Self, String> {
        Ok(match value {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            "allow" => {
                return Err(
                    "sslmode=allow (plain first, TLS if the server insists) is not \
                            supported: use disable or prefer"
                        .to_owned(),
                )
            }
            other => {
                return Err(format!(
                    "unknown sslmode `{other}`: expected disable, prefer, require, verify-ca or \
                     verify-full"
                ))
            }
        })
    }

    /// The name in a connection string.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    /// What connections get, for messages: the mode, whether they use TLS, and what is
    /// checked (`root_cert`: whether `ssl_root_cert` is set).
    pub(crate) fn describe(self, root_cert: bool) -> String {
        let what = match (self, root_cert) {
            (Self::Disable, _) => "no TLS",
            (Self::Prefer, _) if !cfg!(feature = "tls") => "no TLS: the `tls` feature is off",
            (Self::Prefer, false) => "TLS if the server offers it, certificate not checked",
            (Self::Prefer, true) => {
                "TLS if the server offers it, certificate checked against `ssl_root_cert`"
            }
            (Self::Require, false) => "TLS, certificate not checked",
            (Self::Require, true) | (Self::VerifyCa, _) => {
                "TLS, certificate checked against `ssl_root_cert`"
            }
            (Self::VerifyFull, _) => "TLS, certificate and host name checked",
        };
        format!("sslmode={}: {what}", self.name())
    }

    /// What the driver is told: whether TLS is off, optional or required. Certificates are
    /// the connector's business.
    pub(crate) fn driver(self) -> DriverSslMode {
        match self {
            Self::Disable => DriverSslMode::Disable,
            Self::Prefer => DriverSslMode::Prefer,
            Self::Require | Self::VerifyCa | Self::VerifyFull => DriverSslMode::Require,
        }
    }
}

/// A connection string without its `sslmode`, and the mode it named.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SslParams {
    /// The connection string for the driver: the given one without `sslmode`.
    pub(crate) rest: String,
    /// The mode named, `prefer` if none.
    pub(crate) mode: SslMode,
}

/// Takes `sslmode` out of `url` (a `postgres://` URL or `key=value` pairs, read as
/// `tokio-postgres` reads them; the last `sslmode` counts). Fails on an unknown mode, and on
/// `sslrootcert`, which `ssl_root_cert` replaces. A string the driver will refuse anyway is
/// left to it.
pub(crate) fn take_sslmode(url: &str) -> Result<SslParams, String> {
    let (rest, params) = match url_query(url) {
        Some((before, query)) => take_from_query(before, query),
        None if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            (url.to_owned(), Vec::new())
        }
        None => take_from_pairs(url),
    };
    let mut mode = SslMode::default();
    for (key, value) in params {
        if key == "sslrootcert" {
            return Err(
                "`sslrootcert` is not read from the connection string: set the \
                        `ssl_root_cert` option instead"
                    .to_owned(),
            );
        }
        mode = SslMode::parse(&value)?;
    }
    Ok(SslParams { rest, mode })
}

/// The parameters [`take_sslmode`] takes out.
fn is_taken(key: &str) -> bool {
    key == "sslmode" || key == "sslrootcert"
}

/// A URL's part before its query, and its query: the query starts at the first `?` after
/// the user info (which, as for `tokio-postgres`, ends at the first `@`).
fn url_query(url: &str) -> Option<(&str, &str)> {
    let after_scheme = ["postgres://", "postgresql://"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme))?;
    let skip = url.len() - after_scheme.len() + after_scheme.find('@').map_or(0, |at| at + 1);
    let question = skip + url[skip..].find('?')?;
    Some((&url[..question], &url[question + 1..]))
}

/// The URL made of `before` and what `query` keeps, and the (decoded) parameters it took.
fn take_from_query(before: &str, query: &str) -> (String, Vec<(String, String)>) {
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    for param in query.split('&') {
        let decoded = param.split_once('=').and_then(|(key, value)| {
            let key = percent_decode_str(key).decode_utf8().ok()?;
            let value = percent_decode_str(value).decode_utf8().ok()?;
            Some((key.into_owned(), value.into_owned()))
        });
        match decoded {
            Some((key, value)) if is_taken(&key) => taken.push((key, value)),
            _ => kept.push(param),
        }
    }
    let rest = if kept.is_empty() {
        before.to_owned()
    } else {
        format!("{before}?{}", kept.join("&"))
    };
    (rest, taken)
}

/// The `key=value` string without the pairs it took, and those pairs (values unquoted). A
/// string that does not parse is left whole, for the driver to report.
fn take_from_pairs(pairs: &str) -> (String, Vec<(String, String)>) {
    let Some(parsed) = parse_pairs(pairs) else {
        return (pairs.to_owned(), Vec::new());
    };
    let mut rest = String::with_capacity(pairs.len());
    let mut taken = Vec::new();
    let mut copied_to = 0;
    for pair in parsed {
        if is_taken(&pair.key) {
            rest.push_str(&pairs[copied_to..pair.start]);
            copied_to = pair.end;
            taken.push((pair.key, pair.value));
        }
    }
    rest.push_str(&pairs[copied_to..]);
    (rest, taken)
}

/// One `key = value` of a connection string, and where it is.
struct Pair {
    key: String,
    value: String,
    /// The byte offsets of its key's start and its value's end.
    start: usize,
    end: usize,
}

/// The pairs of a libpq `key=value` string, with `tokio-postgres`'s rules: white space
/// around `=` and between pairs, values in single quotes or up to white space, `\` escaping
/// the next character. `None` if it does not parse.
fn parse_pairs(s: &str) -> Option<Vec<Pair>> {
    let mut chars = s.char_indices().peekable();
    let mut pairs = Vec::new();
    let skip_space = |chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
    };
    loop {
        skip_space(&mut chars);
        let Some(&(start, _)) = chars.peek() else {
            return Some(pairs);
        };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        skip_space(&mut chars);
        chars.next_if(|(_, c)| *c == '=')?;
        skip_space(&mut chars);
        let quoted = chars.next_if(|(_, c)| *c == '\'').is_some();
        let mut value = String::new();
        let mut end = s.len();
        let mut closed = false;
        while let Some((at, c)) = chars.next_if(|(_, c)| quoted || !c.is_whitespace()) {
            match c {
                '\\' => value.push(chars.next()?.1),
                '\'' if quoted => {
                    end = at + 1;
                    closed = true;
                    break;
                }
                _ => value.push(c),
            }
        }
        if quoted != closed || (!quoted && value.is_empty()) {
            return None;
        }
        if !quoted {
            end = chars.peek().map_or(s.len(), |&(at, _)| at);
        }
        pairs.push(Pair {
            key,
            value,
            start,
            end,
        });
    }
}

/// The connector for `mode`, checking certificates against `root_cert` (PEM) when given.
/// Fails with [`Error::InvalidConfig`] when the mode needs what is missing (the `tls`
/// feature, a root certificate) or the file can not be read.
#[cfg(not(feature = "tls"))]
pub(crate) fn make_tls(mode: SslMode, root_cert: Option<&Path>) -> Result<MakeTls> {
    if root_cert.is_some() {
        return Err(Error::InvalidConfig(
            "PostgreSQL `ssl_root_cert` needs TLS: enable the `tls` cargo feature of \
             verrou-postgres"
                .to_owned(),
        ));
    }
    match mode {
        SslMode::Disable | SslMode::Prefer => Ok(deadpool_postgres::tokio_postgres::NoTls),
        other => Err(Error::InvalidConfig(format!(
            "PostgreSQL sslmode={} needs TLS: enable the `tls` cargo feature of verrou-postgres",
            other.name()
        ))),
    }
}

/// The connector for `mode`, checking certificates against `root_cert` (PEM) when given.
/// Fails with [`Error::InvalidConfig`] when the mode needs what is missing (a root
/// certificate) or the file can not be read.
///
/// | mode | without `root_cert` | with `root_cert` |
/// | --- | --- | --- |
/// | `disable` | (unused) | refused: it would never be used |
/// | `prefer`, `require` | no check | chain to `root_cert` |
/// | `verify-ca` | refused: nothing to check against | chain to `root_cert` |
/// | `verify-full` | chain to the system's roots, host name | chain to those or `root_cert`, host name |
#[cfg(feature = "tls")]
pub(crate) fn make_tls(mode: SslMode, root_cert: Option<&Path>) -> Result<MakeTls> {
    use rustls::client::danger::ServerCertVerifier;

    use crate::verify::{chain_and_name, chain_only, no_check, own_roots, system_roots};

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match (mode, root_cert) {
        (SslMode::Disable, Some(_)) => {
            return Err(Error::InvalidConfig(
                "PostgreSQL `ssl_root_cert` is set, but the URL says sslmode=disable".to_owned(),
            ))
        }
        (SslMode::Disable | SslMode::Prefer | SslMode::Require, None) => no_check(&provider),
        (SslMode::VerifyCa, None) => {
            return Err(Error::InvalidConfig(
                "PostgreSQL sslmode=verify-ca needs `ssl_root_cert`: the certificate authority \
                 the server's certificate must come from (use verify-full to check the host \
                 name against the system's root certificates)"
                    .to_owned(),
            ))
        }
        (SslMode::Prefer | SslMode::Require | SslMode::VerifyCa, Some(path)) => {
            chain_only(own_roots(path)?, &provider)?
        }
        (SslMode::VerifyFull, root_cert) => {
            let mut roots = system_roots(root_cert.is_none())?;
            if let Some(path) = root_cert {
                roots.roots.extend(own_roots(path)?.roots);
            }
            chain_and_name(roots, &provider)?
        }
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| Error::InvalidConfig(format!("PostgreSQL TLS: {error}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(url: &str) -> (String, SslMode) {
        let params = take_sslmode(url).expect("a valid sslmode");
        (params.rest, params.mode)
    }

    #[test]
    fn every_mode_is_read_and_taken_out_of_a_url() {
        for (name, mode) in [
            ("disable", SslMode::Disable),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            ("verify-ca", SslMode::VerifyCa),
            ("verify-full", SslMode::VerifyFull),
        ] {
            assert_eq!(mode.name(), name);
            assert_eq!(
                taken(&format!("postgres://app@db/app?sslmode={name}")),
                ("postgres://app@db/app".to_owned(), mode)
            );
        }
        assert_eq!(
            taken("postgresql://a:p%3Fw@db1:5432,db2/app?application_name=x&ssl%6Dode=verify%2Dfull&target_session_attrs=read-write"),
            (
                "postgresql://a:p%3Fw@db1:5432,db2/app?application_name=x&target_session_attrs=read-write"
                    .to_owned(),
                SslMode::VerifyFull
            ),
            "decoded like the driver decodes, and every other parameter kept as it was"
        );
        assert_eq!(
            taken("postgres://db/app?sslmode=disable&sslmode=require"),
            ("postgres://db/app".to_owned(), SslMode::Require),
            "the last one counts"
        );
        assert_eq!(
            taken("postgres://u:pa?ss@db/app"),
            ("postgres://u:pa?ss@db/app".to_owned(), SslMode::Prefer),
            "a `?` in the password is no query"
        );
        assert_eq!(
            taken("postgres://db"),
            ("postgres://db".to_owned(), SslMode::Prefer)
        );
    }

    #[test]
    fn every_mode_is_read_and_taken_out_of_key_value_pairs() {
        assert_eq!(
            taken("host=db sslmode=verify-full user=app"),
            ("host=db  user=app".to_owned(), SslMode::VerifyFull)
        );
        assert_eq!(
            taken("host=db password='it\\'s secret'  sslmode = 'verify-ca'"),
            (
                "host=db password='it\\'s secret'  ".to_owned(),
                SslMode::VerifyCa
            )
        );
        assert_eq!(
            taken("sslmode=dis\\able"),
            (String::new(), SslMode::Disable)
        );
        assert_eq!(
            taken("host=db dbname=app"),
            ("host=db dbname=app".to_owned(), SslMode::Prefer)
        );
        assert_eq!(
            taken("host=db password='unterminated sslmode=disable"),
            (
                "host=db password='unterminated sslmode=disable".to_owned(),
                SslMode::Prefer
            ),
            "left to the driver, which reports it"
        );
    }

    #[test]
    fn unknown_modes_and_sslrootcert_are_refused() {
        for (url, expected) in [
            ("postgres://db?sslmode=verify", "unknown sslmode `verify`"),
            ("host=db sslmode=allow", "sslmode=allow"),
            ("postgres://db?sslrootcert=/ca.pem", "`ssl_root_cert`"),
            ("host=db sslrootcert=/ca.pem", "`ssl_root_cert`"),
        ] {
            let error = take_sslmode(url).expect_err(url);
            assert!(error.contains(expected), "{url}: {error}");
        }
    }

    #[test]
    fn the_driver_is_told_whether_tls_is_required() {
        assert_eq!(SslMode::Disable.driver(), DriverSslMode::Disable);
        assert_eq!(SslMode::Prefer.driver(), DriverSslMode::Prefer);
        for mode in [SslMode::Require, SslMode::VerifyCa, SslMode::VerifyFull] {
            assert_eq!(mode.driver(), DriverSslMode::Require);
        }
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn without_the_feature_only_plain_connections_are_possible() {
        assert!(make_tls(SslMode::Disable, None).is_ok());
        assert!(make_tls(SslMode::Prefer, None).is_ok());
        for mode in [SslMode::Require, SslMode::VerifyCa, SslMode::VerifyFull] {
            match make_tls(mode, None) {
                Err(Error::InvalidConfig(message)) => {
                    assert!(message.contains("`tls` cargo feature"), "{message}")
                }
                other => panic!("expected InvalidConfig, got {other:?}"),
            }
        }
        assert!(make_tls(SslMode::Prefer, Some(Path::new("ca.pem"))).is_err());
    }
}
