//! Table names: checked to be plain identifiers, then quoted, so a configured name can never
//! smuggle SQL into the statements it is pasted into. The objects beside the table (its
//! fencing-token sequence, its waiting line and the line's indexes, its hand-over function)
//! are named after it.

use verrou_core::Error;

/// The longest identifier PostgreSQL keeps (`NAMEDATALEN - 1` bytes); longer ones are
/// silently truncated by the server, which would make two configured names collide.
const MAX_IDENTIFIER_BYTES: usize = 63;

/// What the fencing-token sequence adds to the table's name.
const SEQUENCE_SUFFIX: &str = "_fencing_seq";

/// What the waiting-line table adds to the table's name.
const LINE_SUFFIX: &str = "_waiters";

/// What the line's primary key adds to the table's name.
const LINE_KEY_SUFFIX: &str = "_waiters_pk";

/// What the line's arrival-order index adds to the table's name.
const LINE_ORDER_SUFFIX: &str = "_waiters_idx";

/// What the table of semaphores and read-write locks adds to the table's name.
const SHARES_SUFFIX: &str = "_shares";

/// What the shares table's primary key adds to the table's name.
const SHARES_KEY_SUFFIX: &str = "_shares_pk";

/// What the hand-over function of the waiting line adds to the table's name.
const HAND_OVER_SUFFIX: &str = "_hand_over";

/// The longest suffix: a table name leaves room for it.
const LONGEST_SUFFIX: usize = max(
    max(
        max(SEQUENCE_SUFFIX.len(), LINE_SUFFIX.len()),
        HAND_OVER_SUFFIX.len(),
    ),
    max(
        max(LINE_KEY_SUFFIX.len(), LINE_ORDER_SUFFIX.len()),
        max(SHARES_SUFFIX.len(), SHARES_KEY_SUFFIX.len()),
    ),
);

/// A validated table name, optionally schema-qualified, in its quoted SQL form, with the
/// names of the objects beside it, in the same schema: its fencing-token sequence
/// (`<table>_fencing_seq`) and its waiting line (table `<table>_waiters`, primary key
/// `<table>_waiters_pk`, index `<table>_waiters_idx`, hand-over function
/// `<table>_hand_over`) and its table of semaphores and read-write locks (`<table>_shares`,
/// primary key `<table>_shares_pk`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableName {
    plain: String,
    quoted: String,
    sequence_quoted: String,
    line_quoted: String,
    line_key: String,
    line_order: String,
    shares_quoted: String,
    shares_key: String,
    hand_over_quoted: String,
}

impl TableName {
    /// Accepts `table` or `schema.table`, each part a letter or underscore followed by
    /// letters, digits, underscores or dollar signs, at most 63 bytes (51 for the table, so
    /// the names of the objects beside it fit too). Parts are quoted, so their case is kept
    /// as written.
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
        check_part(table, MAX_IDENTIFIER_BYTES - LONGEST_SUFFIX).map_err(invalid)?;
        let qualify = |suffix: &str| match schema {
            Some(schema) => format!("\"{schema}\".\"{table}{suffix}\""),
            None => format!("\"{table}{suffix}\""),
        };
        Ok(Self {
            plain: name.to_owned(),
            quoted: qualify(""),
            sequence_quoted: qualify(SEQUENCE_SUFFIX),
            line_quoted: qualify(LINE_SUFFIX),
            line_key: format!("\"{table}{LINE_KEY_SUFFIX}\""),
            line_order: format!("\"{table}{LINE_ORDER_SUFFIX}\""),
            shares_quoted: qualify(SHARES_SUFFIX),
            shares_key: format!("\"{table}{SHARES_KEY_SUFFIX}\""),
            hand_over_quoted: qualify(HAND_OVER_SUFFIX),
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

    /// The waiting-line table's name as it goes into SQL, e.g. `"public"."verrou_waiters"`.
    pub(crate) fn line_quoted(&self) -> &str {
        &self.line_quoted
    }

    /// The line's primary-key constraint, unqualified as `CONSTRAINT` takes it, e.g.
    /// `"verrou_waiters_pk"`.
    pub(crate) fn line_key(&self) -> &str {
        &self.line_key
    }

    /// The line's arrival-order index, unqualified as `CREATE INDEX` takes it (the index
    /// goes into its table's schema), e.g. `"verrou_waiters_idx"`.
    pub(crate) fn line_order(&self) -> &str {
        &self.line_order
    }

    /// The shares table's name as it goes into SQL, e.g. `"public"."verrou_shares"`.
    pub(crate) fn shares_quoted(&self) -> &str {
        &self.shares_quoted
    }

    /// The shares table's primary-key constraint, unqualified, e.g. `"verrou_shares_pk"`.
    pub(crate) fn shares_key(&self) -> &str {
        &self.shares_key
    }

    /// The line's hand-over function's name as it goes into SQL, e.g.
    /// `"public"."verrou_hand_over"`.
    pub(crate) fn hand_over_quoted(&self) -> &str {
        &self.hand_over_quoted
    }
}

/// The larger of two lengths, in a constant.
const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
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
        assert_eq!(
            qualified.line_quoted(),
            format!("\"{}\".\"locks_waiters\"", "s".repeat(63))
        );
        assert_eq!(qualified.line_key(), "\"locks_waiters_pk\"");
        assert_eq!(qualified.line_order(), "\"locks_waiters_idx\"");
        assert_eq!(
            qualified.shares_quoted(),
            format!("\"{}\".\"locks_shares\"", "s".repeat(63))
        );
        assert_eq!(qualified.shares_key(), "\"locks_shares_pk\"");
        assert_eq!(
            qualified.hand_over_quoted(),
            format!("\"{}\".\"locks_hand_over\"", "s".repeat(63))
        );
    }

    #[test]
    fn the_longest_table_name_leaves_room_for_every_object_beside_it() {
        let longest = TableName::parse(&"t".repeat(51)).expect("valid");
        for quoted in [
            longest.quoted(),
            longest.sequence_quoted(),
            longest.line_quoted(),
            longest.line_key(),
            longest.line_order(),
            longest.shares_quoted(),
            longest.shares_key(),
            longest.hand_over_quoted(),
        ] {
            let name = quoted.trim_matches('"');
            assert!(name.len() <= MAX_IDENTIFIER_BYTES, "{name}");
        }
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
