//! Opening the listener's own connection: a plain `tokio-postgres` connection, outside the
//! pool, whose asynchronous messages (notifications) the listener reads itself. A pooled
//! connection cannot serve: its connection task drops notifications.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use deadpool_postgres::tokio_postgres::{AsyncMessage, Client, Config, Error, Socket};
use futures_util::stream::{self, Stream};
use verrou_core::BoxError;

/// The messages the server sends on its own: notifications and notices. The stream ends
/// (or yields an error) when the connection is gone.
pub(crate) type Messages = Pin<Box<dyn Stream<Item = Result<AsyncMessage, Error>> + Send>>;

/// A connection being opened.
type Connecting = Pin<Box<dyn Future<Output = Result<(Client, Messages), BoxError>> + Send>>;

/// Opens a new connection each time it is called.
pub(crate) type Connect = Arc<dyn Fn() -> Connecting + Send + Sync>;

/// The `application_name` of the listener's session (in `pg_stat_activity`), unless the
/// configuration names one.
pub const LISTENER_APPLICATION_NAME: &str = "verrou listener";

/// Connects with `config` and `tls`, giving up after `timeout` (connecting, handshake and
/// authentication included).
pub(crate) fn connector<T>(mut config: Config, tls: T, timeout: Duration) -> Connect
where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    if config.get_application_name().is_none() {
        config.application_name(LISTENER_APPLICATION_NAME);
    }
    Arc::new(move || {
        let (config, tls) = (config.clone(), tls.clone());
        Box::pin(async move {
            let (client, mut connection) = tokio::time::timeout(timeout, config.connect(tls))
                .await
                .map_err(|_| format!("no connection within {timeout:?}"))??;
            let messages: Messages =
                Box::pin(stream::poll_fn(move |cx| connection.poll_message(cx)));
            Ok((client, messages))
        })
    })
}
