//! The ingest demuxer, fed the stream in pieces as the socket might deliver
//! it (split points come from the first input byte).
#![no_main]
use libfuzzer_sys::fuzz_target;
use tribune_fuzz::pieces;
use tribune_media::demux::{Demuxer, IngestError, SourcePacket};
use tribune_media::opus::{packet_duration, MAX_PACKET_BYTES};

/// Largest Ogg page: header, 255 lacing values of 255 bytes each.
const MAX_PAGE: usize = 27 + 255 + 255 * 255;

fn feed(parts: &[&[u8]]) -> (Vec<SourcePacket>, Option<IngestError>, Demuxer) {
    let mut d = Demuxer::new();
    let mut out = Vec::new();
    for part in parts {
        if let Err(e) = d.push(part, &mut out) {
            let status = e.http_status();
            assert!(status == 400 || status == 413 || status == 415);
            return (out, Some(e), d);
        }
        // whatever is held back is less than one page
        assert!(d.buffered() < MAX_PAGE, "buffered {}", d.buffered());
    }
    (out, None, d)
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let (split, split_err, d) = feed(&pieces(seed, stream));
    let total: usize = split.iter().map(|p| p.data.len()).sum();
    assert!(total <= stream.len());
    for p in &split {
        assert!(!p.data.is_empty() && p.data.len() <= MAX_PACKET_BYTES);
        assert_eq!(packet_duration(&p.data), Ok(p.duration));
    }
    if !split.is_empty() {
        let head = d.head().expect("audio before an OpusHead");
        assert!((1..=2).contains(&head.channels));
    }
    // the read boundaries change nothing: same packets, same verdict
    let (whole, whole_err, _) = feed(&[stream]);
    assert_eq!(split, whole);
    assert_eq!(split_err, whole_err);
});
