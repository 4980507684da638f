//! The strict Ogg page scanner that frames every source upload.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tribune_media::ogg_page::{scan_page, write_raw_page, ScanError, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    match scan_page(data) {
        Ok(page) => {
            assert!(page.len >= HEADER_LEN && page.len <= data.len());
            let nsegs = data[26] as usize;
            let lacing = &data[HEADER_LEN..HEADER_LEN + nsegs];
            let body: usize = lacing.iter().map(|&l| l as usize).sum();
            assert_eq!(page.len, HEADER_LEN + nsegs + body);
            assert!(page.packets_ending <= nsegs as u64);
            // a page that scans is exactly what the writer makes of its fields
            let mut again = BytesMut::new();
            let body_bytes = &data[HEADER_LEN + nsegs..page.len];
            write_raw_page(&mut again, page.header, lacing, &[body_bytes]);
            assert_eq!(&again[..], &data[..page.len]);
            // and any byte missing from it makes it incomplete, never valid
            assert_eq!(scan_page(&data[..page.len - 1]), Err(ScanError::Incomplete));
        }
        Err(ScanError::Incomplete) => {}
        Err(ScanError::Invalid(_)) => assert!(data.len() >= HEADER_LEN),
        Err(ScanError::BadCrc { stored, computed }) => assert_ne!(stored, computed),
    }
});
