//! The request head as the front door reads it (httparse with 64 header
//! slots, then `RequestHead`), what it asks of it, and the body framing the
//! head declares, decoded from the bytes after the head in pieces.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tribune_fuzz::pieces;
use tribune_server::control::auth::token_from_header;
use tribune_media::http1::{BodyFraming, RequestHead};

fuzz_target!(|data: &[u8]| {
    let Some((&seed, wire)) = data.split_first() else {
        return;
    };
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(len)) = req.parse(wire) else {
        return;
    };
    assert!(len <= wire.len());
    let Some(head) = RequestHead::from_parsed(&req) else {
        return;
    };
    assert!(!head.path.contains('?'));
    assert!(head
        .headers
        .iter()
        .all(|(n, _)| *n == n.to_ascii_lowercase()));
    for name in ["ticket", "token", "t", ""] {
        if let Some(v) = head.query_param(name) {
            let q = head.query.as_deref().expect("a parameter without a query");
            assert!(q.contains(&format!("{name}={v}")));
            assert!(!v.contains('&'));
        }
    }
    let _ = head.wants_html();
    let _ = head.header("expect");
    if let Ok(token) = token_from_header(head.header("authorization")) {
        let verifier = tribune_core::token::Verifier::default()
            .with_legacy_secret(b"0123456789abcdef0123456789abcdef");
        let _ = tribune_core::token::verify(&token, &verifier, 0);
    }
    let encodings: Vec<&str> = head.header_all("transfer-encoding").collect();
    let lengths: Vec<&str> = head.header_all("content-length").collect();
    let Ok(mut framing) = BodyFraming::of(&head) else {
        return;
    };
    // an accepted head declares its body one way only
    assert!(encodings.is_empty() || lengths.is_empty());
    let declared = match &framing {
        BodyFraming::Length(n) => {
            assert!(encodings.is_empty() && !lengths.is_empty());
            Some(*n)
        }
        BodyFraming::Chunked(_) => {
            assert_eq!(encodings.len(), 1);
            assert!(encodings[0].trim().eq_ignore_ascii_case("chunked"));
            None
        }
        BodyFraming::UntilClose => {
            assert!(encodings.is_empty() && lengths.is_empty());
            None
        }
    };
    let rest = &wire[len..];
    let mut input = BytesMut::new();
    let mut out = Vec::new();
    for part in pieces(seed, rest) {
        input.extend_from_slice(part);
        match framing.decode(&mut input, &mut out) {
            Ok(false) => {}
            Ok(true) | Err(_) => break,
        }
    }
    assert!(out.len() <= rest.len());
    if let Some(n) = declared {
        assert!(out.len() as u64 <= n);
        assert_eq!(out, &rest[..out.len()]);
    }
    if let BodyFraming::UntilClose = framing {
        assert_eq!(out, rest);
    }
});
