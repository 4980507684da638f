//! Opus packet framing (RFC 6716 §3) and the Ogg Opus headers (RFC 7845).
#![no_main]
use libfuzzer_sys::fuzz_target;
use tribune_media::opus::{
    opus_tags, packet_duration, parse_opus_tags, OpusHead, MAX_PACKET_BYTES,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(samples) = packet_duration(data) {
        // 2.5 ms ..= 120 ms, in whole 2.5 ms steps
        assert!(
            (120..=5760).contains(&samples) && samples % 120 == 0,
            "{samples}"
        );
        assert!(!data.is_empty() && data.len() <= MAX_PACKET_BYTES);
    }
    if let Ok(head) = OpusHead::parse(data) {
        assert!((1..=2).contains(&head.channels));
        assert_eq!(OpusHead::parse(&head.to_bytes()), Ok(head));
    }
    if let Some(tags) = parse_opus_tags(data) {
        assert!(tags.len() <= 1024);
        let text: usize = tags.iter().map(|(k, v)| k.len() + v.len() + 1).sum();
        assert!(text <= data.len());
        // what was read writes back to the same comments
        let comments: Vec<(&str, String)> =
            tags.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        assert_eq!(
            parse_opus_tags(&opus_tags("v", &comments)),
            Some(tags.clone())
        );
    }
    // comments built from the input read back as written (keys without '=')
    let text = String::from_utf8_lossy(data);
    let comments: Vec<(&str, String)> = text
        .split('\n')
        .filter_map(|line| line.split_once('\t'))
        .filter(|(k, _)| !k.contains('='))
        .map(|(k, v)| (k, v.to_string()))
        .take(1024)
        .collect();
    let parsed = parse_opus_tags(&opus_tags(&text, &comments));
    let expect: Vec<(String, String)> = comments
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    assert_eq!(parsed, Some(expect));
});
