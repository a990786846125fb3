//! Tracking tokens: stateless, signed, and verifiable by any core without a database.
//!
//! A token is `base64url(payload) "." base64url(HMAC-SHA256(key, payload))`. The payload is a
//! compact binary record (version, key id, kind, times, message id, link index, account,
//! recipient, URL), so the tracking endpoint learns everything it needs from the token
//! itself. Several keys are accepted and one signs, so keys rotate: add the new key, make it
//! the signing key, and drop the old one once its tokens no longer matter.
//!
//! A token that does not verify must never redirect: the redirect target is the URL inside a
//! verified payload and nothing else, which is what closes the open-redirect hole.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;

use crate::message::MessageId;

/// The payload layout this code writes and reads.
pub const TOKEN_VERSION: u8 = 1;
/// Longest token text `verify` looks at; anything longer is refused before decoding.
pub const MAX_TOKEN_LEN_BYTES: usize = 4096;
/// Shortest accepted HMAC secret (the SHA-256 output size).
pub const MIN_SECRET_LEN_BYTES: usize = 32;
const MAC_LEN_BYTES: usize = 32;
const MAX_VARINT_LEN_BYTES: usize = 10;

/// What a token stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// The tracking pixel: `GET /o/<token>`.
    Open,
    /// A rewritten link: `GET /c/<token>` redirects to the URL inside.
    Click,
    /// One-click unsubscribe (RFC 8058): `POST /u/<token>`.
    Unsubscribe,
}

impl TokenKind {
    fn to_byte(self) -> u8 {
        match self {
            TokenKind::Open => 0,
            TokenKind::Click => 1,
            TokenKind::Unsubscribe => 2,
        }
    }

    fn from_byte(b: u8) -> Option<TokenKind> {
        match b {
            0 => Some(TokenKind::Open),
            1 => Some(TokenKind::Click),
            2 => Some(TokenKind::Unsubscribe),
            _ => None,
        }
    }
}

/// What a token says, borrowed: the form minting takes, so minting one token per link
/// copies nothing but the bytes that go into the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claims<'a> {
    pub kind: TokenKind,
    pub account: &'a str,
    pub message_id: MessageId,
    /// The envelope recipient, or empty when the account tracks per message.
    pub recipient: &'a str,
    /// Position of the link in the message (0 for opens and unsubscribes).
    pub link_index: u32,
    /// The click target, entity-decoded; empty for opens and unsubscribes.
    pub url: &'a str,
    pub issued_at_unix_s: u64,
    pub expires_at_unix_s: Option<u64>,
}

/// A verified token, owned: what `verify` returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    pub key_id: u8,
    pub account: String,
    pub message_id: MessageId,
    pub recipient: String,
    pub link_index: u32,
    pub url: String,
    pub issued_at_unix_s: u64,
    pub expires_at_unix_s: Option<u64>,
}

/// Why a token was refused. Every variant means the same thing to a client (404); the
/// distinction is for counters and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenError {
    /// Not two base64url parts, or not canonical base64url.
    BadEncoding,
    /// The MAC does not match the payload.
    BadMac,
    /// Signed with a key id this keyring does not hold (retired, or never ours).
    UnknownKey,
    /// Past its expiry.
    Expired,
    /// Longer than [`MAX_TOKEN_LEN_BYTES`] (or, when minting, would be).
    Oversized,
    /// A payload layout this code does not read.
    WrongVersion,
    /// Authentic but not a well-formed payload (only a bug or a leaked key can cause it).
    Malformed,
}

impl TokenError {
    /// A short stable name, for metric labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenError::BadEncoding => "bad_encoding",
            TokenError::BadMac => "bad_mac",
            TokenError::UnknownKey => "unknown_key",
            TokenError::Expired => "expired",
            TokenError::Oversized => "oversized",
            TokenError::WrongVersion => "wrong_version",
            TokenError::Malformed => "malformed",
        }
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for TokenError {}

/// Why a keyring could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyringError {
    SecretTooShort { key_id: u8 },
    DuplicateKeyId { key_id: u8 },
    NoSigningKey { key_id: u8 },
}

impl fmt::Display for KeyringError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyringError::SecretTooShort { key_id } => {
                write!(
                    f,
                    "tracking key {key_id} is shorter than {MIN_SECRET_LEN_BYTES} bytes"
                )
            }
            KeyringError::DuplicateKeyId { key_id } => write!(f, "tracking key id {key_id} appears twice"),
            KeyringError::NoSigningKey { key_id } => {
                write!(f, "the signing tracking key id {key_id} is not among the keys")
            }
        }
    }
}

impl std::error::Error for KeyringError {}

