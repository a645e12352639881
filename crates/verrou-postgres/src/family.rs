//! How semaphores and read-write locks are named on the server: a family's name in the
//! shares table, a share's side in a holder's entry, and the key of a family's waiting line
//! in the line the locks use too.

use verrou_core::{Error, Family, Result, Share};

/// What the line key of every semaphore and read-write lock starts with: the family's name
/// follows, then `:` and the key (see [`line_key_sql`]). Lock keys starting with it are
/// refused (see `key.rs`), so a share's line never meets a lock's.
pub(crate) const LINE_MARK: char = '\u{1}';

/// The families the server knows, with their names.
const FAMILIES: [(Family, &str); 2] = [
    (Family::Semaphore, "semaphore"),
    (Family::RwLock, "rw_lock"),
];

/// The line key of the family named by param 2 and the key `key` (SQL), as SQL.
pub(crate) fn line_key_sql(key: &str) -> String {
    format!("(chr(1) || $2::text || ':' || {key})")
}

/// The name of `family` in the `family` column and in its line keys; a family this version
/// does not know is [`Error::Unsupported`].
pub(crate) fn family_name(family: Family) -> Result<&'static str> {
    FAMILIES
        .iter()
        .find(|(known, _)| *known == family)
        .map(|(_, name)| *name)
        .ok_or(Error::Unsupported {
            store: crate::store::NAME,
            family: "this family of shares",
        })
}

/// The `side` of a holder's entry for `share`: `permit`, `read` or `write`.
pub(crate) fn side_name(share: Share) -> Result<&'static str> {
    match share {
        Share::Permit { .. } => Ok("permit"),
        Share::Read => Ok("read"),
        Share::Write => Ok("write"),
        _ => Err(Error::Unsupported {
            store: crate::store::NAME,
            family: "this kind of share",
        }),
    }
}

/// The family of a line key an announcement names, and the key of the semaphore or
/// read-write lock; no family for the line key of a lock (the key itself).
pub(crate) fn family_of(line_key: &str) -> (Option<Family>, &str) {
    let share = line_key.strip_prefix(LINE_MARK).and_then(|rest| {
        FAMILIES.iter().find_map(|(family, name)| {
            let key = rest.strip_prefix(name)?.strip_prefix(':')?;
            Some((Some(*family), key))
        })
    });
    share.unwrap_or((None, line_key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_keys_name_their_family_and_keep_the_key() {
        assert_eq!(
            family_of("\u{1}semaphore:pool: a"),
            (Some(Family::Semaphore), "pool: a")
        );
        assert_eq!(
            family_of("\u{1}rw_lock:cache"),
            (Some(Family::RwLock), "cache")
        );
        assert_eq!(
            family_of("semaphore:pool"),
            (None, "semaphore:pool"),
            "a lock's key"
        );
        assert_eq!(family_of("\u{1}other:pool"), (None, "\u{1}other:pool"));
        assert_eq!(family_name(Family::RwLock).ok(), Some("rw_lock"));
        assert_eq!(side_name(Share::Permit { limit: 3 }).ok(), Some("permit"));
    }
}
