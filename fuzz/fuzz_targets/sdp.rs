//! The WHIP offer path up to str0m: the SDP parser, and for offers that
//! parse, the server's own `RtcHub::answer` (ICE-lite, Opus only, one host
//! candidate, `accept_offer`), whose answer must parse back.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use str0m::change::{SdpAnswer, SdpOffer};
use tribune_server::stage::RtcHub;

/// The hub is only bound once (a UDP socket on loopback); `answer` itself
/// neither sends nor needs the runtime to run.
fn hub() -> &'static RtcHub {
    static HUB: OnceLock<(tokio::runtime::Runtime, RtcHub)> = OnceLock::new();
    &HUB.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("a runtime");
        let hub = rt
            .block_on(RtcHub::bind(
                "127.0.0.1:0".parse().expect("an address"),
                None,
            ))
            .expect("a loopback UDP port");
        (rt, hub)
    })
    .1
}

fuzz_target!(|data: &[u8]| {
    let Ok(sdp) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = SdpOffer::from_sdp_string(sdp);
    match hub().answer(sdp) {
        Ok((rtc, mid, answer)) => {
            assert!(parsed.is_ok());
            assert!(answer.contains(&format!("a=mid:{mid}")));
            assert!(rtc.media(mid).is_some());
            SdpAnswer::from_sdp_string(&answer).expect("our answer parses");
        }
        Err(e) => assert!(matches!(e.status(), 400 | 415)),
    }
});
