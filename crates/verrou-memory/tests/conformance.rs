//! The store conformance suite on the memory store.

use std::sync::Arc;

use verrou_core::LockStore;
use verrou_memory::MemoryStore;

/// Every case's stores share one map, as the tasks of one process do.
async fn new_store() -> Arc<dyn LockStore> {
    static SHARED: std::sync::OnceLock<MemoryStore> = std::sync::OnceLock::new();
    Arc::new(SHARED.get_or_init(MemoryStore::new).clone())
}

verrou_core::conformance_tests!(new_store);
verrou_core::line_tests!(new_store);
verrou_core::semaphore_tests!(new_store);
verrou_core::rw_lock_tests!(new_store);
