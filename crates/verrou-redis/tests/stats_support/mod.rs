//! The server's command counts, for the tests that check what a store sends.

use verrou_redis::fred::prelude::{Client, ClientLike};
use verrou_redis::fred::types::{ClusterHash, CustomCommand};

/// `INFO commandstats` of a private server, as (command, calls) pairs, without the `INFO`
/// and `CONFIG RESETSTAT` calls of the test itself.
pub(crate) async fn command_calls(raw: &Client) -> Vec<(String, u64)> {
    let info: String = raw
        .custom(
            CustomCommand::new_static("INFO", ClusterHash::Random, false),
            vec!["commandstats"],
        )
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| line.strip_prefix("cmdstat_"))
        .filter_map(|line| {
            let (name, stats) = line.split_once(':')?;
            let calls = stats
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .filter(|(name, _)| name != "info" && name != "config|resetstat")
        .collect()
}

/// Sets the counts of `command_calls` back to zero.
pub(crate) async fn reset_command_calls(raw: &Client) {
    let reset = CustomCommand::new_static("CONFIG", ClusterHash::Random, false);
    let _: () = raw.custom(reset, vec!["RESETSTAT"]).await.unwrap();
}