/// The HMAC keys: every key listed verifies, the signing one also mints. Immutable once
/// built, so one keyring is shared by every core.
pub struct Keyring {
    keys: Vec<(u8, hmac::Key)>,
    signing: u8,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secrets.
        let ids: Vec<u8> = self.keys.iter().map(|(id, _)| *id).collect();
        f.debug_struct("Keyring")
            .field("key_ids", &ids)
            .field("signing", &self.signing)
            .finish()
    }
}

impl Keyring {
    /// Builds a keyring from `(key id, secret)` pairs; `signing` names the key that mints.
    pub fn new(keys: Vec<(u8, Vec<u8>)>, signing: u8) -> Result<Keyring, KeyringError> {
        let mut built: Vec<(u8, hmac::Key)> = Vec::with_capacity(keys.len());
        for (key_id, secret) in keys {
            if secret.len() < MIN_SECRET_LEN_BYTES {
                return Err(KeyringError::SecretTooShort { key_id });
            }
            if built.iter().any(|(id, _)| *id == key_id) {
                return Err(KeyringError::DuplicateKeyId { key_id });
            }
            built.push((key_id, hmac::Key::new(hmac::HMAC_SHA256, &secret)));
        }
        if !built.iter().any(|(id, _)| *id == signing) {
            return Err(KeyringError::NoSigningKey { key_id: signing });
        }
        Ok(Keyring { keys: built, signing })
    }

    pub fn signing_key_id(&self) -> u8 {
        self.signing
    }

    fn key(&self, key_id: u8) -> Option<&hmac::Key> {
        self.keys.iter().find(|(id, _)| *id == key_id).map(|(_, k)| k)
    }

    /// Mints a token with the signing key. Fails only with [`TokenError::Oversized`], when
    /// the claims (usually a very long URL) would not fit in [`MAX_TOKEN_LEN_BYTES`].
    pub fn mint(&self, claims: &Claims<'_>) -> Result<String, TokenError> {
        let mut out = String::new();
        self.mint_into(claims, &mut out)?;
        Ok(out)
    }

    /// [`Keyring::mint`], appending the token to `out` (e.g. after the tracking base URL,
    /// so a tracking URL is built in one allocation). `out` is unchanged on error.
    pub fn mint_into(&self, claims: &Claims<'_>, out: &mut String) -> Result<(), TokenError> {
        self.mint_with(claims, &mut Vec::new(), out)
    }

    /// [`Keyring::mint_into`] with a scratch buffer for the payload, so that minting the
    /// tokens of a whole message allocates it once.
    pub(crate) fn mint_with(
        &self,
        claims: &Claims<'_>,
        payload: &mut Vec<u8>,
        out: &mut String,
    ) -> Result<(), TokenError> {
        payload.clear();
        encode_payload_into(self.signing, claims, payload);
        if token_len(payload.len()) > MAX_TOKEN_LEN_BYTES {
            return Err(TokenError::Oversized);
        }
        let key = self.key(self.signing).ok_or(TokenError::UnknownKey)?;
        let tag = hmac::sign(key, payload);
        out.reserve(token_len(payload.len()));
        push_base64url(payload, out);
        out.push('.');
        push_base64url(tag.as_ref(), out);
        Ok(())
    }

    /// Verifies a token's MAC (in constant time) and expiry, and returns what it says.
    pub fn verify(&self, text: &str, now_unix_s: u64) -> Result<Token, TokenError> {
        if text.len() > MAX_TOKEN_LEN_BYTES {
            return Err(TokenError::Oversized);
        }
        let (payload_b64, mac_b64) = text.split_once('.').ok_or(TokenError::BadEncoding)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload_b64)
            .map_err(|_| TokenError::BadEncoding)?;
        let mac = URL_SAFE_NO_PAD
            .decode(mac_b64)
            .map_err(|_| TokenError::BadEncoding)?;
        if mac.len() != MAC_LEN_BYTES || payload.len() < 2 {
            return Err(TokenError::BadEncoding);
        }
        if payload[0] != TOKEN_VERSION {
            return Err(TokenError::WrongVersion);
        }
        let key = self.key(payload[1]).ok_or(TokenError::UnknownKey)?;
        hmac::verify(key, &payload, &mac).map_err(|_| TokenError::BadMac)?;
        let token = decode_payload(&payload).ok_or(TokenError::Malformed)?;
        match token.expires_at_unix_s {
            Some(expires) if now_unix_s >= expires => Err(TokenError::Expired),
            _ => Ok(token),
        }
    }
}

/// Length of the token text for a payload of `payload_len` bytes.
fn token_len(payload_len: usize) -> usize {
    payload_len.div_ceil(3) * 4 + 1 + MAC_LEN_BYTES.div_ceil(3) * 4
}

