//! DKIM private keys: loading them from PEM and describing their public half for DNS.
//!
//! Accepted: RSA as PKCS#8 (`BEGIN PRIVATE KEY`) or PKCS#1 (`BEGIN RSA PRIVATE KEY`, what
//! `openssl genrsa` and `openssl rsa -traditional` write), 2048 bits or more (ring refuses
//! less); Ed25519 as PKCS#8 v1 or v2. OpenSSL writes Ed25519 as PKCS#8 v1 without the
//! public key, which ring's strict loader refuses, so the "maybe unchecked" loader is used.
//! The algorithm of a PKCS#8 key is read from its AlgorithmIdentifier, not guessed by
//! trying loaders in turn, so an error names the real problem.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use mail_auth::common::crypto::{DkimKey, Ed25519Key, RsaKey, Sha256};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer};

use super::DkimError;

/// rsaEncryption, 1.2.840.113549.1.1.1 (the OID's content bytes).
pub(crate) const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// id-Ed25519, 1.3.101.112.
pub(crate) const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

const DER_SEQUENCE: u8 = 0x30;
const DER_INTEGER: u8 = 0x02;
const DER_OID: u8 = 0x06;
const DER_NULL: u8 = 0x05;
const DER_BIT_STRING: u8 = 0x03;

/// The DKIM signing algorithms (`a=rsa-sha256`, `a=ed25519-sha256`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAlgorithm {
    Rsa,
    Ed25519,
}

impl KeyAlgorithm {
    /// The `k=` tag value of the DNS record.
    pub fn dns_k(self) -> &'static str {
        match self {
            KeyAlgorithm::Rsa => "rsa",
            KeyAlgorithm::Ed25519 => "ed25519",
        }
    }
}

/// A loaded private key, ready to sign.
pub struct PrivateKey {
    key: DkimKey,
    algorithm: KeyAlgorithm,
    /// RSA: the PKCS#1 RSAPublicKey DER. Ed25519: the 32 raw bytes.
    public_key: Vec<u8>,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the private half.
        f.debug_struct("PrivateKey")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl PrivateKey {
    /// Loads the first private key found in PEM text.
    pub fn from_pem(pem: &[u8]) -> Result<PrivateKey, DkimError> {
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| DkimError::Pem(e.to_string()))?;
        PrivateKey::from_der(der)
    }

    /// Loads a DER private key (PKCS#8 RSA or Ed25519, or PKCS#1 RSA).
    pub fn from_der(der: PrivateKeyDer<'_>) -> Result<PrivateKey, DkimError> {
        match der {
            PrivateKeyDer::Pkcs1(pkcs1) => PrivateKey::rsa(PrivateKeyDer::Pkcs1(pkcs1)),
            PrivateKeyDer::Pkcs8(pkcs8) => match pkcs8_algorithm(pkcs8.secret_pkcs8_der()) {
                Some(oid) if oid == OID_RSA_ENCRYPTION => PrivateKey::rsa(PrivateKeyDer::Pkcs8(pkcs8)),
                Some(oid) if oid == OID_ED25519 => PrivateKey::ed25519(&pkcs8),
                Some(_) => Err(DkimError::UnsupportedKey(
                    "PKCS#8 key of an algorithm other than RSA or Ed25519",
                )),
                None => Err(DkimError::BadKey("not a PKCS#8 PrivateKeyInfo".into())),
            },
            PrivateKeyDer::Sec1(_) => Err(DkimError::UnsupportedKey(
                "EC (SEC1) keys are not DKIM algorithms",
            )),
            _ => Err(DkimError::UnsupportedKey("unknown private key encoding")),
        }
    }

    fn rsa(der: PrivateKeyDer<'_>) -> Result<PrivateKey, DkimError> {
        let key = RsaKey::<Sha256>::from_key_der(der).map_err(|e| DkimError::BadKey(e.to_string()))?;
        let public_key = key.public_key();
        Ok(PrivateKey {
            key: DkimKey::Rsa(key),
            algorithm: KeyAlgorithm::Rsa,
            public_key,
        })
    }

    fn ed25519(pkcs8: &PrivatePkcs8KeyDer<'_>) -> Result<PrivateKey, DkimError> {
        let key = Ed25519Key::from_pkcs8_maybe_unchecked_der(pkcs8.secret_pkcs8_der())
            .map_err(|e| DkimError::BadKey(e.to_string()))?;
        let public_key = key.public_key();
        Ok(PrivateKey {
            key: DkimKey::Ed25519(key),
            algorithm: KeyAlgorithm::Ed25519,
            public_key,
        })
    }

    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The `p=` value: base64 of the SubjectPublicKeyInfo for RSA (what OpenDKIM and most
    /// DNS providers publish; verifiers also accept it), of the raw key for Ed25519 (RFC 8463).
    pub fn dns_public_key(&self) -> String {
        match self.algorithm {
            KeyAlgorithm::Rsa => STANDARD.encode(rsa_spki(&self.public_key)),
            KeyAlgorithm::Ed25519 => STANDARD.encode(&self.public_key),
        }
    }

    /// The TXT record to publish at `<selector>._domainkey.<domain>`.
    pub fn dns_record(&self) -> String {
        format!(
            "v=DKIM1; k={}; p={}",
            self.algorithm.dns_k(),
            self.dns_public_key()
        )
    }

    pub(crate) fn into_inner(self) -> DkimKey {
        self.key
    }
}

/// Loads an RSA key from PKCS#1 DER (used by key generation).
pub(crate) fn rsa_from_pkcs1(der: &[u8]) -> Result<PrivateKey, DkimError> {
    PrivateKey::rsa(PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der)))
}

