//! Splicing: the output message as slices of the received chunks with replaced ranges.
//!
//! The received message may arrive as several `Bytes` chunks. mail-parser needs it
//! contiguous, so [`mime`](super::mime) may join the chunks once for parsing, but the output
//! still refers to the received chunks: [`Source`] maps an offset range of the whole message
//! back onto them, so unchanged bytes are shared, never copied.

use bytes::Bytes;

/// The received message: its chunks, addressed as one byte range.
pub struct Source<'a> {
    chunks: &'a [Bytes],
    /// Offset of each chunk's first byte in the whole message.
    starts: Vec<usize>,
    len: usize,
}

impl<'a> Source<'a> {
    pub fn new(chunks: &'a [Bytes]) -> Source<'a> {
        let mut starts = Vec::with_capacity(chunks.len());
        let mut len = 0;
        for c in chunks {
            starts.push(len);
            len += c.len();
        }
        Source { chunks, starts, len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `start..end` of the whole message to `out` as slices of the chunks.
    pub fn push_range(&self, start: usize, end: usize, out: &mut Vec<Bytes>) {
        let end = end.min(self.len);
        if start >= end {
            return;
        }
        // The chunk holding `start`: the last one starting at or before it.
        let mut i = self.starts.partition_point(|&s| s <= start).saturating_sub(1);
        let mut pos = start;
        while pos < end && i < self.chunks.len() {
            let chunk_start = self.starts[i];
            let chunk = &self.chunks[i];
            let from = pos - chunk_start;
            let to = (end - chunk_start).min(chunk.len());
            if from < to {
                out.push(chunk.slice(from..to));
            }
            pos = chunk_start + to;
            i += 1;
        }
    }
}

/// A replaced range of the whole message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edit {
    pub start: usize,
    pub end: usize,
    pub bytes: Bytes,
}

/// Appends the message with `edits` applied. Edits must be sorted and must not overlap.
pub fn assemble(source: &Source<'_>, edits: &[Edit], out: &mut Vec<Bytes>) {
    let mut pos = 0;
    for edit in edits {
        debug_assert!(edit.start >= pos && edit.end >= edit.start, "edits overlap");
        source.push_range(pos, edit.start, out);
        if !edit.bytes.is_empty() {
            out.push(edit.bytes.clone());
        }
        pos = edit.end.max(pos);
    }
    source.push_range(pos, source.len(), out);
}

/// The extra header fields as one chunk, `Name: value\r\n` each. CR and LF inside a name or
/// value would start a new field, so they become spaces.
pub fn header_block(fields: &[(String, String)]) -> Option<Bytes> {
    if fields.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(fields.iter().map(|(n, v)| n.len() + v.len() + 4).sum());
    for (name, value) in fields {
        let clean = |s: &str| s.replace(['\r', '\n'], " ");
        out.extend_from_slice(clean(name.trim()).as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(clean(value.trim()).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static str]) -> Vec<Bytes> {
        parts.iter().map(|p| Bytes::from_static(p.as_bytes())).collect()
    }

    fn joined(out: &[Bytes]) -> String {
        out.iter().map(|b| std::str::from_utf8(b).unwrap()).collect()
    }

    #[test]
    fn ranges_map_onto_chunks_without_copying() {
        let received = chunks(&["abc", "", "defg", "h"]);
        let src = Source::new(&received);
        assert_eq!(src.len(), 8);
        for start in 0..=8 {
            for end in start..=9 {
                let mut out = Vec::new();
                src.push_range(start, end, &mut out);
                assert_eq!(joined(&out), &"abcdefgh"[start..end.min(8)], "{start}..{end}");
                assert!(out.iter().all(|b| !b.is_empty()));
            }
        }
        let mut out = Vec::new();
        src.push_range(1, 5, &mut out);
        // Shared with the received buffers, not copies of them.
        assert_eq!(out[0].as_ptr(), received[0][1..].as_ptr());
        assert_eq!(out[1].as_ptr(), received[2].as_ptr());
    }

    #[test]
    fn edits_replace_their_ranges() {
        let received = chunks(&["Header: x\r\n\r\n", "<p>old</p>", "\r\n--b--\r\n"]);
        let src = Source::new(&received);
        let edits = [
            Edit {
                start: 8,
                end: 9,
                bytes: Bytes::from_static(b"y"),
            },
            Edit {
                start: 13,
                end: 23,
                bytes: Bytes::from_static(b"<p>new!</p>"),
            },
        ];
        let mut out = Vec::new();
        assemble(&src, &edits, &mut out);
        assert_eq!(joined(&out), "Header: y\r\n\r\n<p>new!</p>\r\n--b--\r\n");
    }

    #[test]
    fn header_block_cannot_inject_fields() {
        let block = header_block(&[(
            "List-Unsubscribe".into(),
            "<https://t.example/u/x>\r\nBcc: evil".into(),
        )]);
        assert_eq!(
            block.unwrap(),
            &b"List-Unsubscribe: <https://t.example/u/x>  Bcc: evil\r\n"[..]
        );
        assert_eq!(header_block(&[]), None);
    }
}
