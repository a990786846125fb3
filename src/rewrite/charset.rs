//! Which character encoding a text part is rewritten in.
//!
//! lol_html rewrites any ASCII-compatible encoding in place: markup is ASCII in all of
//! them, the bytes it does not touch come out as they went in, and what it inserts
//! (tracking URLs, the pixel) is ASCII. So an ISO-8859-1, Windows-1252 or Shift_JIS part is
//! never transcoded and cannot be damaged by a round trip. The encodings that are not
//! ASCII-compatible (UTF-16, ISO-2022-JP) and labels nobody knows are passed through
//! untouched instead.

use encoding_rs::Encoding;

/// Why a part's charset cannot be rewritten in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CharsetProblem {
    /// The label is not one the WHATWG Encoding Standard knows.
    Unknown,
    /// A known encoding in which ASCII bytes do not always mean ASCII.
    NotAsciiCompatible,
}

/// The encoding for a part with `label` (its `charset=` parameter) and content `data`.
///
/// Without a label, UTF-8 is assumed when the content is valid UTF-8, and Windows-1252
/// otherwise (the usual reality of unlabelled 8-bit mail); both are ASCII-compatible, so the
/// guess only affects how a non-ASCII link URL is read.
pub fn resolve(label: Option<&str>, data: &[u8]) -> Result<&'static Encoding, CharsetProblem> {
    let encoding = match label.map(str::trim).filter(|l| !l.is_empty()) {
        Some(label) => Encoding::for_label_no_replacement(label.as_bytes()).ok_or(CharsetProblem::Unknown)?,
        None if std::str::from_utf8(data).is_ok() => encoding_rs::UTF_8,
        None => encoding_rs::WINDOWS_1252,
    };
    if encoding.is_ascii_compatible() {
        Ok(encoding)
    } else {
        Err(CharsetProblem::NotAsciiCompatible)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_resolve_to_ascii_compatible_encodings() {
        assert_eq!(resolve(Some("UTF-8"), b""), Ok(encoding_rs::UTF_8));
        assert_eq!(resolve(Some(" iso-8859-1 "), b""), Ok(encoding_rs::WINDOWS_1252));
        assert_eq!(resolve(Some("Windows-1252"), b""), Ok(encoding_rs::WINDOWS_1252));
        assert_eq!(resolve(Some("Shift_JIS"), b""), Ok(encoding_rs::SHIFT_JIS));
        assert_eq!(resolve(Some("us-ascii"), b""), Ok(encoding_rs::WINDOWS_1252));
    }

    #[test]
    fn unknown_and_incompatible_charsets_are_refused() {
        assert_eq!(resolve(Some("x-unknown-8bit"), b""), Err(CharsetProblem::Unknown));
        assert_eq!(
            resolve(Some("utf-16le"), b""),
            Err(CharsetProblem::NotAsciiCompatible)
        );
        assert_eq!(
            resolve(Some("ISO-2022-JP"), b""),
            Err(CharsetProblem::NotAsciiCompatible)
        );
        // The "replacement" labels would turn the whole part into one U+FFFD.
        assert_eq!(resolve(Some("iso-2022-kr"), b""), Err(CharsetProblem::Unknown));
    }

    #[test]
    fn unlabelled_parts_are_utf8_when_valid() {
        assert_eq!(resolve(None, "caf\u{e9}".as_bytes()), Ok(encoding_rs::UTF_8));
        assert_eq!(resolve(None, b"caf\xe9"), Ok(encoding_rs::WINDOWS_1252));
        assert_eq!(resolve(Some(""), b"ok"), Ok(encoding_rs::UTF_8));
    }
}
