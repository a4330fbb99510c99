//! Certificates for test servers that speak TLS: a CA made for the test and a certificate it
//! signed for `localhost` (and `127.0.0.1`), so a client under test can be given the CA to
//! trust, or another one to refuse.

/// A CA and the `localhost` certificate it signed, in the forms servers and clients take.
pub struct LocalhostCertificate {
    /// The CA's certificate (PEM): what the client trusts.
    pub ca_pem: String,
    /// The server's certificate (PEM and DER).
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    /// The server's private key (PEM and PKCS#8 DER).
    pub key_pem: String,
    pub key_der: Vec<u8>,
}

impl LocalhostCertificate {
    /// A fresh CA ("shop test CA") and a certificate for `localhost` and `127.0.0.1`.
    pub fn generate() -> Self {
        Self::for_names(&["localhost", "127.0.0.1"])
    }

    /// A fresh CA and a certificate for these names only.
    pub fn for_names(names: &[&str]) -> Self {
        let ca = rcgen::KeyPair::generate().expect("a CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "shop test CA");
        let ca_cert = ca_params.self_signed(&ca).expect("a CA certificate");
        let key = rcgen::KeyPair::generate().expect("a server key");
        let cert = rcgen::CertificateParams::new(names.iter().map(|name| (*name).to_owned()).collect::<Vec<_>>())
            .expect("server parameters")
            .signed_by(&key, &ca_cert, &ca)
            .expect("a server certificate");
        Self {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        }
    }

    /// A TLS acceptor serving this certificate (rustls on ring).
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        use tokio_rustls::rustls;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![self.cert_der.clone().into()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(self.key_der.clone().into()),
            )
            .expect("the server certificate");
        tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config))
    }

    /// The CA written to a fresh file in the temp directory (the caller removes it).
    pub fn write_ca(&self, name: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("{name}-{}.pem", uuid::Uuid::now_v7().simple()));
        std::fs::write(&path, &self.ca_pem).expect("the CA file");
        path
    }
}
