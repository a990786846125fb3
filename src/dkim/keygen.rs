//! New DKIM keys for `corerelay dkim keygen`: the PEM private key to store and the TXT
//! record to publish.
//!
//! Ed25519 keys come from ring. ring cannot generate RSA keys, so RSA keys come from the
//! RustCrypto `rsa` crate through mail-auth's `generate` feature; that crate is used for
//! nothing else (signing is ring's), so its known timing side channel in RSA decryption
//! and signing (RUSTSEC-2023-0071) does not apply. Both are written as PKCS#8 PEM.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use mail_auth::common::crypto::Ed25519Key;
use mail_auth::dkim::generate::DkimKeyPair;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::DkimError;
use super::keys::{PrivateKey, der_tlv, rsa_algorithm_identifier, rsa_from_pkcs1};

/// TXT records are made of strings of at most this many bytes (RFC 1035 §3.3.14).
const DNS_TXT_STRING_LEN_BYTES: usize = 255;
const PEM_LINE_LEN_BYTES: usize = 64;

/// Which key to make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeygenAlgorithm {
    Rsa2048,
    Rsa3072,
    Ed25519,
}

impl KeygenAlgorithm {
    /// Parses the CLI spelling: `rsa` (2048 bits), `rsa2048`, `rsa3072`, `ed25519`.
    pub fn parse(s: &str) -> Option<KeygenAlgorithm> {
        match s.to_ascii_lowercase().as_str() {
            "rsa" | "rsa2048" | "rsa-2048" => Some(KeygenAlgorithm::Rsa2048),
            "rsa3072" | "rsa-3072" => Some(KeygenAlgorithm::Rsa3072),
            "ed25519" => Some(KeygenAlgorithm::Ed25519),
            _ => None,
        }
    }
}

/// A new key and what to publish for it.
#[derive(Clone, PartialEq, Eq)]
pub struct GeneratedKey {
    /// `-----BEGIN PRIVATE KEY-----` (PKCS#8), for the key file.
    pub private_key_pem: String,
    /// Where the record goes: `<selector>._domainkey.<domain>`.
    pub dns_name: String,
    /// The record's text: `v=DKIM1; k=…; p=…`.
    pub dns_txt: String,
}

impl std::fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("dns_name", &self.dns_name)
            .field("dns_txt", &self.dns_txt)
            .finish_non_exhaustive()
    }
}

impl GeneratedKey {
    /// The record as a zone-file line, split into strings of at most 255 bytes (an RSA
    /// record is longer than one string may be).
    pub fn zone_file_line(&self) -> String {
        let strings: Vec<String> = self
            .dns_txt
            .as_bytes()
            .chunks(DNS_TXT_STRING_LEN_BYTES)
            .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
            .collect();
        format!("{}. IN TXT ( {} )", self.dns_name, strings.join(" "))
    }
}

/// Generates a key for `domain` and `selector`.
pub fn generate(algorithm: KeygenAlgorithm, domain: &str, selector: &str) -> Result<GeneratedKey, DkimError> {
    let pkcs8 = match algorithm {
        KeygenAlgorithm::Rsa2048 => rsa_pkcs8(2048)?,
        KeygenAlgorithm::Rsa3072 => rsa_pkcs8(3072)?,
        KeygenAlgorithm::Ed25519 => {
            Ed25519Key::generate_pkcs8().map_err(|e| DkimError::Crypto(e.to_string()))?
        }
    };
    // Loading the key back checks it and gives the public half in the DNS form.
    let key = PrivateKey::from_der(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.as_slice())))?;
    Ok(GeneratedKey {
        private_key_pem: pem("PRIVATE KEY", &pkcs8),
        dns_name: format!("{selector}._domainkey.{domain}"),
        dns_txt: key.dns_record(),
    })
}

/// A new RSA key as PKCS#8 DER: the PKCS#1 key in a PrivateKeyInfo.
fn rsa_pkcs8(bits: usize) -> Result<Vec<u8>, DkimError> {
    let pair = DkimKeyPair::generate_rsa(bits).map_err(|e| DkimError::Crypto(e.to_string()))?;
    let pkcs1 = pair.private_key();
    rsa_from_pkcs1(pkcs1)?;
    let mut content = der_tlv(0x02, &[0]); // version 0
    content.extend_from_slice(&rsa_algorithm_identifier());
    content.extend_from_slice(&der_tlv(0x04, pkcs1));
    Ok(der_tlv(0x30, &content))
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(PEM_LINE_LEN_BYTES) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::dkim::{KeyAlgorithm, Signer, testkit};

    const MESSAGE: &[u8] = b"From: a@example.org\r\nSubject: k\r\n\r\nbody\r\n";

    fn sign_and_verify(generated: &GeneratedKey) {
        let key = PrivateKey::from_pem(generated.private_key_pem.as_bytes()).unwrap();
        assert_eq!(key.dns_record(), generated.dns_txt);
        let signer = Signer::with_default_headers("example.org", "sel", key);
        let field = signer.sign(&[Bytes::from_static(MESSAGE)]).unwrap();
        let signed = [field.as_ref(), MESSAGE].concat();
        assert_eq!(
            testkit::verify(&signed, &[(&signer, &generated.dns_txt)]),
            vec![true]
        );
    }

    #[test]
    fn ed25519_keys_sign_and_verify() {
        let g = generate(KeygenAlgorithm::Ed25519, "example.org", "sel").unwrap();
        assert!(g.private_key_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(g.dns_txt.starts_with("v=DKIM1; k=ed25519; p="));
        assert_eq!(g.dns_name, "sel._domainkey.example.org");
        assert!(!format!("{g:?}").contains("PRIVATE"));
        sign_and_verify(&g);
        let other = generate(KeygenAlgorithm::Ed25519, "example.org", "sel").unwrap();
        assert_ne!(other.dns_txt, g.dns_txt);
    }

    #[test]
    fn rsa_keys_sign_and_verify() {
        let g = generate(KeygenAlgorithm::Rsa2048, "example.org", "sel").unwrap();
        assert!(
            g.dns_txt
                .starts_with("v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A")
        );
        let key = PrivateKey::from_pem(g.private_key_pem.as_bytes()).unwrap();
        assert_eq!(key.algorithm(), KeyAlgorithm::Rsa);
        sign_and_verify(&g);
        let line = g.zone_file_line();
        assert!(line.starts_with("sel._domainkey.example.org. IN TXT ( \"v=DKIM1; k=rsa; p="));
        assert_eq!(line.matches('"').count(), 4, "two strings: {line}");
    }

    #[test]
    fn algorithm_names_parse() {
        assert_eq!(KeygenAlgorithm::parse("RSA"), Some(KeygenAlgorithm::Rsa2048));
        assert_eq!(KeygenAlgorithm::parse("rsa3072"), Some(KeygenAlgorithm::Rsa3072));
        assert_eq!(KeygenAlgorithm::parse("ed25519"), Some(KeygenAlgorithm::Ed25519));
        assert_eq!(KeygenAlgorithm::parse("dsa"), None);
    }
}
