//! Ogg page serialisation (RFC 3533) and a strict page scanner.
//!
//! Tribune writes its own pages because packaging must be a pure function
//! of the track: page sequence numbers come from group indices, not from a
//! writer's running counter.

use bytes::{BufMut, BytesMut};

pub const HEADER_LEN: usize = 27;
pub const FLAG_CONTINUED: u8 = 0x01;
pub const FLAG_BOS: u8 = 0x02;
pub const FLAG_EOS: u8 = 0x04;

/// Granule position of a page on which no packet ends.
pub const NO_GRANULE: u64 = u64::MAX;

/// The Ogg CRC-32 (RFC 3533: polynomial 0x04c11db7, no reflection, zero
/// init, no final xor).
const OGG_CRC: crc::Algorithm<u32> = crc::Algorithm {
    width: 32,
    poly: 0x04c1_1db7,
    init: 0,
    refin: false,
    refout: false,
    xorout: 0,
    check: 0x89a1_897f,
    residue: 0,
};

/// Sixteen tables: every listener `tribune-load` models checks every page,
/// and a byte-at-a-time CRC was 38% of its CPU.
static CRC: crc::Crc<u32, crc::Table<16>> = crc::Crc::<u32, crc::Table<16>>::new(&OGG_CRC);

/// The Ogg CRC-32 of `data`.
pub fn crc32(data: &[u8]) -> u32 {
    CRC.checksum(data)
}

/// The CRC of a whole page as if its CRC field (bytes 22..26) were zero,
/// without copying the page.
fn page_crc(page: &[u8]) -> u32 {
    let mut digest = CRC.digest();
    digest.update(&page[..22]);
    digest.update(&[0; 4]);
    digest.update(&page[26..]);
    digest.finalize()
}

/// Page header fields that the writer takes from the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageHeader {
    pub flags: u8,
    pub granule: u64,
    pub serial: u32,
    pub sequence: u32,
}

/// Appends one page holding complete `packets` to `out`. The caller keeps
/// the total lacing count within 255 (the track closes groups to ensure it).
pub fn write_page(out: &mut BytesMut, header: PageHeader, packets: &[&[u8]]) {
    let mut lacing = Vec::with_capacity(packets.len());
    for p in packets {
        lacing.extend(std::iter::repeat_n(255u8, p.len() / 255));
        lacing.push((p.len() % 255) as u8);
    }
    debug_assert!(lacing.len() <= 255, "page with {} segments", lacing.len());
    out.reserve(HEADER_LEN + lacing.len() + packets.iter().map(|p| p.len()).sum::<usize>());
    write_raw_page(out, header, &lacing, packets);
}

/// Appends a page with an explicit segment table (which may leave a packet
/// open for the next page) and computes its CRC.
pub fn write_raw_page(out: &mut BytesMut, header: PageHeader, lacing: &[u8], body: &[&[u8]]) {
    let start = out.len();
    out.put_slice(b"OggS");
    out.put_u8(0);
    out.put_u8(header.flags);
    out.put_u64_le(header.granule);
    out.put_u32_le(header.serial);
    out.put_u32_le(header.sequence);
    out.put_u32_le(0); // CRC, patched below
    out.put_u8(lacing.len() as u8);
    out.put_slice(lacing);
    for part in body {
        out.put_slice(part);
    }
    let crc = crc32(&out[start..]);
    out[start + 22..start + 26].copy_from_slice(&crc.to_le_bytes());
}

/// A page found by [`scan_page`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScannedPage {
    pub header: PageHeader,
    /// Total length of the page in bytes.
    pub len: usize,
    /// Number of packets that end on this page.
    pub packets_ending: u64,
    /// Whether the page's last packet continues on the next page.
    pub ends_open: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanError {
    /// More bytes are needed to finish the page.
    Incomplete,
    /// The bytes are not a valid Ogg page.
    Invalid(&'static str),
    /// The page is complete but its checksum does not match.
    BadCrc { stored: u32, computed: u32 },
}

/// Reads the page at the start of `data`, checking its CRC.
pub fn scan_page(data: &[u8]) -> Result<ScannedPage, ScanError> {
    if data.len() < HEADER_LEN {
        return Err(ScanError::Incomplete);
    }
    if &data[..4] != b"OggS" {
        return Err(ScanError::Invalid("no Ogg capture pattern"));
    }
    if data[4] != 0 {
        return Err(ScanError::Invalid("unknown Ogg stream structure version"));
    }
    let nsegs = data[26] as usize;
    if data.len() < HEADER_LEN + nsegs {
        return Err(ScanError::Incomplete);
    }
    let lacing = &data[HEADER_LEN..HEADER_LEN + nsegs];
    let body: usize = lacing.iter().map(|&l| l as usize).sum();
    let len = HEADER_LEN + nsegs + body;
    if data.len() < len {
        return Err(ScanError::Incomplete);
    }
    let field =
        |at: usize| u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
    let stored = field(22);
    let computed = page_crc(&data[..len]);
    if stored != computed {
        return Err(ScanError::BadCrc { stored, computed });
    }
    let granule = u64::from(field(6)) | (u64::from(field(10)) << 32);
    Ok(ScannedPage {
        header: PageHeader {
            flags: data[5],
            granule,
            serial: field(14),
            sequence: field(18),
        },
        len,
        packets_ending: lacing.iter().filter(|&&l| l < 255).count() as u64,
        ends_open: lacing.last().is_some_and(|&l| l == 255),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_reference_vector() {
        // CRC-32/MPEG-2-like parameters with zero init: check value of "123456789"
        assert_eq!(crc32(b"123456789"), 0x89a1_897f);
    }

    #[test]
    fn written_pages_scan_back_and_corruption_is_caught() {
        let mut out = BytesMut::new();
        let big = vec![7u8; 600];
        let header = PageHeader {
            flags: 0,
            granule: 9600,
            serial: 42,
            sequence: 3,
        };
        write_page(&mut out, header, &[b"abc", &big]);
        let page = scan_page(&out).unwrap();
        assert_eq!(page.header, header);
        assert_eq!(page.len, out.len());
        assert_eq!(page.packets_ending, 2);
        assert!(!page.ends_open);
        assert_eq!(scan_page(&out[..out.len() - 1]), Err(ScanError::Incomplete));
        let mut bad = out.to_vec();
        bad[40] ^= 0xff;
        assert!(matches!(scan_page(&bad), Err(ScanError::BadCrc { .. })));
        assert_eq!(
            scan_page(b"RIFF....................................."),
            Err(ScanError::Invalid("no Ogg capture pattern"))
        );
    }

    #[test]
    fn pages_are_accepted_by_the_ogg_crate() {
        let mut out = BytesMut::new();
        let h = PageHeader {
            flags: FLAG_BOS,
            granule: 0,
            serial: 7,
            sequence: 0,
        };
        write_page(&mut out, h, &[b"OpusHead-ish"]);
        let h = PageHeader {
            flags: 0,
            granule: 960,
            serial: 7,
            sequence: 1,
        };
        write_page(&mut out, h, &[&[1u8; 300][..]]);
        let mut reader = ogg::PacketReader::new(std::io::Cursor::new(out.to_vec()));
        let p1 = reader.read_packet_expected().unwrap();
        assert_eq!(p1.data, b"OpusHead-ish");
        let p2 = reader.read_packet_expected().unwrap();
        assert_eq!(p2.data.len(), 300);
        assert_eq!(p2.absgp_page(), 960);
    }
}
