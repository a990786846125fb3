//! DKIM signing (RFC 6376, RFC 8463) over the chunk list a message is made of.
//!
//! The rewrite changes the HTML parts, which breaks any upstream body hash, so the relay
//! signs what it actually sends: the final chunk list (extra headers, slices of the received
//! bytes, rewritten parts). [`Signer::sign`] feeds those chunks one by one to mail-auth's
//! incremental body hasher, never joining them, and returns the `DKIM-Signature` field to
//! prepend. Crypto is ring, through mail-auth. Dual signatures (RSA and Ed25519, for
//! receivers that do not know Ed25519 yet) are two signers whose fields are both prepended.
//!
//! - [`keys`]: load RSA (PKCS#8 or PKCS#1 PEM, 2048 bits or more) and Ed25519 (PKCS#8 PEM)
//!   private keys, and render the DNS record of their public half.
//! - [`signer`]: the signer, with a default signed-header list that over-signs `From`.
//! - [`keygen`]: new keys for `corerelay dkim keygen`.
//! - [`domain`]: the header `From` domain, to pick the signing domain that aligns (DMARC).

pub mod domain;
pub mod keygen;
pub mod keys;
pub mod signer;

#[cfg(test)]
pub(crate) mod testkit;

use std::fmt;

pub use domain::header_from_domain;
pub use keygen::{GeneratedKey, KeygenAlgorithm, generate};
pub use keys::{KeyAlgorithm, PrivateKey};
pub use signer::{DEFAULT_SIGNED_HEADERS, Signer};

/// Why a key could not be used or a message could not be signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DkimError {
    /// No PEM private key could be read from the input.
    Pem(String),
    /// A key type DKIM signing here does not support (e.g. an EC P-256 key).
    UnsupportedKey(&'static str),
    /// The crypto library refused the key (wrong encoding, RSA below 2048 bits, …).
    BadKey(String),
    /// The message has none of the header fields to sign (it has no `From`).
    NoSignedHeaders,
    /// Signing or key generation failed in the crypto library.
    Crypto(String),
}

impl fmt::Display for DkimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DkimError::Pem(e) => write!(f, "no PEM private key: {e}"),
            DkimError::UnsupportedKey(what) => write!(f, "unsupported DKIM key: {what}"),
            DkimError::BadKey(e) => write!(f, "unusable DKIM key: {e}"),
            DkimError::NoSignedHeaders => f.write_str("the message has none of the header fields to sign"),
            DkimError::Crypto(e) => write!(f, "DKIM crypto error: {e}"),
        }
    }
}

impl std::error::Error for DkimError {}
