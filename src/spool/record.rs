//! The spool's on-disk record framing, pure: bytes in, records out, no files and no executor.
//!
//! A segment file is a sequence of group-commit batches. Each batch starts at a multiple of
//! [`BLOCK_BYTES`], holds records back to back, is padded with zeros to the next block
//! boundary (O_DIRECT writes whole blocks), and is followed by one block holding an End
//! marker, which the next batch overwrites. A record is a fixed 32-byte header and a
//! payload:
//!
//! ```text
//!  0..4   magic "CRSP"          identifies the header layout (fixed for every version)
//!  4      version (2)           governs the payload encodings (see below)
//!  5      kind                  1 Message, 2 Update, 3 Done, 4 End
//!  6..8   flags (0)             reserved
//!  8..12  payload length        little endian, at most PAYLOAD_MAX_BYTES
//! 12..16  payload CRC32C
//! 16..24  segment sequence      the segment the record was written into
//! 24..28  reserved (0)
//! 28..32  header CRC32C         over bytes 0..28, so over the payload CRC too
//! ```
//!
//! Versions: 1 is the first format; 2 (issue 3) added fields to the envelope of Message
//! records (SMTPUTF8, DSN parameters, the AUTH user). The envelope is postcard, which is
//! not self-describing, so a new field changes the bytes: the version byte says which
//! envelope layout a Message payload holds. Version 1 records still decode (their envelope
//! is read with the old layout and given the new fields' defaults, and a record read back
//! for loading or relocation is upgraded to the current layout); records of a version
//! above [`VERSION`] are counted as damage, never guessed at. Update and Done payloads are
//! the same in both versions.
//!
//! Two checksums instead of one: the header CRC makes the length trustworthy before any
//! payload is read, so a record whose payload is damaged can be skipped exactly and the
//! acknowledged records after it in the same batch are still recovered. Together the two
//! CRCs cover every header field and every payload byte.
//!
//! Segment files are recycled (overwriting blocks that were already written makes each
//! fdatasync much cheaper than growing a file), so beyond the end of the log a file may
//! hold records of its previous lives. The segment sequence in every header tells them
//! apart: a valid header of another segment is stale and ends the scan, as does the End
//! marker. Without the End marker, the stale bytes right after the log (often the middle of
//! an old record) would look like damage.
//!
//! [`Scanner`] walks a whole segment image: zeros are padding (skip to the next block); a
//! bad header is damage (count it once, then resync block by block until a valid header
//! appears); a valid header with a bad payload is damage skipped by its length; an End
//! marker or a stale header is the end of the log. It never panics and never allocates
//! from a length read off disk.

use bytes::Bytes;

/// Batches start at multiples of this; recovery resyncs on it. Writers may use a larger
/// multiple when the device needs it, which keeps every batch start on this grid.
pub const BLOCK_BYTES: usize = 4096;
/// The fixed header size.
pub const HEADER_BYTES: usize = 32;
/// The largest payload a record may carry. It bounds what recovery reads for one record.
pub const PAYLOAD_MAX_BYTES: usize = 64 << 20;

const MAGIC: [u8; 4] = *b"CRSP";
/// The format version this code writes and fully understands.
pub const VERSION: u8 = 2;
/// The oldest version this code still reads (and upgrades when it reads it).
pub const OLDEST_READABLE_VERSION: u8 = 1;

/// Whether this code can read a record of `version`.
pub fn readable(version: u8) -> bool {
    (OLDEST_READABLE_VERSION..=VERSION).contains(&version)
}

/// What a record says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// A new message: envelope, trace header and body.
    Message = 1,
    /// Per-recipient progress of a message.
    Update = 2,
    /// The message is finished.
    Done = 3,
    /// The end of the log (framing only: never handed to recovery's fold).
    End = 4,
}

impl RecordKind {
    pub fn from_u8(v: u8) -> Option<RecordKind> {
        match v {
            1 => Some(RecordKind::Message),
            2 => Some(RecordKind::Update),
            3 => Some(RecordKind::Done),
            4 => Some(RecordKind::End),
            _ => None,
        }
    }
}

/// A decoded header whose own CRC matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    pub kind: u8,
    pub payload_len: usize,
    pub payload_crc: u32,
    pub segment_seq: u64,
}

/// What sits at a record boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Head {
    /// Zeros: the padding after a batch, or the end of the log.
    Padding,
    /// Not a valid header: corruption or a torn write.
    Bad,
    /// A valid header of another segment: what a recycled file held before.
    Stale,
    Record(Header),
}

/// The total on-disk size of a record with this payload length.
pub fn record_len(payload_len: usize) -> usize {
    HEADER_BYTES + payload_len
}

