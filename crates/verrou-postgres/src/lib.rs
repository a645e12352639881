//! PostgreSQL store for verrou, on deadpool-postgres and tokio-postgres.
