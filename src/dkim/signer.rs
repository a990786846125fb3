//! The DKIM signer for one (domain, selector, key): relaxed/relaxed canonicalization,
//! rsa-sha256 or ed25519-sha256, fed the message chunk by chunk.
//!
//! mail-auth's `sign_streaming()` buffers only the header section and hashes the body as it
//! arrives, so the chunk boundaries can fall anywhere (mail-auth's `sign_chained` cannot:
//! it only works when the body is one piece). mail-auth stamps `t=` with the system clock
//! when the signature is finished; that is what `t=` means (when the signature was made),
//! and it is the one input of a signature that is not a function of the message and key.

use bytes::Bytes;
use mail_auth::common::crypto::DkimKey;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};

use super::DkimError;
use super::keys::{KeyAlgorithm, PrivateKey};

/// The header fields signed by default. `From` is listed twice: DKIM then covers one more
/// `From` than the message has, so a second `From` added in transit breaks the signature
/// (over-signing, RFC 6376 §8.15). Fields the message lacks are signed as absent too, which
/// stops them from being added later. `List-Unsubscribe-Post` must be signed for RFC 8058.
pub const DEFAULT_SIGNED_HEADERS: &[&str] = &[
    "From",
    "From",
    "Sender",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "To",
    "Cc",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Feedback-ID",
];

