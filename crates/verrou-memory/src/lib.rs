//! In-process memory store for [verrou](https://docs.rs/verrou): locks shared by the tasks
//! and threads of one process, with no server.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> verrou_core::Result<()> {
//! use verrou_core::LockFactory;
//! use verrou_memory::MemoryStore;
//!
//! let factory = LockFactory::new(MemoryStore::new());
//! let lock = factory.create_lock("cron:nightly")?;
//! assert!(lock.acquire_immediately().await?);
//! lock.release().await?;
//! # Ok(()) }
//! ```

mod expiry;
mod feed;
mod line;
mod shard;
mod shares;
mod store;
mod tokens;

pub use store::MemoryStore;
