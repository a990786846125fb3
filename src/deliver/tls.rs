//! Outbound TLS: the two rustls client configurations a core uses, and the memory of
//! hosts whose TLS handshake failed.
//!
//! - `tls = "required"` with verification: the webpki root set and the host name
//!   (RFC 6125 as rustls implements it).
//! - Opportunistic TLS, and `required` with `tls_verify = false` (private smarthosts with
//!   self-signed certificates): encryption without authentication, as RFC 7435 describes
//!   for SMTP between MX hosts. The handshake signatures are still checked, so the peer
//!   holds the key of the certificate it shows; only the chain and name are not.
//!
//! A host whose handshake failed is remembered for `egress.tls_failure_memory_ms`, so the
//! next connections to it go out in plaintext where the policy allows, instead of failing
//! the same handshake for every message. The memory is per core and bounded.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_rustls::TlsConnector;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The connectors of one core.
#[derive(Clone)]
pub struct TlsClients {
    pub verified: TlsConnector,
    pub unverified: TlsConnector,
}

impl TlsClients {
    pub fn new() -> Result<TlsClients, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let verified = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let unverified = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoChainCheck {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth();
        Ok(TlsClients {
            verified: TlsConnector::from(Arc::new(verified)),
            unverified: TlsConnector::from(Arc::new(unverified)),
        })
    }

    pub fn connector(&self, verify: bool) -> &TlsConnector {
        if verify { &self.verified } else { &self.unverified }
    }
}

/// The name a handshake is made for: the host name, or the address for an IP literal.
pub fn server_name(host: &str, addr: std::net::IpAddr) -> ServerName<'static> {
    ServerName::try_from(host.to_string()).unwrap_or(ServerName::IpAddress(addr.into()))
}

/// Accepts any certificate chain, but checks that the handshake was signed by the key of
/// the certificate shown.
#[derive(Debug)]
struct NoChainCheck {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NoChainCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Hosts whose TLS handshake failed recently, with when each entry lapses. Bounded: when
/// full, the entry that lapses first makes room.
#[derive(Debug)]
pub struct TlsMemory {
    until_ms: HashMap<String, u64>,
    memory: Duration,
    max_count: usize,
}

impl TlsMemory {
    pub fn new(memory: Duration, max_count: usize) -> TlsMemory {
        TlsMemory {
            until_ms: HashMap::new(),
            memory,
            max_count: max_count.max(1),
        }
    }

    /// Remembers that the handshake with `host` failed at `now_ms`.
    pub fn failed(&mut self, host: &str, now_ms: u64) {
        if self.memory.is_zero() {
            return;
        }
        if self.until_ms.len() >= self.max_count && !self.until_ms.contains_key(host) {
            self.until_ms.retain(|_, until| *until > now_ms);
            if self.until_ms.len() >= self.max_count
                && let Some(first) = self
                    .until_ms
                    .iter()
                    .min_by_key(|(_, u)| **u)
                    .map(|(h, _)| h.clone())
            {
                self.until_ms.remove(&first);
            }
        }
        let until = now_ms.saturating_add(self.memory.as_millis() as u64);
        self.until_ms.insert(host.to_string(), until);
    }

    /// Whether `host` failed a handshake within the memory period.
    pub fn is_failing(&self, host: &str, now_ms: u64) -> bool {
        self.until_ms.get(host).is_some_and(|&until| until > now_ms)
    }

    pub fn len(&self) -> usize {
        self.until_ms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.until_ms.is_empty()
    }
}

/// A short description of a rustls failure for reasons and logs.
pub fn describe(e: &std::io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => format!("TLS handshake failed: {tls}"),
        None => format!("TLS handshake failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_remembered_for_a_while_and_bounded() {
        let mut m = TlsMemory::new(Duration::from_secs(10), 2);
        m.failed("a", 1_000);
        assert!(m.is_failing("a", 10_999));
        assert!(!m.is_failing("a", 11_000));
        assert!(!m.is_failing("b", 1_000));
        m.failed("b", 2_000);
        m.failed("c", 3_000);
        assert_eq!(m.len(), 2);
        assert!(!m.is_failing("a", 3_000), "the entry lapsing first made room");
        assert!(m.is_failing("b", 3_000) && m.is_failing("c", 3_000));
        let mut off = TlsMemory::new(Duration::ZERO, 2);
        off.failed("a", 0);
        assert!(off.is_empty());
    }

    #[test]
    fn both_configurations_build() {
        let clients = TlsClients::new().unwrap();
        let _ = clients.connector(true);
        let _ = clients.connector(false);
        assert!(matches!(
            server_name("mx.example.com", "127.0.0.1".parse().unwrap()),
            ServerName::DnsName(_)
        ));
        assert!(matches!(
            server_name("[127.0.0.1]", "127.0.0.1".parse().unwrap()),
            ServerName::IpAddress(_)
        ));
    }
}
