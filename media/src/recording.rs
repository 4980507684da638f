//! Recording layout and crash recovery.
//!
//! A recording is the program's header pages followed by exactly the pages
//! listeners received. After a crash the file may end in a torn page; the
//! valid recording is the longest prefix of CRC-valid pages, and the track
//! resumes right after its last page.

use crate::ogg_page::{scan_page, FLAG_EOS, HEADER_LEN};
use crate::opus::parse_opus_tags;
use crate::package::{group_index, EPOCH_TAG};
use tribune_core::track::TrackPosition;

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Recovered {
    /// Length of the valid prefix; everything after it is to be truncated.
    pub valid_len: u64,
    /// Both header pages are intact.
    pub has_headers: bool,
    /// Where the track continues.
    pub position: TrackPosition,
    /// The recording already carries its end-of-stream page.
    pub ended: bool,
    /// The epoch recorded in OpusTags.
    pub epoch_ms: Option<u64>,
    /// Audio pages in the valid prefix.
    pub audio_pages: u64,
}

/// Scans a recording and finds its valid prefix.
pub fn recover(data: &[u8]) -> Recovered {
    let mut r = Recovered::default();
    let mut at = 0usize;
    let mut pages_seen = 0u32;
    while let Ok(page) = scan_page(&data[at..]) {
        if page.header.sequence != pages_seen {
            break; // a gap: what follows is not a continuation of this recording
        }
        match group_index(page.header.sequence) {
            None if page.header.sequence == 1 => {
                let nsegs = data[at + 26] as usize;
                let body = &data[at + HEADER_LEN + nsegs..at + page.len];
                r.epoch_ms = parse_opus_tags(body).and_then(|tags| {
                    tags.into_iter()
                        .find(|(k, _)| k == EPOCH_TAG)
                        .and_then(|(_, v)| v.parse().ok())
                });
                r.has_headers = true;
            }
            None => {}
            Some(index) => {
                r.audio_pages += 1;
                r.position.next_group = index + 1;
                r.position.granule = page.header.granule;
                r.position.next_seq += page.packets_ending;
                r.ended = page.header.flags & FLAG_EOS != 0;
            }
        }
        at += page.len;
        pages_seen += 1;
        r.valid_len = at as u64;
    }
    if !r.has_headers {
        r = Recovered::default();
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::{group_page, header_pages};
    use bytes::Bytes;
    use tribune_core::track::Track;

    fn recording(packets: usize, finish: bool) -> (Vec<u8>, Vec<usize>) {
        let mut file = header_pages(3, "rec", 1_700_000_000_000).to_vec();
        let mut ends = vec![file.len()];
        let mut t = Track::new(4800);
        for i in 0..packets {
            for g in t.push(Bytes::from(vec![31 << 3, i as u8]), 960, 0) {
                file.extend_from_slice(&group_page(3, &g));
                ends.push(file.len());
            }
        }
        if finish {
            if let Some(g) = t.finish() {
                file.extend_from_slice(&group_page(3, &g));
                ends.push(file.len());
            }
        }
        (file, ends)
    }

    #[test]
    fn a_clean_recording_is_recovered_whole() {
        let (file, _) = recording(52, true);
        let r = recover(&file);
        assert_eq!(r.valid_len, file.len() as u64);
        assert!(r.has_headers && r.ended);
        assert_eq!(r.position.next_seq, 52);
        assert_eq!(r.position.granule, 52 * 960);
        assert_eq!(r.position.next_group, 11);
        assert_eq!(r.epoch_ms, Some(1_700_000_000_000));
    }

    #[test]
    fn a_torn_tail_is_cut_at_the_last_valid_page() {
        let (file, ends) = recording(50, false);
        // crash in the middle of the 7th audio page
        let cut = ends[6] + 10;
        let r = recover(&file[..cut]);
        assert_eq!(r.valid_len, ends[6] as u64);
        assert_eq!(r.position.next_group, 6);
        assert_eq!(r.position.next_seq, 30);
        assert_eq!(r.position.granule, 30 * 960);
        assert!(!r.ended);
        // garbage after the last page (a torn write of zeros) is also cut
        let mut zeros = file[..ends[4]].to_vec();
        zeros.extend_from_slice(&[0u8; 4000]);
        assert_eq!(recover(&zeros).valid_len, ends[4] as u64);
        // a flipped bit in page 5 ends the valid prefix before it
        let mut flipped = file.clone();
        flipped[ends[4] + 30] ^= 1;
        assert_eq!(recover(&flipped).valid_len, ends[4] as u64);
    }

    #[test]
    fn a_recording_without_headers_starts_over() {
        let (file, ends) = recording(10, false);
        assert_eq!(recover(&file[..ends[0] - 1]), Recovered::default());
        assert_eq!(recover(&[]), Recovered::default());
    }
}
