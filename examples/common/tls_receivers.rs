//! Many HTTPS receivers, each its own address on this machine (127.0.0.2,
//! 127.0.0.3, ...), port 8443, serving a certificate for its address that a
//! certificate authority made for the run signed; the requests go to one
//! axum app. Counts the TLS handshakes (full or resumed) and the
//! connections (accepted, and open at most at once).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// What the receivers saw.
#[derive(Default)]
pub struct TlsCounts {
    pub full: AtomicU64,
    pub resumed: AtomicU64,
    pub refused: AtomicU64,
    pub open: AtomicU64,
    pub most_open: AtomicU64,
}

/// The receivers: where each listens, and the CA's certificate file.
pub struct TlsReceivers {
    pub addrs: Vec<SocketAddr>,
    pub ca_file: PathBuf,
    pub counts: Arc<TlsCounts>,
}

/// The `i`-th receiver's address: 127.0.0.2 on.
fn address(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 2)) + i as u32))
}

impl TlsReceivers {
    /// Starts `hosts` receivers serving `app`; writes the CA into `dir`.
    pub async fn start(hosts: usize, app: axum::Router, dir: &Path) -> TlsReceivers {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Herald bench receivers CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        let ca_file = dir.join("bench-receivers-ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let counts = Arc::new(TlsCounts::default());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut addrs = Vec::with_capacity(hosts);
        for i in 0..hosts {
            let ip = address(i);
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(vec![ip.to_string()])
                .unwrap()
                .signed_by(&key, &ca, &ca_key)
                .unwrap();
            let config = rustls::ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![cert.der().clone()],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
                )
                .unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
            let addr = SocketAddr::new(ip, 8443);
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .unwrap_or_else(|e| panic!("cannot listen on {addr}: {e}"));
            addrs.push(addr);
            let (app, counts) = (app.clone(), counts.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((socket, _)) = listener.accept().await else {
                        continue;
                    };
                    let (acceptor, app, counts) = (acceptor.clone(), app.clone(), counts.clone());
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(socket).await else {
                            counts.refused.fetch_add(1, Ordering::Relaxed);
                            return;
                        };
                        match tls.get_ref().1.handshake_kind() {
                            Some(rustls::HandshakeKind::Resumed) => counts.resumed.fetch_add(1, Ordering::Relaxed),
                            _ => counts.full.fetch_add(1, Ordering::Relaxed),
                        };
                        let open = counts.open.fetch_add(1, Ordering::Relaxed) + 1;
                        counts.most_open.fetch_max(open, Ordering::Relaxed);
                        let service = hyper_util::service::TowerToHyperService::new(app);
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                            .await;
                        counts.open.fetch_sub(1, Ordering::Relaxed);
                    });
                }
            });
        }
        TlsReceivers { addrs, ca_file, counts }
    }
}
