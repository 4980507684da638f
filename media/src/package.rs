//! Packaging: the program track as Ogg Opus pages.
//!
//! Pure functions of the track. Group `n` is always page `n + 2` of the
//! space's fixed serial, so any node packaging the same groups produces the
//! same bytes, and a listener joining mid-stream gets pages that line up
//! with everyone else's.

use crate::ogg_page::{write_page, PageHeader, FLAG_BOS, FLAG_EOS};
use crate::opus::{opus_tags, OpusHead};
use bytes::{Bytes, BytesMut};
use tribune_core::track::Group;

/// Vendor string in OpusTags.
pub const VENDOR: &str = concat!("tribune ", env!("CARGO_PKG_VERSION"));
/// OpusTags comment carrying the wall clock (ms since the Unix epoch) of
/// granule 0, so a client can compute its latency from any page's granule.
pub const EPOCH_TAG: &str = "TRIBUNE_EPOCH_MS";

/// Pages 0 and 1 of every Ogg Opus stream Tribune writes (the program,
/// speaker tracks, the load generator's source, test streams): OpusHead
/// (beginning of stream) and OpusTags.
pub fn opus_header_pages(
    serial: u32,
    head: OpusHead,
    vendor: &str,
    comments: &[(&str, String)],
) -> Bytes {
    let mut out = BytesMut::with_capacity(256);
    write_page(
        &mut out,
        PageHeader {
            flags: FLAG_BOS,
            granule: 0,
            serial,
            sequence: 0,
        },
        &[&head.to_bytes()],
    );
    write_page(
        &mut out,
        PageHeader {
            flags: 0,
            granule: 0,
            serial,
            sequence: 1,
        },
        &[&opus_tags(vendor, comments)],
    );
    out.freeze()
}

/// The program's header pages: its title, and the wall clock of granule 0.
pub fn header_pages(serial: u32, title: &str, epoch_ms: u64) -> Bytes {
    opus_header_pages(
        serial,
        OpusHead::PROGRAM,
        VENDOR,
        &[
            (EPOCH_TAG, epoch_ms.to_string()),
            ("TITLE", title.to_string()),
        ],
    )
}

/// Page sequence number of a group's page.
pub fn group_sequence(group_index: u64) -> u32 {
    (group_index + 2) as u32
}

/// Inverse of [`group_sequence`] for audio pages.
pub fn group_index(sequence: u32) -> Option<u64> {
    u64::from(sequence).checked_sub(2)
}

/// The one Ogg page of a closed group.
pub fn group_page(serial: u32, group: &Group) -> Bytes {
    let packets: Vec<&[u8]> = group.packets.iter().map(|p| &p.data[..]).collect();
    let mut out = BytesMut::new();
    let header = PageHeader {
        flags: if group.last { FLAG_EOS } else { 0 },
        granule: group.end_granule(),
        serial,
        sequence: group_sequence(group.index),
    };
    write_page(&mut out, header, &packets);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ogg_page::scan_page;
    use tribune_core::track::Track;

    fn track_groups(n_packets: usize) -> Vec<Group> {
        let mut t = Track::new(4800);
        let mut groups = Vec::new();
        for i in 0..n_packets {
            let data = Bytes::from(vec![(31 << 3) as u8, i as u8, 0xAA]);
            groups.extend(t.push(data, 960, 1_000 + i as u64 * 20));
        }
        groups.extend(t.finish());
        groups
    }

    #[test]
    fn packaging_is_deterministic() {
        // Same groups, packaged twice (as two nodes would): same bytes.
        let a: Vec<Bytes> = track_groups(23).iter().map(|g| group_page(99, g)).collect();
        let b: Vec<Bytes> = track_groups(23).iter().map(|g| group_page(99, g)).collect();
        assert_eq!(a, b);
        assert_eq!(a.len(), 5);
        assert_eq!(header_pages(99, "t", 5), header_pages(99, "t", 5));
    }

    #[test]
    fn pages_carry_sequence_granule_and_valid_crc() {
        let groups = track_groups(23);
        for g in &groups {
            let page = scan_page(&group_page(7, g)).expect("valid page");
            assert_eq!(page.header.sequence, group_sequence(g.index));
            assert_eq!(page.header.granule, g.end_granule());
            assert_eq!(page.header.serial, 7);
            assert_eq!(page.packets_ending, g.packets.len() as u64);
            assert_eq!(page.header.flags & FLAG_EOS != 0, g.last);
        }
        assert_eq!(group_index(group_sequence(41)), Some(41));
    }

    #[test]
    fn a_whole_stream_reads_back_through_the_ogg_crate() {
        let mut file = header_pages(5, "title", 123).to_vec();
        for g in track_groups(12) {
            file.extend_from_slice(&group_page(5, &g));
        }
        let mut reader = ogg::PacketReader::new(std::io::Cursor::new(file));
        let head = reader.read_packet_expected().unwrap();
        assert_eq!(OpusHead::parse(&head.data), Ok(OpusHead::PROGRAM));
        let tags = reader.read_packet_expected().unwrap();
        let comments = crate::opus::parse_opus_tags(&tags.data).unwrap();
        assert!(comments.contains(&(EPOCH_TAG.to_string(), "123".to_string())));
        let mut n = 0;
        while let Some(p) = reader.read_packet().unwrap() {
            assert_eq!(p.data[1], n as u8);
            n += 1;
        }
        assert_eq!(n, 12);
    }
}
