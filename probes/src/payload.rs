//! The probe message: a fixed header that identifies the probe, then padding to the configured
//! size, all covered by a CRC-32.
//!
//! ```text
//! offset size field
//!      0    4 magic "XPRB"
//!      4    1 version (1)
//!      5    3 reserved, zero
//!      8    8 instance id (random per process start)
//!     16    8 cell key (stable hash of the cell id)
//!     24    8 sequence number
//!     32    8 send time: monotonic nanoseconds since process start
//!     40    4 CRC-32 of bytes 0..40 and the padding
//!     44    .. padding: a pattern derived from the sequence number
//! ```
//!
//! Decoding never panics, whatever the bytes: anything that is not a well-formed probe of this
//! version is reported as such.

/// Bytes before the padding.
pub const HEADER_LEN: usize = 44;
const MAGIC: [u8; 4] = *b"XPRB";
const VERSION: u8 = 1;
const CRC_AT: usize = 40;

/// The identity of one probe message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub instance: u64,
    pub cell: u64,
    pub seq: u64,
    /// Monotonic nanoseconds since the sending process started.
    pub sent_ns: u64,
}

/// Why bytes are not a valid probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("shorter than a probe header")]
    Short,
    #[error("not a crossprobe message")]
    Magic,
    #[error("unsupported payload version {0}")]
    Version(u8),
    /// Well-formed header whose checksum does not match: the header is returned so the
    /// probe it claims to be can be marked corrupt, but its fields are untrusted.
    #[error("checksum mismatch")]
    Checksum(Header),
}

impl Header {
    /// The message: header, then padding up to `size` bytes (at least the header).
    pub fn encode(&self, size: usize) -> Vec<u8> {
        let mut buf = vec![0u8; size.max(HEADER_LEN)];
        buf[0..4].copy_from_slice(&MAGIC);
        buf[4] = VERSION;
        buf[8..16].copy_from_slice(&self.instance.to_be_bytes());
        buf[16..24].copy_from_slice(&self.cell.to_be_bytes());
        buf[24..32].copy_from_slice(&self.seq.to_be_bytes());
        buf[32..40].copy_from_slice(&self.sent_ns.to_be_bytes());
        let mut pattern = self.seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        for b in &mut buf[HEADER_LEN..] {
            pattern ^= pattern << 13;
            pattern ^= pattern >> 7;
            pattern ^= pattern << 17;
            *b = pattern as u8;
        }
        let crc = checksum(&buf);
        buf[CRC_AT..HEADER_LEN].copy_from_slice(&crc.to_be_bytes());
        buf
    }

    /// Parses and verifies a message.
    pub fn decode(bytes: &[u8]) -> Result<Header, DecodeError> {
        if bytes.len() < HEADER_LEN {
            return Err(DecodeError::Short);
        }
        if bytes[0..4] != MAGIC {
            return Err(DecodeError::Magic);
        }
        if bytes[4] != VERSION {
            return Err(DecodeError::Version(bytes[4]));
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_be_bytes(b)
        };
        let header = Header { instance: u64_at(8), cell: u64_at(16), seq: u64_at(24), sent_ns: u64_at(32) };
        let mut stored = [0u8; 4];
        stored.copy_from_slice(&bytes[CRC_AT..HEADER_LEN]);
        if u32::from_be_bytes(stored) != checksum(bytes) || bytes[5..8] != [0, 0, 0] {
            return Err(DecodeError::Checksum(header));
        }
        Ok(header)
    }
}

/// The cell key a message claims, without verifying it: enough to route a message to its cell
/// among those sharing a partition. The cell verifies it.
pub fn peek_cell(bytes: &[u8]) -> Option<u64> {
    if bytes.len() < HEADER_LEN || bytes[0..4] != MAGIC {
        return None;
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[16..24]);
    Some(u64::from_be_bytes(b))
}

/// CRC-32 over everything but the checksum field itself.
fn checksum(buf: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&buf[..CRC_AT]);
    h.update(&buf[HEADER_LEN..]);
    h.finalize()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn header(seq: u64) -> Header {
        Header { instance: 0xdead_beef, cell: 42, seq, sent_ns: 1_234_567 }
    }

    #[test]
    fn round_trips_at_every_size_from_the_header_up() {
        for size in [0, 1, HEADER_LEN, 64, 256, 4096] {
            let bytes = header(7).encode(size);
            assert_eq!(bytes.len(), size.max(HEADER_LEN));
            assert_eq!(Header::decode(&bytes), Ok(header(7)));
        }
    }

    #[test]
    fn peek_reads_the_claimed_cell() {
        assert_eq!(peek_cell(&header(3).encode(64)), Some(42));
        assert_eq!(peek_cell(b"garbage"), None);
    }

    #[test]
    fn rejects_what_is_not_a_probe() {
        assert_eq!(Header::decode(b"hello"), Err(DecodeError::Short));
        assert_eq!(Header::decode(&[0u8; 64]), Err(DecodeError::Magic));
        let mut v2 = header(1).encode(64);
        v2[4] = 2;
        assert_eq!(Header::decode(&v2), Err(DecodeError::Version(2)));
    }

    #[test]
    fn a_flipped_bit_anywhere_is_a_checksum_error() {
        let good = header(9).encode(128);
        // Bits 0..40 are magic/version (other errors) past byte 8; check header fields and padding.
        for i in (8..good.len()).filter(|i| !(CRC_AT..HEADER_LEN).contains(i)) {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            assert!(
                matches!(Header::decode(&bad), Err(DecodeError::Checksum(_))),
                "flip at byte {i} went unnoticed"
            );
        }
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Header::decode(&bytes);
        }

        #[test]
        fn any_header_round_trips(instance: u64, cell: u64, seq: u64, sent_ns: u64, size in 0usize..2048) {
            let h = Header { instance, cell, seq, sent_ns };
            prop_assert_eq!(Header::decode(&h.encode(size)), Ok(h));
        }
    }
}