/// Signs messages for one signing domain and selector. Immutable and `Send + Sync`: one
/// per (domain, selector) is built from the configuration and shared by every core.
pub struct Signer {
    domain: String,
    selector: String,
    algorithm: KeyAlgorithm,
    inner: DkimSigner<DkimKey, Done>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer for `domain` and `selector` signing `headers` (`From` is added when the
    /// list lacks it, since RFC 6376 requires it to be signed).
    pub fn new<H: AsRef<str>>(domain: &str, selector: &str, key: PrivateKey, headers: &[H]) -> Signer {
        let algorithm = key.algorithm();
        let mut fields: Vec<String> = headers.iter().map(|h| h.as_ref().trim().to_string()).collect();
        if !fields.iter().any(|h| h.eq_ignore_ascii_case("From")) {
            fields.insert(0, "From".to_string());
        }
        let inner = DkimSigner::from_key(key.into_inner())
            .domain(domain)
            .selector(selector)
            .headers(fields)
            .header_canonicalization(Canonicalization::Relaxed)
            .body_canonicalization(Canonicalization::Relaxed);
        Signer {
            domain: domain.to_string(),
            selector: selector.to_string(),
            algorithm,
            inner,
        }
    }

    /// A signer with [`DEFAULT_SIGNED_HEADERS`].
    pub fn with_default_headers(domain: &str, selector: &str, key: PrivateKey) -> Signer {
        Signer::new(domain, selector, key, DEFAULT_SIGNED_HEADERS)
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn selector(&self) -> &str {
        &self.selector
    }

    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// Signs the message made of `chunks` (in order; boundaries anywhere) and returns the
    /// `DKIM-Signature: …\r\n` field to prepend. With two signers, prepend both fields; each
    /// signature covers the message without the other's field, which is what verifiers hash.
    pub fn sign(&self, chunks: &[Bytes]) -> Result<Bytes, DkimError> {
        let mut stream = self.inner.sign_streaming();
        let mut in_header = true;
        for chunk in chunks {
            // mail-auth buffers whatever it is given until it has seen the blank line that
            // ends the header section; the chunk holding that line is fed in two pieces, so
            // the body after it goes straight to the hasher instead of being copied first.
            // Where the pieces are cut does not change the signature.
            let header_end = match in_header {
                true => memchr::memmem::find(chunk, b"\r\n\r\n"),
                false => None,
            };
            match header_end {
                Some(at) => {
                    stream.write(&chunk[..at + 4]);
                    stream.write(&chunk[at + 4..]);
                    in_header = false;
                }
                None => stream.write(chunk),
            }
        }
        let signature = stream.finish().map_err(|e| match e {
            mail_auth::Error::NoHeadersFound => DkimError::NoSignedHeaders,
            e => DkimError::Crypto(e.to_string()),
        })?;
        Ok(Bytes::from(signature.to_header()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dkim::testkit::{self, Lcg};

    const MESSAGE: &str = "From: Ann <ann@example.com>\r\nTo: bob@example.net\r\nSubject: Hello\r\n\
        Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <1@example.com>\r\nMIME-Version: 1.0\r\n\
        Content-Type: text/plain; charset=utf-8\r\n\r\nHello  Bob,\r\n\r\nline with trailing space \r\n\r\n\r\n";

    fn tag<'a>(header: &'a str, name: &str) -> &'a str {
        let unfolded = header
            .split(';')
            .map(str::trim)
            .find(|t| t.starts_with(&format!("{name}=")))
            .unwrap();
        &unfolded[name.len() + 1..]
    }

    #[test]
    fn rsa_and_ed25519_signatures_verify_with_mail_auth() {
        for (signer, record) in [testkit::rsa_signer(), testkit::ed25519_signer()] {
            let body = Bytes::from_static(MESSAGE.as_bytes());
            let field = signer.sign(std::slice::from_ref(&body)).unwrap();
            let header = std::str::from_utf8(&field).unwrap();
            assert!(header.starts_with("DKIM-Signature: v=1; a=") && header.ends_with("\r\n"));
            assert!(header.lines().all(|l| l.len() <= 998));
            let signed = [field.as_ref(), MESSAGE.as_bytes()].concat();
            let results = testkit::verify(&signed, &[(&signer, &record)]);
            assert_eq!(results, vec![true], "{header}");
            // Tampering with the body or a signed field is detected.
            let tampered = [
                field.as_ref(),
                MESSAGE.replace("Hello  Bob", "Hello Eve").as_bytes(),
            ]
            .concat();
            assert_eq!(testkit::verify(&tampered, &[(&signer, &record)]), vec![false]);
        }
    }

    #[test]
    fn signers_are_shared_by_every_core() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Signer>();
    }

    #[test]
    fn from_is_over_signed_by_default() {
        let (signer, _) = testkit::ed25519_signer();
        let field = signer.sign(&[Bytes::from_static(MESSAGE.as_bytes())]).unwrap();
        let header = String::from_utf8(field.to_vec()).unwrap().replace("\r\n\t", " ");
        let h = tag(&header, "h");
        assert_eq!(
            h.split(':').filter(|f| f.eq_ignore_ascii_case("From")).count(),
            2,
            "{h}"
        );
        assert_eq!(tag(&header, "c"), "relaxed/relaxed");
        assert_eq!(tag(&header, "d"), "example.com");
    }

    #[test]
    fn any_chunking_gives_the_one_shot_signature() {
        let mut rng = Lcg(42);
        let (rsa, _) = testkit::rsa_signer();
        let (ed, _) = testkit::ed25519_signer();
        let whole = Bytes::from_static(MESSAGE.as_bytes());
        for signer in [&rsa, &ed] {
            for _ in 0..40 {
                let chunks = rng.split(&whole);
                testkit::assert_same_signature(signer, std::slice::from_ref(&whole), &chunks);
            }
            // The splits mail-auth's sign_chained gets wrong: right after the blank line,
            // inside a header line, and the body in pieces.
            let blank = MESSAGE.find("\r\n\r\n").unwrap() + 4;
            for cuts in [vec![blank], vec![5], vec![blank + 3, blank + 9, blank + 20]] {
                let chunks = testkit::split_at(&whole, &cuts);
                testkit::assert_same_signature(signer, std::slice::from_ref(&whole), &chunks);
            }
        }
    }

    #[test]
    fn a_message_without_from_cannot_be_signed() {
        let (signer, _) = testkit::ed25519_signer();
        let r = signer.sign(&[Bytes::from_static(b"X-Other: 1\r\n\r\nbody\r\n")]);
        assert_eq!(r, Err(DkimError::NoSignedHeaders));
        assert_eq!(signer.sign(&[]), Err(DkimError::NoSignedHeaders));
    }

    #[test]
    fn from_is_always_signed() {
        let key = crate::dkim::PrivateKey::from_pem(testkit::ED25519_PEM).unwrap();
        let signer = Signer::new("example.com", "s1", key, &["Subject"]);
        let field = signer.sign(&[Bytes::from_static(MESSAGE.as_bytes())]).unwrap();
        let header = String::from_utf8(field.to_vec()).unwrap().replace("\r\n\t", " ");
        assert!(
            tag(&header, "h")
                .split(':')
                .any(|f| f.eq_ignore_ascii_case("From"))
        );
    }
}
