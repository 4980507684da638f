//! The chunked request-body decoder (source uploads), fed in pieces.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tribune_fuzz::pieces;
use tribune_media::chunked::{ChunkedDecoder, ChunkedError};

struct Run {
    out: Vec<u8>,
    result: Result<bool, ChunkedError>,
    /// Bytes taken off the input (the body and its framing).
    consumed: usize,
}

fn feed(parts: &[&[u8]]) -> Run {
    let mut d = ChunkedDecoder::default();
    let mut input = BytesMut::new();
    let mut out = Vec::new();
    let mut fed = 0;
    let mut result = Ok(false);
    for part in parts {
        input.extend_from_slice(part);
        fed += part.len();
        result = d.decode(&mut input, &mut out);
        // output never exceeds input, and the buffer held stays bounded
        assert!(out.len() <= fed);
        assert!(out.len() + input.len() <= fed);
        if result.is_ok() {
            assert!(
                input.len() <= 8192 + 2 || result == Ok(true),
                "{}",
                input.len()
            );
        }
        if result != Ok(false) {
            break;
        }
    }
    Run {
        out,
        result,
        consumed: fed - input.len(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, body)) = data.split_first() else {
        return;
    };
    let split = feed(&pieces(seed, body));
    let whole = feed(&[body]);
    // the read boundaries change nothing, except that an over-long line is
    // refused when it is still open (so it may pass when it arrives whole)
    let too_long = |r: &Result<bool, ChunkedError>| matches!(r, Err(ChunkedError(m)) if m.contains("too long"));
    if !too_long(&split.result) && !too_long(&whole.result) {
        assert_eq!(split.result, whole.result);
        if split.result.is_ok() {
            assert_eq!(split.out, whole.out);
        }
        if split.result == Ok(true) {
            assert_eq!(split.consumed, whole.consumed);
        }
    }
});
