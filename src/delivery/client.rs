//! The HTTP client deliveries are sent with.
//!
//! hyper's pooled client over rustls, connecting through the SSRF-guarded
//! resolver. A webhook's URI and headers are prepared once, when its
//! [`Target`](super::target::Target) is compiled, so a request is assembled
//! from clones and sent as it is: no URL is parsed per request, and no
//! redirect, proxy or default-header layer runs around it (Herald follows
//! no redirects and uses no proxy).
//!
//! What the client keeps from the layers it does without:
//! - a connect timeout over the whole connection, TCP and TLS
//!   (`delivery.connect_timeout`), besides the TCP connect's own;
//! - the request's timeout, over the response's head and the part of its
//!   body that is read ([`Client::send`], [`read_body`]);
//! - TCP keepalive on idle pooled connections, and no Nagle delay.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::ssrf::{AddressPolicy, GuardedResolver};
use crate::config::delivery::DeliveryConfig;
use crate::webhook::TlsClient;

/// A request's body: the event's bytes, shared with the record.
pub type Body = Full<Bytes>;

type BoxError = Box<dyn StdError + Send + Sync>;

/// The tickets rustls keeps per host at most (`ClientSessionMemoryCache`
/// is sized in tickets, not hosts).
const TICKETS_PER_HOST: usize = 8;

/// Hosts whose sessions a client presenting its own certificate keeps: a
/// webhook has one host, and its sessions are never resumed by another
/// client.
const OWN_SESSION_HOSTS: usize = 1;

/// How long an idle pooled connection waits between TCP keepalive probes
/// (a receiver that went away is noticed before a request is sent on it).
const TCP_KEEPALIVE: Duration = Duration::from_secs(15);

/// What every client's TLS starts from: the roots trusted for receivers'
/// certificates (Mozilla's and `delivery.ca_file`'s), and the session cache
/// that the clients presenting no certificate share
/// (`delivery.tls_session_cache` hosts).
///
/// rustls's default cache keeps 256 tickets, 8 to a host: the sessions of
/// 32 hosts, and one cache per client (each tenant's too).
#[derive(Clone)]
pub(crate) struct TlsBase {
    provider: Arc<rustls::crypto::CryptoProvider>,
    roots: Arc<rustls::RootCertStore>,
    sessions: Arc<rustls::client::ClientSessionMemoryCache>,
}

impl TlsBase {
    pub(crate) fn new(config: &DeliveryConfig) -> TlsBase {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        // Each was added once already, when the configuration was read.
        let (_added, _unusable) = roots.add_parsable_certificates(config.ca_certificates.iter().cloned());
        TlsBase {
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            roots: Arc::new(roots),
            sessions: Arc::new(rustls::client::ClientSessionMemoryCache::new(
                config.tls_session_cache.saturating_mul(TICKETS_PER_HOST),
            )),
        }
    }

    /// The configuration of a client presenting `identity` (a PEM chain and
    /// key) to receivers that ask for one, with sessions of its own, or
    /// none, sharing the cache. ALPN is set by the connector (h2 and
    /// http/1.1).
    fn client_config(&self, identity: Option<&TlsClient>) -> Result<rustls::ClientConfig, String> {
        let builder = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(self.roots.clone());
        let (mut tls, sessions): (_, Arc<dyn rustls::client::ClientSessionStore>) = match identity {
            None => (builder.with_no_client_auth(), self.sessions.clone()),
            Some(identity) => (
                identity.present(builder)?,
                Arc::new(rustls::client::ClientSessionMemoryCache::new(
                    OWN_SESSION_HOSTS * TICKETS_PER_HOST,
                )),
            ),
        };
        tls.resumption = rustls::client::Resumption::store(sessions);
        Ok(tls)
    }
}

