//! Opening connections to the hosts of the connection string (see `hosts.rs`): the pool's,
//! and the listener's own, a bare `tokio-postgres` connection outside the pool whose
//! asynchronous messages (notifications) the listener reads itself. A pooled connection
//! cannot serve the listener: its connection task drops notifications.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use deadpool_postgres::tokio_postgres::{AsyncMessage, Client, Config, Error};
use futures_util::future::BoxFuture;
use futures_util::stream::{self, Stream};
use tokio::task::JoinHandle;
use verrou_core::BoxError;

use crate::hosts::Hosts;
use crate::sql::SESSION_SETUP;
use crate::tls::MakeTls;

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

/// Connects the listener to one of `hosts` with `tls` (the pool's TLS), giving up after
/// every host has had its time (connecting, TLS handshake and authentication included).
pub(crate) fn connector(hosts: &Hosts, tls: Arc<MakeTls>) -> Connect {
    let hosts = hosts.with_default_application_name(LISTENER_APPLICATION_NAME);
    Arc::new(move || {
        let (hosts, tls) = (hosts.clone(), Arc::clone(&tls));
        Box::pin(async move {
            let budget = hosts.budget();
            let (client, mut connection) = tokio::time::timeout(budget, hosts.connect(&*tls))
                .await
                .map_err(|_| format!("no connection within {budget:?}"))??;
            let messages: Messages =
                Box::pin(stream::poll_fn(move |cx| connection.poll_message(cx)));
            Ok((client, messages))
        })
    })
}

/// How the pool of [`PostgresStore::connect`](crate::PostgresStore::connect) opens its
/// connections: to one of the hosts, as [`Hosts::connect`] picks it, with TLS as the URL's
/// `sslmode` asks, then set up for the store's statements ([`SESSION_SETUP`]). The pool
/// bounds each connection by [`Hosts::budget`].
pub(crate) struct PoolConnect {
    /// Where to connect.
    pub(crate) hosts: Hosts,
    /// How to start TLS.
    pub(crate) tls: Arc<MakeTls>,
}

impl deadpool_postgres::Connect for PoolConnect {
    fn connect(&self, _: &Config) -> BoxFuture<'_, Result<(Client, JoinHandle<()>), Error>> {
        Box::pin(async move {
            let (client, connection) = self.hosts.connect(&*self.tls).await?;
            let task = tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::warn!(%error, "verrou: pooled PostgreSQL connection failed");
                }
            });
            client.batch_execute(SESSION_SETUP).await?;
            Ok((client, task))
        })
    }
}
