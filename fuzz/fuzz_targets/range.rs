//! The Range header as the replay endpoint sees it: `ignore_unknown_range`
//! drops ranges in units other than bytes, then tower-http's ServeFile
//! parses what is left with http-range-header and validates it against the
//! file's size (a 416 answers a parse or validation error).
#![no_main]
use http::header::RANGE;
use http::HeaderValue;
use http_range_header::{parse_range_header, RangeUnsatisfiableError};
use libfuzzer_sys::fuzz_target;
use tribune_fuzz::Reader;
use tribune_server::control::ignore_unknown_range;

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let size = match r.u8() {
        0 => 0,
        1 => u64::MAX,
        _ => r.u64() % (1 << 40),
    };
    // hyper's parser (httparse) hands header values over without the
    // optional whitespace around them: a leading space never reaches the
    // server, so none is fed here
    let raw = r.rest();
    let Ok(value) = HeaderValue::from_bytes(raw.trim_ascii()) else {
        return;
    };
    let mut req = axum::extract::Request::new(axum::body::Body::empty());
    req.headers_mut().insert(RANGE, value.clone());
    let req = ignore_unknown_range(req);
    // what ServeFile reads: a header that is not visible ASCII is no range
    let Some(text) = req.headers().get(RANGE).and_then(|v| v.to_str().ok()) else {
        return;
    };
    assert_eq!(
        text.as_bytes(),
        value.as_bytes(),
        "the header is kept or dropped whole"
    );
    match parse_range_header(text).and_then(|p| p.validate(size)) {
        Ok(ranges) => {
            assert!(!ranges.is_empty());
            for r in &ranges {
                // ServeFile computes end - start + 1 and seeks to start
                assert!(r.start() <= r.end());
                if size > 0 {
                    assert!(*r.end() < size);
                }
            }
        }
        // a range in another unit is ignored (RFC 9110 §14.2), never refused
        Err(RangeUnsatisfiableError::DoesNotStartWithToken) => {
            panic!("range {text:?} of an unknown unit answered 416")
        }
        Err(_) => {}
    }
});
