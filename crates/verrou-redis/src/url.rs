//! Checking Redis URLs before fred reads them, and showing them without their password.

use url::{ParseError, Url};

/// The URL shapes fred understands, for error messages.
const EXPECTED: &str = "redis://[user:password@]host[:port][/db], rediss://... for TLS, \
                        or redis-cluster://... / redis-sentinel://...";

/// Checks that `url` names a Redis server this build can reach; the error says what is wrong
/// without repeating the URL.
pub(crate) fn check(url: &str) -> Result<(), String> {
    let parsed = Url::parse(url).map_err(|error| match error {
        ParseError::RelativeUrlWithoutBase => format!("no scheme; expected {EXPECTED}"),
        other => other.to_string(),
    })?;
    let scheme = parsed.scheme();
    let base = scheme
        .strip_suffix("-cluster")
        .or_else(|| scheme.strip_suffix("-sentinel"))
        .unwrap_or(scheme);
    match base {
        "redis" | "valkey" => {}
        "rediss" | "valkeys" if cfg!(feature = "tls") => {}
        "rediss" | "valkeys" => {
            return Err(format!(
                "`{scheme}://` needs TLS: enable the `tls` cargo feature of verrou-redis"
            ))
        }
        _ => {
            return Err(format!(
                "unsupported scheme `{scheme}`; expected {EXPECTED}"
            ))
        }
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("no host; expected {EXPECTED}"));
    }
    Ok(())
}

/// `url` with its user information (user name and password) replaced by `***`, fit for
/// messages and logs. Works on malformed URLs too.
pub(crate) fn redact(url: &str) -> String {
    let authority = url.find("://").map_or(0, |scheme_end| scheme_end + 3);
    match url[authority..].rfind('@') {
        Some(at) => format!("{}***{}", &url[..authority], &url[authority + at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_user_information() {
        assert_eq!(
            redact("redis://user:s3cret@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(redact("redis://:p@ss@host"), "redis://***@host");
        assert_eq!(redact("user:s3cret@host"), "***@host");
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
    }

    #[test]
    fn check_accepts_plain_urls() {
        for url in [
            "redis://127.0.0.1:6379",
            "redis://:pw@localhost/2",
            "redis-cluster://a:7000?node=b:7001",
            "valkey://localhost",
        ] {
            assert_eq!(check(url), Ok(()), "{url}");
        }
    }

    #[test]
    fn check_names_the_problem() {
        let cases = [
            ("127.0.0.1:6379", "no scheme"),
            ("localhost:6379", "unsupported scheme `localhost`"),
            ("http://localhost", "unsupported scheme `http`"),
            ("redis://localhost:99999", "invalid port"),
            ("redis://", "host"),
        ];
        for (url, problem) in cases {
            let reason = check(url).expect_err(url);
            assert!(reason.contains(problem), "{url}: {reason}");
        }
    }

    #[test]
    fn check_knows_whether_tls_is_built_in() {
        let result = check("rediss://localhost");
        if cfg!(feature = "tls") {
            assert_eq!(result, Ok(()));
        } else {
            assert!(result.expect_err("no tls").contains("`tls` cargo feature"));
        }
    }
}
