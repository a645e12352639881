//! Lock events are logged with their key, and owner tokens never above debug level.

use std::io::Write;
use std::sync::{Arc, Mutex};

use tracing::Level;
use verrou::{MemoryStore, Retry, Verrou};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn events_name_the_key_and_hide_the_owner() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let verrou = Verrou::builder()
        .store("m", MemoryStore::new())
        .build()
        .unwrap();
    let lock = verrou.create_lock("ledger:1").unwrap();
    assert!(lock.acquire().await.unwrap());
    lock.extend().await.unwrap();
    let other = verrou.create_lock("ledger:1").unwrap();
    assert!(!other.acquire_with(Retry::new().attempts(1)).await.unwrap());
    lock.release().await.unwrap();
    let _ = lock.release().await;
    let _ = format!(
        "{lock:?} {:?}",
        verrou.restore_lock(lock.serialize()).unwrap()
    );

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    for event in [
        "lock acquired",
        "lock extended",
        "gave up acquiring lock",
        "lock released",
    ] {
        assert!(log.contains(event), "missing {event:?} in:\n{log}");
    }
    assert!(log.contains("ledger:1"));
    assert!(
        !log.contains(lock.owner()),
        "owner token leaked into logs:\n{log}"
    );
    assert!(
        !format!("{lock:?}").contains(lock.owner()),
        "owner token leaked into Debug"
    );
}
