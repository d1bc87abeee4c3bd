//! Connection setup every topology shares: credentials, TLS roots, the crypto provider and the
//! timeouts a connection is opened with. A single server, the nodes of a cluster (configured or
//! discovered), the Sentinels' primary and the change feed's connections are all set up here.

use std::time::Duration;

use deadpool_redis::redis::{
    AsyncConnectionConfig, Client, ConnectionInfo, RedisConnectionInfo, RedisResult,
    TlsCertificates,
};
use flagstore::{Error, Result};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::error::BACKEND;

/// The user name and password a connection authenticates with, whatever the topology.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
}

impl Credentials {
    /// `settings` with these credentials in place of any it had.
    pub(crate) fn apply(&self, mut settings: RedisConnectionInfo) -> RedisConnectionInfo {
        if let Some(username) = &self.username {
            settings = settings.set_username(username);
        }
        if let Some(password) = &self.password {
            settings = settings.set_password(password);
        }
        settings
    }

    /// `info` with these credentials in place of any it had.
    pub(crate) fn apply_to(&self, info: ConnectionInfo) -> ConnectionInfo {
        let settings = self.apply(info.redis_settings().clone());
        info.set_redis_settings(settings)
    }
}

/// The timeouts a connection is opened with: connecting, and each answer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub(crate) connect: Duration,
    pub(crate) request: Duration,
}

impl Timeouts {
    /// The driver's settings for a connection with both timeouts.
    pub(crate) fn connection_config(&self) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect))
            .set_response_timeout(Some(self.request))
    }

    /// The time to connect and get one answer.
    pub(crate) fn connect_and_answer(&self) -> Duration {
        self.connect + self.request
    }
}

/// PEM root certificates, checked to hold at least one certificate, in the form the driver takes.
pub(crate) fn root_certificates(pem: &[u8]) -> Result<TlsCertificates> {
    let parsed: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::config_caused_by(BACKEND, "the TLS root certificate is unusable", e))?;
    if parsed.is_empty() {
        return Err(Error::config(
            BACKEND,
            "the TLS root certificate is unusable: no PEM certificate found",
        ));
    }
    Ok(TlsCertificates {
        client_tls: None,
        root_cert: Some(pem.to_vec()),
    })
}

/// A client on `info`, verifying TLS against `roots` when given, else the system's.
pub(crate) fn client(info: ConnectionInfo, roots: Option<&TlsCertificates>) -> RedisResult<Client> {
    match roots {
        Some(roots) => Client::build_with_tls(info, roots.clone()),
        None => Client::open(info),
    }
}

/// `redis://host` or `rediss://host` for a node given as `host:port`; a URL stays as it is.
#[cfg(any(feature = "cluster", feature = "sentinel"))]
pub(crate) fn node_url(tls: bool, host: &str) -> String {
    if host.contains("://") {
        host.to_owned()
    } else if tls {
        format!("rediss://{host}")
    } else {
        format!("redis://{host}")
    }
}

/// The redis crate builds its TLS config from rustls's process-wide default provider (there is
/// no per-connection hook), so one must be installed: ring, unless the application installed
/// another first. Documented in the README and on `url`.
pub(crate) fn use_process_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