/// The algorithm OID of a PKCS#8 PrivateKeyInfo:
/// `SEQUENCE { INTEGER version, SEQUENCE { OID algorithm, … }, … }`.
fn pkcs8_algorithm(der: &[u8]) -> Option<&[u8]> {
    let (tag, info, _) = der_next(der)?;
    if tag != DER_SEQUENCE {
        return None;
    }
    let (tag, _version, rest) = der_next(info)?;
    if tag != DER_INTEGER {
        return None;
    }
    let (tag, algorithm_id, _) = der_next(rest)?;
    if tag != DER_SEQUENCE {
        return None;
    }
    let (tag, oid, _) = der_next(algorithm_id)?;
    (tag == DER_OID).then_some(oid)
}

/// One DER element: its tag, its content and what follows it.
fn der_next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[count..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// A DER element with `content`.
pub(crate) fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// `AlgorithmIdentifier { rsaEncryption, NULL }`.
pub(crate) fn rsa_algorithm_identifier() -> Vec<u8> {
    let mut content = der_tlv(DER_OID, OID_RSA_ENCRYPTION);
    content.extend_from_slice(&[DER_NULL, 0]);
    der_tlv(DER_SEQUENCE, &content)
}

/// Wraps a PKCS#1 RSAPublicKey in a SubjectPublicKeyInfo.
pub(crate) fn rsa_spki(pkcs1_public: &[u8]) -> Vec<u8> {
    let mut bits = Vec::with_capacity(pkcs1_public.len() + 1);
    bits.push(0); // no unused bits
    bits.extend_from_slice(pkcs1_public);
    let mut content = rsa_algorithm_identifier();
    content.extend_from_slice(&der_tlv(DER_BIT_STRING, &bits));
    der_tlv(DER_SEQUENCE, &content)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_PKCS8: &[u8] = include_bytes!("testdata/rsa2048-pkcs8.pem");
    const RSA_PKCS1: &[u8] = include_bytes!("testdata/rsa2048-pkcs1.pem");
    const ED25519_OPENSSL: &[u8] = include_bytes!("testdata/ed25519-pkcs8.pem");
    const RSA_1024: &[u8] = include_bytes!("testdata/rsa1024-pkcs8.pem");
    const EC_P256: &[u8] = include_bytes!("testdata/p256-sec1.pem");

    #[test]
    fn rsa_loads_from_pkcs8_and_pkcs1_to_the_same_key() {
        let a = PrivateKey::from_pem(RSA_PKCS8).unwrap();
        let b = PrivateKey::from_pem(RSA_PKCS1).unwrap();
        assert_eq!(a.algorithm(), KeyAlgorithm::Rsa);
        assert_eq!(a.dns_public_key(), b.dns_public_key());
        // An RSA-2048 SubjectPublicKeyInfo is 294 bytes, which base64 makes 392 characters
        // starting with the well-known SPKI prefix.
        assert_eq!(a.dns_public_key().len(), 392);
        assert!(
            a.dns_record()
                .starts_with("v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA")
        );
        assert!(!format!("{a:?}").contains("MII"));
    }

    #[test]
    fn openssl_ed25519_pkcs8_v1_loads() {
        let k = PrivateKey::from_pem(ED25519_OPENSSL).unwrap();
        assert_eq!(k.algorithm(), KeyAlgorithm::Ed25519);
        assert_eq!(STANDARD.decode(k.dns_public_key()).unwrap().len(), 32);
        assert!(k.dns_record().starts_with("v=DKIM1; k=ed25519; p="));
    }

    #[test]
    fn weak_foreign_and_garbage_keys_are_refused_with_their_reason() {
        assert!(matches!(
            PrivateKey::from_pem(RSA_1024),
            Err(DkimError::BadKey(_))
        ));
        assert!(matches!(
            PrivateKey::from_pem(EC_P256),
            Err(DkimError::UnsupportedKey(_))
        ));
        assert!(matches!(
            PrivateKey::from_pem(b"not a key"),
            Err(DkimError::Pem(_))
        ));
        let garbage = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(matches!(PrivateKey::from_pem(garbage), Err(DkimError::BadKey(_))));
    }

    #[test]
    fn der_lengths_round_trip() {
        for len in [0, 1, 127, 128, 255, 256, 70_000] {
            let content = vec![7u8; len];
            let tlv = der_tlv(0x04, &content);
            let (tag, got, rest) = der_next(&tlv).unwrap();
            assert_eq!((tag, got.len(), rest.len()), (0x04, len, 0));
        }
        assert_eq!(der_next(&[0x30, 0x85, 1, 1, 1, 1, 1]), None);
        assert_eq!(der_next(&[0x30, 0x05, 1]), None);
    }
}
