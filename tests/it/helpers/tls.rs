//! A test certificate authority ([`TestCa`]), whose certificates receivers
//! serve over HTTPS on 127.0.0.1 ([`TestReceiver::start_tls`]), and whose
//! client certificates receivers may require ([`TestCa::client`],
//! [`TestReceiver::start_mtls`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate authority made for one test: no system trusts it.
pub struct TestCa {
    certificate: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().expect("a CA key");
        let certificate = params.self_signed(&key).expect("a CA certificate");
        TestCa { certificate, key }
    }

    /// The CA's certificate, PEM.
    pub fn pem(&self) -> String {
        self.certificate.pem()
    }

    /// Writes [`TestCa::pem`] into `dir`; its path.
    pub fn write_pem(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, self.pem()).expect("CA file written");
        path
    }

    /// A client certificate this CA signed for `name`, and its private key,
    /// both PEM.
    pub fn client(&self, name: &str) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("client certificate parameters");
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().expect("a client key");
        let certificate = params
            .signed_by(&key, &self.certificate, &self.key)
            .expect("a client certificate");
        (certificate.pem(), key.serialize_pem())
    }

    /// A server configuration with a certificate this CA signed for
    /// `localhost` and 127.0.0.1.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server_config_with(None)
    }

    /// [`TestCa::server_config`], refusing every client without a
    /// certificate `clients` signed.
    pub fn server_config_requiring(&self, clients: &TestCa) -> Arc<rustls::ServerConfig> {
        self.server_config_with(Some(clients))
    }

    fn server_config_with(&self, clients: Option<&TestCa>) -> Arc<rustls::ServerConfig> {
        let params = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("server certificate parameters");
        let key = rcgen::KeyPair::generate().expect("a server key");
        let certificate = params
            .signed_by(&key, &self.certificate, &self.key)
            .expect("a server certificate");
        let chain: Vec<CertificateDer<'static>> = vec![certificate.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("TLS versions");
        let builder = match clients {
            None => builder.with_no_client_auth(),
            Some(clients) => {
                let mut roots = rustls::RootCertStore::empty();
                roots
                    .add(clients.certificate.der().clone())
                    .expect("the client CA as a root");
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .expect("a client certificate verifier");
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder.with_single_cert(chain, key).expect("a server configuration");
        Arc::new(config)
    }
}