/// Rounds `v` up to a multiple of `align` (a power of two).
pub fn align_up(v: usize, align: usize) -> usize {
    debug_assert!(align.is_power_of_two());
    (v + align - 1) & !(align - 1)
}

/// Writes one record (header, then the payload `parts` back to back) at the start of
/// `dst` and returns its length. The caller sized `dst` with [`record_len`]; the payload
/// bytes are copied exactly once, from the parts into `dst`.
pub fn encode_into(dst: &mut [u8], kind: RecordKind, segment_seq: u64, parts: &[Bytes]) -> usize {
    let mut at = HEADER_BYTES;
    let mut payload_crc = 0u32;
    for part in parts {
        dst[at..at + part.len()].copy_from_slice(part);
        payload_crc = crc32c::crc32c_append(payload_crc, part);
        at += part.len();
    }
    let payload_len = at - HEADER_BYTES;
    debug_assert!(payload_len <= PAYLOAD_MAX_BYTES);
    let h = &mut dst[..HEADER_BYTES];
    h[0..4].copy_from_slice(&MAGIC);
    h[4] = VERSION;
    h[5] = kind as u8;
    h[6..8].fill(0);
    h[8..12].copy_from_slice(&(payload_len as u32).to_le_bytes());
    h[12..16].copy_from_slice(&payload_crc.to_le_bytes());
    h[16..24].copy_from_slice(&segment_seq.to_le_bytes());
    h[24..28].fill(0);
    let header_crc = crc32c::crc32c(&h[..28]);
    h[28..32].copy_from_slice(&header_crc.to_le_bytes());
    at
}

/// Writes an End marker (a record with kind End and no payload) at the start of `dst`.
pub fn encode_end(dst: &mut [u8], segment_seq: u64) -> usize {
    encode_into(dst, RecordKind::End, segment_seq, &[])
}

/// Decodes the header at the start of `bytes`. `room` is how many bytes remain before the
/// next block boundary: padding only has to be zero up to there, because the next batch
/// may start right after it.
pub fn decode_header(bytes: &[u8], room: usize, expected_seq: u64) -> Head {
    let zero_span = room.min(HEADER_BYTES).min(bytes.len());
    // Every magic byte is non-zero, so a real header never starts with a zero run.
    if bytes[..zero_span].iter().all(|&b| b == 0) {
        return Head::Padding;
    }
    if bytes.len() < HEADER_BYTES || bytes[0..4] != MAGIC {
        return Head::Bad;
    }
    let header_crc = u32_at(bytes, 28);
    if crc32c::crc32c(&bytes[..28]) != header_crc {
        return Head::Bad;
    }
    let payload_len = u32_at(bytes, 8) as usize;
    let segment_seq = u64::from_le_bytes(bytes[16..24].try_into().unwrap_or([0; 8]));
    if segment_seq != expected_seq {
        return Head::Stale;
    }
    if payload_len > PAYLOAD_MAX_BYTES {
        return Head::Bad;
    }
    Head::Record(Header {
        version: bytes[4],
        kind: bytes[5],
        payload_len,
        payload_crc: u32_at(bytes, 12),
        segment_seq,
    })
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or([0; 4]))
}

/// Decodes exactly one record from `bytes` (as read back for one known location).
/// Returns the header and the payload, or `None` if anything does not check out.
pub fn decode_one(bytes: &[u8], expected_seq: u64) -> Option<(Header, &[u8])> {
    let Head::Record(h) = decode_header(bytes, HEADER_BYTES, expected_seq) else {
        return None;
    };
    let payload = bytes.get(HEADER_BYTES..HEADER_BYTES + h.payload_len)?;
    (crc32c::crc32c(payload) == h.payload_crc).then_some((h, payload))
}

/// One thing found while scanning a segment image.
#[derive(Debug, PartialEq, Eq)]
pub enum ScanItem<'a> {
    /// A record whose checksums matched, at `offset` in the segment, `len` bytes long.
    Record {
        offset: usize,
        len: usize,
        header: Header,
        payload: &'a [u8],
    },
    /// The start of a damaged region (one per run of garbage).
    Corrupt { offset: usize },
}

/// Walks a whole segment image; see the module doc for the rules.
pub struct Scanner<'a> {
    buf: &'a [u8],
    seq: u64,
    pos: usize,
    in_garbage: bool,
}

impl<'a> Scanner<'a> {
    pub fn new(buf: &'a [u8], segment_seq: u64) -> Scanner<'a> {
        Scanner {
            buf,
            seq: segment_seq,
            pos: 0,
            in_garbage: false,
        }
    }

    fn next_block(&self) -> usize {
        align_up(self.pos + 1, BLOCK_BYTES)
    }

    /// Marks a damaged region; returns the item to report if it starts a new run.
    fn garbage(&mut self, offset: usize, resume: usize) -> Option<ScanItem<'a>> {
        self.pos = resume;
        let fresh = !self.in_garbage;
        self.in_garbage = true;
        fresh.then_some(ScanItem::Corrupt { offset })
    }
}