/// Appends unpadded base64url of `data` to `out`. `encode_string` goes through base64's
/// chunked encoder, which costs more than the encoding itself for token-sized inputs; this
/// encodes slices of a stack buffer instead (input cut at multiples of 3 bytes, so the text
/// is the same as in one piece).
fn push_base64url(data: &[u8], out: &mut String) {
    const IN_CHUNK_BYTES: usize = 192;
    let mut buf = [0u8; IN_CHUNK_BYTES / 3 * 4];
    for chunk in data.chunks(IN_CHUNK_BYTES) {
        let written = URL_SAFE_NO_PAD.encode_slice(chunk, &mut buf).unwrap_or(0);
        out.push_str(std::str::from_utf8(&buf[..written]).unwrap_or_default());
    }
}

#[cfg(test)]
fn encode_payload(key_id: u8, c: &Claims<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_payload_into(key_id, c, &mut out);
    out
}

fn encode_payload_into(key_id: u8, c: &Claims<'_>, out: &mut Vec<u8>) {
    out.reserve(48 + c.account.len() + c.recipient.len() + c.url.len());
    out.extend_from_slice(&[TOKEN_VERSION, key_id, c.kind.to_byte()]);
    put_varint(out, c.issued_at_unix_s);
    // 0 cannot be a real expiry (it is before any issue time), so it stands for "none".
    put_varint(out, c.expires_at_unix_s.unwrap_or(0));
    out.extend_from_slice(&c.message_id.0.to_be_bytes());
    put_varint(out, u64::from(c.link_index));
    for s in [c.account, c.recipient, c.url] {
        put_varint(out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }
}

fn decode_payload(payload: &[u8]) -> Option<Token> {
    let mut r = Reader { buf: payload, pos: 0 };
    let _version = r.byte()?;
    let key_id = r.byte()?;
    let kind = TokenKind::from_byte(r.byte()?)?;
    let issued_at_unix_s = r.varint()?;
    let expires = r.varint()?;
    let message_id = MessageId(u128::from_be_bytes(r.take(16)?.try_into().ok()?));
    let link_index = u32::try_from(r.varint()?).ok()?;
    let account = r.string()?;
    let recipient = r.string()?;
    let url = r.string()?;
    if r.pos != payload.len() {
        return None;
    }
    Some(Token {
        kind,
        key_id,
        account,
        message_id,
        recipient,
        link_index,
        url,
        issued_at_unix_s,
        expires_at_unix_s: (expires != 0).then_some(expires),
    })
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v: u64 = 0;
        for i in 0..MAX_VARINT_LEN_BYTES {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f).checked_shl(7 * i as u32)?;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn string(&mut self) -> Option<String> {
        let len = usize::try_from(self.varint()?).ok()?;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring2() -> Keyring {
        Keyring::new(vec![(1, vec![7u8; 32]), (2, vec![9u8; 40])], 2).unwrap()
    }

    fn click<'a>(url: &'a str) -> Claims<'a> {
        Claims {
            kind: TokenKind::Click,
            account: "acme",
            message_id: MessageId::new(1_700_000_000_000_000, 3, 42),
            recipient: "bob@example.net",
            link_index: 7,
            url,
            issued_at_unix_s: 1_700_000_000,
            expires_at_unix_s: Some(1_700_086_400),
        }
    }

    #[test]
    fn mint_then_verify_returns_the_claims() {
        let k = ring2();
        let url = "https://shop.example/reset?a=1&b=%C3%A9#top";
        let t = k.mint(&click(url)).unwrap();
        assert!(
            t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "{t}"
        );
        let v = k.verify(&t, 1_700_000_100).unwrap();
        assert_eq!(v.url, url);
        assert_eq!(v.kind, TokenKind::Click);
        assert_eq!(v.key_id, 2);
        assert_eq!(v.account, "acme");
        assert_eq!(v.recipient, "bob@example.net");
        assert_eq!(v.link_index, 7);
        assert_eq!(v.message_id, MessageId::new(1_700_000_000_000_000, 3, 42));
        assert_eq!(v.expires_at_unix_s, Some(1_700_086_400));
        // Minting is deterministic, so a retry reproduces the same message bytes.
        assert_eq!(k.mint(&click(url)).unwrap(), t);
    }

    #[test]
    fn keyrings_are_shared_by_every_core() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Keyring>();
    }

    #[test]
    fn expiry_is_enforced_and_none_means_forever() {
        let k = ring2();
        let t = k.mint(&click("https://a.example/")).unwrap();
        assert_eq!(k.verify(&t, 1_700_086_400), Err(TokenError::Expired));
        let forever = Claims {
            expires_at_unix_s: None,
            ..click("https://a.example/")
        };
        let t = k.mint(&forever).unwrap();
        assert_eq!(k.verify(&t, u64::MAX).unwrap().expires_at_unix_s, None);
    }

    #[test]
    fn rotation_old_keys_verify_unknown_keys_do_not() {
        let old = Keyring::new(vec![(1, vec![7u8; 32])], 1).unwrap();
        let t = old.mint(&click("https://a.example/")).unwrap();
        assert_eq!(ring2().verify(&t, 0).unwrap().key_id, 1);
        let retired = Keyring::new(vec![(2, vec![9u8; 40])], 2).unwrap();
        assert_eq!(retired.verify(&t, 0), Err(TokenError::UnknownKey));
        // Same id, different secret: the MAC fails.
        let other = Keyring::new(vec![(1, vec![8u8; 32])], 1).unwrap();
        assert_eq!(other.verify(&t, 0), Err(TokenError::BadMac));
    }

    #[test]
    fn any_altered_byte_is_refused() {
        let k = ring2();
        let t = k.mint(&click("https://a.example/x")).unwrap();
        let bytes = t.as_bytes();
        for i in 0..bytes.len() {
            for replacement in [b'A', b'-', b'.', b'z'] {
                if bytes[i] == replacement {
                    continue;
                }
                let mut altered = bytes.to_vec();
                altered[i] = replacement;
                let altered = String::from_utf8(altered).unwrap();
                assert!(k.verify(&altered, 0).is_err(), "accepted {altered}");
            }
        }
    }

    #[test]
    fn malformed_inputs_get_their_reason() {
        let k = ring2();
        let t = k.mint(&click("https://a.example/")).unwrap();
        let (p, m) = t.split_once('.').unwrap();
        assert_eq!(k.verify("", 0), Err(TokenError::BadEncoding));
        assert_eq!(k.verify("abc", 0), Err(TokenError::BadEncoding));
        assert_eq!(k.verify(&format!("{p}.{m}="), 0), Err(TokenError::BadEncoding));
        assert_eq!(
            k.verify(&format!("{p}.{}", &m[..20]), 0),
            Err(TokenError::BadEncoding)
        );
        assert_eq!(k.verify(&format!("{p}!.{m}"), 0), Err(TokenError::BadEncoding));
        assert_eq!(
            k.verify(&"A".repeat(MAX_TOKEN_LEN_BYTES + 1), 0),
            Err(TokenError::Oversized)
        );
        let mut payload = URL_SAFE_NO_PAD.decode(p).unwrap();
        payload[0] = 9;
        let v9 = format!("{}.{m}", URL_SAFE_NO_PAD.encode(&payload));
        assert_eq!(k.verify(&v9, 0), Err(TokenError::WrongVersion));
    }

    #[test]
    fn an_authentic_but_truncated_payload_is_malformed_not_a_panic() {
        let secret = vec![7u8; 32];
        let k = Keyring::new(vec![(1, secret.clone())], 1).unwrap();
        let key = hmac::Key::new(hmac::HMAC_SHA256, &secret);
        let full = encode_payload(1, &click("https://a.example/"));
        for cut in 2..full.len() {
            let payload = &full[..cut];
            let tag = hmac::sign(&key, payload);
            let t = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(payload),
                URL_SAFE_NO_PAD.encode(tag.as_ref())
            );
            assert_eq!(k.verify(&t, 0), Err(TokenError::Malformed), "cut at {cut}");
        }
    }

    #[test]
    fn oversized_claims_are_refused_at_mint() {
        let long = format!("https://a.example/{}", "x".repeat(MAX_TOKEN_LEN_BYTES));
        assert_eq!(ring2().mint(&click(&long)), Err(TokenError::Oversized));
        let fits = format!("https://a.example/{}", "x".repeat(2000));
        let t = ring2().mint(&click(&fits)).unwrap();
        assert!(t.len() <= MAX_TOKEN_LEN_BYTES);
        assert_eq!(ring2().verify(&t, 0).unwrap().url, fits);
    }

    #[test]
    fn keyring_rejects_short_duplicate_and_missing_signing_keys() {
        assert_eq!(
            Keyring::new(vec![(1, vec![0; 31])], 1).unwrap_err(),
            KeyringError::SecretTooShort { key_id: 1 }
        );
        assert_eq!(
            Keyring::new(vec![(1, vec![0; 32]), (1, vec![1; 32])], 1).unwrap_err(),
            KeyringError::DuplicateKeyId { key_id: 1 }
        );
        assert_eq!(
            Keyring::new(vec![(1, vec![0; 32])], 2).unwrap_err(),
            KeyringError::NoSigningKey { key_id: 2 }
        );
        assert!(!format!("{:?}", ring2()).contains("7, 7"));
    }

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [0, 1, 127, 128, 16_383, 16_384, u64::from(u32::MAX), u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            let mut r = Reader { buf: &out, pos: 0 };
            assert_eq!(r.varint(), Some(v));
            assert_eq!(r.pos, out.len());
        }
        let mut r = Reader {
            buf: &[0xff; 11],
            pos: 0,
        };
        assert_eq!(r.varint(), None);
    }
}
