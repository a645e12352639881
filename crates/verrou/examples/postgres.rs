//! Locks in PostgreSQL: two stores with separate connection pools (as two processes would
//! have) take turns on one lock, each grant with a higher fencing token; then one hands a
//! held lock over to the other.
//!
//! Run it against private throwaway servers with
//! `./scripts/with-servers.sh cargo run -p verrou --features postgres --example postgres`, or against
//! your own with `cargo run -p verrou --features postgres --example postgres` and the server in
//! `VERROU_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`). The
//! store creates its table (`verrou`) if it is missing.

#[path = "shared/two_services.rs"]
mod two_services;

use verrou::postgres::{PostgresConfig, PostgresStore};
use verrou::{Retry, Verrou};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    two_services::exit(run().await, "postgres", "VERROU_POSTGRES_URL")
}

async fn run() -> verrou::Result<()> {
    let url = std::env::var("VERROU_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let service = || async {
        let store = PostgresStore::connect(PostgresConfig::new(url.clone())).await?;
        Verrou::builder()
            .store("postgres", store)
            .retry(Retry::new().delay("20ms").timeout("10s"))
            .build()
    };
    two_services::take_turns_and_hand_over([service().await?, service().await?]).await
}