impl<'a> Iterator for Scanner<'a> {
    type Item = ScanItem<'a>;

    fn next(&mut self) -> Option<ScanItem<'a>> {
        while self.pos < self.buf.len() {
            let at = self.pos;
            let room = self.next_block() - at;
            match decode_header(&self.buf[at..], room, self.seq) {
                Head::Padding => self.pos = self.next_block(),
                Head::Bad => {
                    let resume = self.next_block();
                    if let Some(item) = self.garbage(at, resume) {
                        return Some(item);
                    }
                }
                Head::Stale => break,
                Head::Record(header) if header.kind == RecordKind::End as u8 => break,
                Head::Record(header) => {
                    let end = at + record_len(header.payload_len);
                    let Some(payload) = self.buf.get(at + HEADER_BYTES..end) else {
                        // A torn tail: the header made it to disk, the payload did not.
                        let resume = self.next_block();
                        if let Some(item) = self.garbage(at, resume) {
                            return Some(item);
                        }
                        continue;
                    };
                    self.pos = end;
                    self.in_garbage = false;
                    if crc32c::crc32c(payload) != header.payload_crc {
                        // The header is intact, so its length is right: skip exactly and
                        // keep the records that follow in the same batch.
                        return Some(ScanItem::Corrupt { offset: at });
                    }
                    return Some(ScanItem::Record {
                        offset: at,
                        len: end - at,
                        header,
                        payload,
                    });
                }
            }
        }
        self.pos = self.buf.len();
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::SmallRng};

    fn record(kind: RecordKind, seq: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; record_len(payload.len())];
        let parts = [Bytes::copy_from_slice(&payload[..payload.len() / 2]), {
            Bytes::copy_from_slice(&payload[payload.len() / 2..])
        }];
        assert_eq!(encode_into(&mut v, kind, seq, &parts), v.len());
        v
    }

    /// A batch image: records back to back, zero padded to the block.
    fn batch(records: &[Vec<u8>]) -> Vec<u8> {
        let mut v: Vec<u8> = records.concat();
        v.resize(align_up(v.len(), BLOCK_BYTES), 0);
        v
    }

    fn end_block(seq: u64) -> Vec<u8> {
        let mut v = vec![0u8; BLOCK_BYTES];
        encode_end(&mut v, seq);
        v
    }

    fn payloads(buf: &[u8], seq: u64) -> (Vec<Vec<u8>>, usize) {
        let mut out = Vec::new();
        let mut corrupt = 0;
        for item in Scanner::new(buf, seq) {
            match item {
                ScanItem::Record { payload, .. } => out.push(payload.to_vec()),
                ScanItem::Corrupt { .. } => corrupt += 1,
            }
        }
        (out, corrupt)
    }

    #[test]
    fn round_trip() {
        let r = record(RecordKind::Update, 7, b"hello world");
        let (h, p) = decode_one(&r, 7).unwrap();
        assert_eq!(h.kind, RecordKind::Update as u8);
        assert_eq!(h.version, VERSION);
        assert_eq!(p, b"hello world");
        assert!(
            decode_one(&r, 8).is_none(),
            "a record of another segment is rejected"
        );
        let empty = record(RecordKind::Done, 1, b"");
        assert_eq!(decode_one(&empty, 1).unwrap().1, b"");
    }

    #[test]
    fn truncated_input_is_not_a_record() {
        let r = record(RecordKind::Message, 1, &[7u8; 100]);
        for cut in 0..r.len() {
            assert!(decode_one(&r[..cut], 1).is_none(), "cut at {cut}");
        }
        let (got, corrupt) = payloads(&r[..r.len() - 1], 1);
        assert!(got.is_empty());
        assert_eq!(corrupt, 1);
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let r = record(RecordKind::Message, 3, b"0123456789abcdef");
        for bit in 0..r.len() * 8 {
            let mut bad = r.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_one(&bad, 3).is_none(), "bit {bit}");
            let (got, corrupt) = payloads(&batch(&[bad]), 3);
            assert!(got.is_empty(), "bit {bit}");
            assert_eq!(corrupt, 1, "bit {bit}");
        }
    }

    #[test]
    fn zero_padding_is_padding() {
        assert_eq!(decode_header(&[0u8; 64], 64, 0), Head::Padding);
        // Fewer than a header's worth of zeros before the block end is still padding.
        assert_eq!(decode_header(&[0, 0, 0, 9], 3, 0), Head::Padding);
        let (got, corrupt) = payloads(&[0u8; 3 * BLOCK_BYTES], 0);
        assert!(got.is_empty() && corrupt == 0);
    }

    #[test]
    fn batches_records_and_padding_scan_in_order() {
        let a = record(RecordKind::Message, 5, &[1u8; 5000]);
        let b = record(RecordKind::Update, 5, b"b");
        let c = record(RecordKind::Done, 5, b"c");
        let mut img = batch(&[a, b.clone()]);
        // The next batch's record starts exactly where the previous block padding ends.
        let tail_room = BLOCK_BYTES - 10;
        let filler = record(RecordKind::Update, 5, &vec![2u8; tail_room - HEADER_BYTES]);
        img.extend(batch(&[filler, c]));
        let (got, corrupt) = payloads(&img, 5);
        assert_eq!(corrupt, 0);
        assert_eq!(got.len(), 4);
        assert_eq!(got[1], b"b");
        assert_eq!(got[3], b"c");
    }

    #[test]
    fn damaged_payload_is_skipped_exactly() {
        let a = record(RecordKind::Message, 1, b"first");
        let mut b = record(RecordKind::Message, 1, b"second");
        let c = record(RecordKind::Message, 1, b"third");
        let last = b.len() - 1;
        b[last] ^= 0xff;
        let (got, corrupt) = payloads(&batch(&[a, b, c]), 1);
        assert_eq!(got, vec![b"first".to_vec(), b"third".to_vec()]);
        assert_eq!(corrupt, 1);
    }

    #[test]
    fn damaged_header_resyncs_on_the_next_block() {
        let mut a = record(RecordKind::Message, 1, &[9u8; 6000]);
        a[2] = b'X';
        let lost = record(RecordKind::Update, 1, b"lost");
        let mut img = batch(&[a, lost]);
        img.extend(batch(&[record(RecordKind::Done, 1, b"found")]));
        let (got, corrupt) = payloads(&img, 1);
        assert_eq!(got, vec![b"found".to_vec()]);
        assert_eq!(corrupt, 1, "one run of garbage counts once");
    }

    #[test]
    fn the_end_marker_and_stale_records_end_the_log() {
        // A recycled file: this life's batch and End marker over an older life's records,
        // whose first bytes here are the middle of an old record.
        let old_life = batch(&[
            record(RecordKind::Message, 3, &[5u8; 5000]),
            record(RecordKind::Message, 3, b"old"),
        ]);
        let mut img = batch(&[record(RecordKind::Message, 9, b"new")]);
        img.extend(end_block(9));
        img.extend_from_slice(&old_life[img.len()..]);
        img.extend(batch(&[record(RecordKind::Done, 3, b"older")]));
        let (got, corrupt) = payloads(&img, 9);
        assert_eq!(got, vec![b"new".to_vec()]);
        assert_eq!(corrupt, 0, "stale bytes past the end are not damage");

        // Without the End marker, the first stale header ends the log too.
        let mut img = batch(&[record(RecordKind::Message, 9, b"new")]);
        img.extend(batch(&[record(RecordKind::Message, 3, b"old")]));
        assert_eq!(payloads(&img, 9), (vec![b"new".to_vec()], 0));

        // A damaged header followed by stale data: counted once, nothing stale returned.
        let mut img = batch(&[record(RecordKind::Message, 9, b"new")]);
        img[0] ^= 1;
        img.extend(batch(&[record(RecordKind::Message, 3, b"old")]));
        assert_eq!(payloads(&img, 9), (vec![], 1));
    }

    #[test]
    fn random_garbage_never_panics() {
        let mut rng = SmallRng::seed_from_u64(0x5eed);
        let mut good = batch(&[
            record(RecordKind::Message, 2, &[3u8; 300]),
            record(RecordKind::Done, 2, b"x"),
        ]);
        good.extend(end_block(2));
        for round in 0..2000 {
            let len = rng.random_range(0..3 * BLOCK_BYTES);
            let mut buf = vec![0u8; len];
            rng.fill(&mut buf[..]);
            if round % 2 == 0 {
                // Plant a valid batch on a block after the noise, so the scanner resyncs
                // onto it, then damage one random byte anywhere.
                let noise = rng.random();
                buf.resize(align_up(len, BLOCK_BYTES), noise);
                buf.extend_from_slice(&good);
                let at = rng.random_range(0..buf.len());
                buf[at] = rng.random();
            }
            let mut seen = 0;
            for item in Scanner::new(&buf, 2) {
                if let ScanItem::Record {
                    offset, len, payload, ..
                } = item
                {
                    assert_eq!(len, HEADER_BYTES + payload.len());
                    assert!(offset + len <= buf.len());
                }
                seen += 1;
                assert!(seen <= buf.len() + 1, "the scanner always advances");
            }
            let _ = decode_one(&buf, 2);
        }
    }
}
