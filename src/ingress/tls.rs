//! Inbound TLS: the certificate corerelay presents for STARTTLS (RFC 3207) and on
//! implicit-TLS listeners (RFC 8314), as an immutable snapshot that can be swapped whole.
//!
//! A [`TlsSnapshot`] is built once from the configuration: the PEM certificate chain and
//! key of `tls.cert_file`/`tls.key_file`, or, when none is configured, a self-signed
//! certificate for `server.hostname` made at start with rcgen, so that even the embedded
//! default offers STARTTLS (opportunistic TLS between MTAs does not verify certificates;
//! submission clients are given a real certificate by configuration). Every core reads
//! the snapshot through its own [`TlsStore`], whose `replace` is how a reload (issue 7)
//! installs a new certificate: connections already running keep the snapshot they began
//! with, new ones get the new one.
//!
//! Only the ring crypto provider is used: the server configuration is built with it
//! explicitly, and [`ensure_provider`] installs it as the process default (once) for any
//! code that asks rustls for the default.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_rustls::TlsAcceptor;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::config::TlsSettings;

/// Installs ring as rustls' process-wide default provider. Safe to call any number of
/// times from any thread: "already installed" is not an error here.
pub fn ensure_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Where a snapshot's certificate came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    Files { cert: PathBuf, key: PathBuf },
    SelfSigned { hostname: String },
}

/// One certificate and key, ready to accept TLS connections.
#[derive(Debug)]
pub struct TlsSnapshot {
    server_config: Arc<ServerConfig>,
    source: TlsSource,
    /// The leaf certificate, PEM (so tests and operators can trust a self-signed one).
    certificate_pem: String,
}

impl TlsSnapshot {
    /// The snapshot the configuration asks for.
    pub fn load(settings: &TlsSettings, hostname: &str) -> Result<TlsSnapshot, String> {
        match &settings.files {
            Some((cert, key)) => TlsSnapshot::from_files(cert, key),
            None => TlsSnapshot::self_signed(hostname),
        }
    }

    /// A PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_files(cert: &Path, key: &Path) -> Result<TlsSnapshot, String> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(|e| format!("tls.cert_file {}: {e}", cert.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("tls.cert_file {}: {e}", cert.display()))?;
        let Some(leaf) = chain.first() else {
            return Err(format!(
                "tls.cert_file {}: no certificate in the file",
                cert.display()
            ));
        };
        let certificate_pem = pem("CERTIFICATE", leaf);
        let source = TlsSource::Files {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        };
        let key =
            PrivateKeyDer::from_pem_file(key).map_err(|e| format!("tls.key_file {}: {e}", key.display()))?;
        Ok(TlsSnapshot {
            server_config: server_config(chain, key)?,
            source,
            certificate_pem,
        })
    }

    /// A fresh self-signed certificate for `hostname` (ECDSA P-256).
    pub fn self_signed(hostname: &str) -> Result<TlsSnapshot, String> {
        let made = rcgen::generate_simple_self_signed(vec![hostname.to_string()])
            .map_err(|e| format!("cannot make a self-signed certificate for {hostname}: {e}"))?;
        let leaf = made.cert.der().clone();
        let certificate_pem = made.cert.pem();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
        Ok(TlsSnapshot {
            server_config: server_config(vec![leaf], key)?,
            source: TlsSource::SelfSigned {
                hostname: hostname.to_string(),
            },
            certificate_pem,
        })
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.server_config.clone())
    }

    pub fn source(&self) -> &TlsSource {
        &self.source
    }

    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS protocol versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("the TLS certificate and key do not make a server configuration: {e}"))?;
    Ok(Arc::new(config))
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A core's current TLS snapshot: read at each handshake, replaced whole on reload.
#[derive(Debug)]
pub struct TlsStore {
    current: RefCell<Arc<TlsSnapshot>>,
}

impl TlsStore {
    pub fn new(snapshot: Arc<TlsSnapshot>) -> TlsStore {
        TlsStore {
            current: RefCell::new(snapshot),
        }
    }

    /// The snapshot new handshakes use.
    pub fn get(&self) -> Arc<TlsSnapshot> {
        self.current.borrow().clone()
    }

    /// Installs a new snapshot; returns the one it replaces.
    pub fn replace(&self, snapshot: Arc<TlsSnapshot>) -> Arc<TlsSnapshot> {
        self.current.replace(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn self_signed_and_file_certificates_load_and_swap() {
        ensure_provider();
        ensure_provider();
        let made = TlsSnapshot::self_signed("relay.test").unwrap();
        assert!(made.certificate_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(
            made.source(),
            &TlsSource::SelfSigned {
                hostname: "relay.test".into()
            }
        );

        let dir = tempfile::tempdir().unwrap();
        let issued = rcgen::generate_simple_self_signed(vec!["mx.test".to_string()]).unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert, issued.cert.pem()).unwrap();
        std::fs::write(&key, issued.signing_key.serialize_pem()).unwrap();
        let settings = TlsSettings {
            files: Some((cert.clone(), key.clone())),
            handshake_timeout: Duration::from_secs(1),
        };
        let loaded = TlsSnapshot::load(&settings, "ignored").unwrap();
        assert_eq!(loaded.certificate_pem(), issued.cert.pem().replace("\r\n", "\n"));

        let store = TlsStore::new(Arc::new(made));
        let old = store.replace(Arc::new(loaded));
        assert!(matches!(old.source(), TlsSource::SelfSigned { .. }));
        assert!(matches!(store.get().source(), TlsSource::Files { .. }));

        std::fs::write(&key, "not a key").unwrap();
        let e = TlsSnapshot::from_files(&cert, &key).unwrap_err();
        assert!(e.contains("tls.key_file"), "{e}");
        let e = TlsSnapshot::from_files(&dir.path().join("missing.pem"), &key).unwrap_err();
        assert!(e.contains("tls.cert_file"), "{e}");
    }
}
