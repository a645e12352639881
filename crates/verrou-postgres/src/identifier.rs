//! Table names: checked to be plain identifiers, then quoted, so a configured name can never
//! smuggle SQL into the statements it is pasted into. The table's fencing-token sequence is
//! named after it.

use verrou_core::Error;

/// The longest identifier PostgreSQL keeps (`NAMEDATALEN - 1` bytes); longer ones are
/// silently truncated by the server, which would make two configured names collide.
const MAX_IDENTIFIER_BYTES: usize = 63;

/// What the fencing-token sequence adds to the table's name.
const SEQUENCE_SUFFIX: &str = "_fencing_seq";

/// A validated table name, optionally schema-qualified, in its quoted SQL form, with the
/// name of its fencing-token sequence (`<table>_fencing_seq`, in the same schema).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableName {
    plain: String,
    quoted: String,
    sequence_quoted: String,
}

impl TableName {
    /// Accepts `table` or `schema.table`, each part a letter or underscore followed by
    /// letters, digits, underscores or dollar signs, at most 63 bytes (51 for the table, so
    /// its sequence's name fits too). Parts are quoted, so their case is kept as written.
    pub(crate) fn parse(name: &str) -> Result<Self, Error> {
        let invalid = |reason: String| {
            Error::InvalidConfig(format!(
                "invalid table name {name:?}: {reason}; use letters, digits and underscores, \
                 optionally as schema.table"
            ))
        };
        let parts: Vec<&str> = name.split('.').collect();
        let (schema, table) = match parts.as_slice() {
            [table] => (None, *table),
            [schema, table] => (Some(*schema), *table),
            _ => return Err(invalid("it has more than one dot".into())),
        };
        if let Some(schema) = schema {
            check_part(schema, MAX_IDENTIFIER_BYTES).map_err(invalid)?;
        }
        check_part(table, MAX_IDENTIFIER_BYTES - SEQUENCE_SUFFIX.len()).map_err(invalid)?;
        let qualify = |name: &str| match schema {
            Some(schema) => format!("\"{schema}\".\"{name}\""),
            None => format!("\"{name}\""),
        };
        Ok(Self {
            plain: name.to_owned(),
            quoted: qualify(table),
            sequence_quoted: qualify(&format!("{table}{SEQUENCE_SUFFIX}")),
        })
    }

    /// The name as configured (and validated), e.g. `public.verrou`.
    pub(crate) fn plain(&self) -> &str {
        &self.plain
    }

    /// The name as it goes into SQL, e.g. `"public"."verrou"`.
    pub(crate) fn quoted(&self) -> &str {
        &self.quoted
    }

    /// The fencing-token sequence's name as it goes into SQL, e.g.
    /// `"public"."verrou_fencing_seq"`.
    pub(crate) fn sequence_quoted(&self) -> &str {
        &self.sequence_quoted
    }
}

/// Says what is wrong with one dot-separated part of a table name, at most `max_bytes` long.
fn check_part(part: &str, max_bytes: usize) -> Result<(), String> {
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
    if part.len() > max_bytes {
        return Err(format!("{part:?} is longer than {max_bytes} bytes"));
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
        assert_eq!(quoted(&"a".repeat(51)).map(|q| q.len()), Some(53));
        let qualified = TableName::parse(&format!("{}.locks", "s".repeat(63))).expect("valid");
        assert_eq!(
            qualified.sequence_quoted(),
            format!("\"{}\".\"locks_fencing_seq\"", "s".repeat(63))
        );
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
        assert!(reason(&"a".repeat(52)).contains("longer than 51 bytes"));
        assert!(reason(&format!("{}.a", "s".repeat(64))).contains("longer than 63 bytes"));
    }
}