/// An HTTP client, the SSRF policy its resolver applies, and the resolver
/// (which remembers what it found, so a request counts its host slot under
/// the address it then connects to).
pub(crate) struct Client {
    http: hyper_util::client::legacy::Client<Connector, Body>,
    pub(crate) policy: Arc<AddressPolicy>,
    pub(crate) resolver: GuardedResolver,
}

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// The client's own error: connecting, or the connection failing.
    #[error(transparent)]
    Client(#[from] hyper_util::client::legacy::Error),
    /// No response head within the request's timeout.
    #[error("no response within {}", humantime::format_duration(*.0))]
    TimedOut(Duration),
}

impl SendError {
    /// Nothing was sent: the connection could not be made (a refusal, a
    /// reset, the connect timeout, a TLS handshake that failed).
    pub(crate) fn is_connect(&self) -> bool {
        matches!(self, SendError::Client(e) if e.is_connect())
    }

    /// What ended the request's connection, when it failed before the
    /// request could use it (see [`ConnectionFault`]).
    pub(crate) fn connection_fault(&self) -> Option<String> {
        let SendError::Client(e) = self else { return None };
        let mut extras = http::Extensions::new();
        e.connect_info()?.get_extras(&mut extras);
        extras.get::<ConnectionFault>()?.get().map(str::to_owned)
    }

    /// The request, or its connection, ran out of time.
    pub(crate) fn is_timeout(&self) -> bool {
        let mut current: Option<&(dyn StdError + 'static)> = Some(self);
        while let Some(e) = current {
            if e.is::<ConnectTimedOut>()
                || e.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
                || e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_timeout)
            {
                return true;
            }
            if let Some(SendError::TimedOut(_)) = e.downcast_ref::<SendError>() {
                return true;
            }
            current = e.source();
        }
        false
    }
}

/// The connection, TCP and TLS together, took longer than
/// `delivery.connect_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("connecting took longer than delivery.connect_timeout ({})", humantime::format_duration(*.0))]
pub(crate) struct ConnectTimedOut(Duration);

impl Client {
    /// A client resolving through `policy`, presenting no certificate.
    pub(crate) fn new(config: &DeliveryConfig, tls: &TlsBase, policy: &Arc<AddressPolicy>) -> Result<Client, String> {
        let resolver = GuardedResolver::new(policy.clone(), config.resolve_timeout, config.resolve_cache_ttl);
        Client::with_resolver(config, tls.client_config(None)?, policy, resolver)
    }

    /// `self`'s policy and resolver (and so its resolutions), presenting
    /// `identity` to receivers that ask for a client certificate.
    pub(crate) fn presenting(
        &self,
        config: &DeliveryConfig,
        tls: &TlsBase,
        identity: &TlsClient,
    ) -> Result<Client, String> {
        Client::with_resolver(
            config,
            tls.client_config(Some(identity))?,
            &self.policy,
            self.resolver.clone(),
        )
    }

    fn with_resolver(
        config: &DeliveryConfig,
        tls: rustls::ClientConfig,
        policy: &Arc<AddressPolicy>,
        resolver: GuardedResolver,
    ) -> Result<Client, String> {
        let mut tcp = HttpConnector::new_with_resolver(resolver.clone());
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(config.connect_timeout));
        tcp.set_keepalive(Some(TCP_KEEPALIVE));
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(tcp);
        let connector = Connector {
            inner: tls,
            timeout: config.connect_timeout,
        };
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(config.idle_connections_per_host())
            .pool_idle_timeout(config.pool_idle_timeout)
            .build(connector);
        Ok(Client {
            http,
            policy: policy.clone(),
            resolver,
        })
    }

    /// Sends `request`, waiting for the response's head for at most
    /// `timeout`.
    pub(crate) async fn send(
        &self,
        request: http::Request<Body>,
        timeout: Duration,
    ) -> Result<http::Response<Incoming>, SendError> {
        match tokio::time::timeout(timeout, self.http.request(request)).await {
            Ok(sent) => Ok(sent?),
            Err(_) => Err(SendError::TimedOut(timeout)),
        }
    }
}

