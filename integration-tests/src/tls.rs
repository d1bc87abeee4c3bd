//! Throwaway certificates for TLS tests: a CA and a server certificate for 127.0.0.1/localhost.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// PEM files written into a directory.
#[derive(Debug, Clone)]
pub struct TestCertificates {
    /// The CA certificate clients must trust.
    pub ca_pem: String,
    /// Path of the CA certificate.
    pub ca_file: PathBuf,
    /// Path of the server certificate (signed by the CA, for `127.0.0.1` and `localhost`).
    pub cert_file: PathBuf,
    /// Path of the server's private key.
    pub key_file: PathBuf,
}

/// Generates a fresh CA and server certificate and writes them into `dir`.
pub fn generate(dir: &Path) -> TestCertificates {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "flagstore test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

    let server_key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let server = params.signed_by(&server_key, &ca).unwrap();

    let certs = TestCertificates {
        ca_pem: ca.pem(),
        ca_file: dir.join("ca.crt"),
        cert_file: dir.join("server.crt"),
        key_file: dir.join("server.key"),
    };
    fs::write(&certs.ca_file, &certs.ca_pem).unwrap();
    fs::write(&certs.cert_file, server.pem()).unwrap();
    fs::write(&certs.key_file, server_key.serialize_pem()).unwrap();
    certs
}
