//! Table names: checked to be plain identifiers, then quoted, so a configured name can never
//! smuggle SQL into the statements it is pasted into.

use verrou_core::Error;

/// The longest identifier PostgreSQL keeps (`NAMEDATALEN - 1` bytes); longer ones are
/// silently truncated by the server, which would make two configured names collide.
const MAX_IDENTIFIER_BYTES: usize = 63;

/// A validated table name, optionally schema-qualified, in its quoted SQL form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableName {
    quoted: String,
}

impl TableName {
    /// Accepts `table` or `schema.table`, each part a letter or underscore followed by
    /// letters, digits, underscores or dollar signs, at most 63 bytes. Parts are quoted, so
    /// their case is kept as written.
    pub(crate) fn parse(name: &str) -> Result<Self, Error> {
        let invalid = |reason: String| {
            Error::InvalidConfig(format!(
                "invalid table name {name:?}: {reason}; use letters, digits and underscores, \
                 optionally as schema.table"
            ))
        };
        let parts: Vec<&str> = name.split('.').collect();
        if parts.len() > 2 {
            return Err(invalid("it has more than one dot".into()));
        }
        for part in &parts {
            check_part(part).map_err(invalid)?;
        }
        let quoted = parts
            .iter()
            .map(|part| format!("\"{part}\""))
            .collect::<Vec<_>>()
            .join(".");
        Ok(Self { quoted })
    }

    /// The name as it goes into SQL, e.g. `"public"."verrou"`.
    pub(crate) fn quoted(&self) -> &str {
        &self.quoted
    }
}

/// Says what is wrong with one dot-separated part of a table name.
fn check_part(part: &str) -> Result<(), String> {
    let mut chars = part.chars();
    let Some(first) = chars.next() else {
        return Err("it has an empty part".into());
    };
    if !(first.is_ascii_alphabetic() || first == '_') {
        return Err(format!(
            "{part:?} must start with a letter or an underscore, not {first:?}"
        ));
    }
    if let Some(bad) = chars.find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '$')) {
        return Err(format!("the character {bad:?} is not allowed"));
    }
    if part.len() > MAX_IDENTIFIER_BYTES {
        return Err(format!(
            "{part:?} is longer than {MAX_IDENTIFIER_BYTES} bytes"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(name: &str) -> String {
        match TableName::parse(name) {
            Err(Error::InvalidConfig(message)) => message,
            other => panic!("{name:?} should be rejected, got {other:?}"),
        }
    }

    #[test]
    fn plain_and_qualified_names_are_quoted() {
        let quoted = |name: &str| TableName::parse(name).map(|t| t.quoted().to_owned()).ok();
        assert_eq!(quoted("verrou").as_deref(), Some("\"verrou\""));
        assert_eq!(quoted("Locks_2").as_deref(), Some("\"Locks_2\""));
        assert_eq!(
            quoted("_app.lock$s").as_deref(),
            Some("\"_app\".\"lock$s\"")
        );
        assert_eq!(quoted(&"a".repeat(63)).map(|q| q.len()), Some(65));
    }

    #[test]
    fn injection_is_rejected_and_named() {
        let message = reason("verrou; drop table users");
        assert!(
            message.contains("\"verrou; drop table users\""),
            "{message}"
        );
        assert!(message.contains("';' is not allowed"), "{message}");
    }

    #[test]
    fn malformed_names_are_rejected_with_the_reason() {
        assert!(reason("").contains("empty part"));
        assert!(reason("a.").contains("empty part"));
        assert!(reason("a.b.c").contains("more than one dot"));
        assert!(reason("1abc").contains("must start with a letter"));
        assert!(reason("\"quoted\"").contains("must start with a letter"));
        assert!(reason("ab\"c").contains("'\"' is not allowed"));
        assert!(reason("tablé").contains("'é' is not allowed"));
        assert!(reason(&"a".repeat(64)).contains("longer than 63 bytes"));
    }
}