/// At most `max` bytes of `body`, reading until `deadline`: what the
/// receiver said, for diagnostics. A body cut short, failing or late ends
/// the excerpt where it is.
pub(crate) async fn read_body(mut body: Incoming, max: usize, deadline: tokio::time::Instant) -> Vec<u8> {
    let mut buf = Vec::new();
    while buf.len() < max {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(chunk) = frame.into_data() {
                    let room = max - buf.len();
                    buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
            }
            Ok(None | Some(Err(_))) | Err(_) => break,
        }
    }
    buf
}

/// The address a response came from (where its connection was made to).
pub(crate) fn remote_addr<B>(response: &http::Response<B>) -> Option<std::net::SocketAddr> {
    response
        .extensions()
        .get::<hyper_util::client::legacy::connect::HttpInfo>()
        .map(|info| info.remote_addr())
}

/// hyper-rustls's connector over the guarded resolver, the whole connection
/// (TCP and TLS) within `delivery.connect_timeout`.
#[derive(Clone)]
struct Connector {
    inner: HttpsConnector<HttpConnector<GuardedResolver>>,
    timeout: Duration,
}

type Connection = MaybeHttpsStream<TokioIo<TcpStream>>;

/// What ended a connection, as its stream saw it: the first error reading
/// or writing it. A receiver that refuses Herald's client certificate does
/// so after the TLS 1.3 handshake has completed on Herald's side, with an
/// alert the connection reads a moment later; a request that finds its new
/// connection closed by then fails only as "connection was not ready",
/// and the alert, which says why, is kept here.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnectionFault(Arc<std::sync::OnceLock<String>>);

impl ConnectionFault {
    fn note<T>(&self, result: &Poll<std::io::Result<T>>) {
        if let Poll::Ready(Err(e)) = result {
            let _ = self.0.set(super::error_chain(e));
        }
    }

    /// The error that ended the connection, if one did.
    pub(crate) fn get(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}

/// A connection whose read and write errors are noted in its
/// [`ConnectionFault`], which its requests' errors carry.
struct Watched {
    inner: Connection,
    fault: ConnectionFault,
}

impl hyper::rt::Read for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.fault.note(&result);
        result
    }
}

impl hyper::rt::Write for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.fault.note(&result);
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.fault.note(&result);
        result
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.fault.note(&result);
        result
    }
}

impl hyper_util::client::legacy::connect::Connection for Watched {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        self.inner.connected().extra(self.fault.clone())
    }
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = Watched;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Watched, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(connected) => connected.map(|inner| Watched {
                    inner,
                    fault: ConnectionFault::default(),
                }),
                Err(_) => Err(Box::new(ConnectTimedOut(timeout)) as BoxError),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection the peer resets: the reset is noted, and carried in
    /// what the client learns of the connection.
    #[tokio::test]
    async fn a_connection_s_read_error_is_noted_and_carried_with_it() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        // Closing with a zero linger resets the connection.
        server.set_zero_linger().unwrap();
        drop(server);
        let mut watched = Watched {
            inner: MaybeHttpsStream::Http(TokioIo::new(tcp)),
            fault: ConnectionFault::default(),
        };
        let mut buf = [0u8; 16];
        let read = std::future::poll_fn(|cx| {
            let mut buf = hyper::rt::ReadBuf::new(&mut buf);
            hyper::rt::Read::poll_read(Pin::new(&mut watched), cx, buf.unfilled())
        })
        .await;
        assert!(read.is_err(), "the reset is a read error: {read:?}");
        let fault = watched.fault.get().map(str::to_owned);
        assert!(
            fault.as_deref().is_some_and(|f| f.contains("reset")),
            "noted: {fault:?}"
        );
        let mut extras = http::Extensions::new();
        hyper_util::client::legacy::connect::Connection::connected(&watched).get_extras(&mut extras);
        assert_eq!(
            extras.get::<ConnectionFault>().and_then(ConnectionFault::get),
            fault.as_deref(),
            "the connection's info carries it, as a request's error does"
        );
    }
}
