//! The JSON bodies of the stage and space API, deserialized as the server
//! does (structs of the same shape, `deny_unknown_fields`), then what the
//! server does with them: `clean_name`, and request-to-speak queues driven
//! through request / approve / decline / claim / withdraw / expire.
#![no_main]
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use tribune_core::admission::subnet_of;
use tribune_core::stage::{
    clean_name, request_identity, MutedBy, Stage, StageError, StageRole, MAX_ON_STAGE,
    MAX_PENDING_PER_IP, MAX_PENDING_PER_SUBNET, MAX_PENDING_REQUESTS, REQUEST_IDLE_MS,
};
use tribune_fuzz::Reader;

// The shapes of server/src/whip.rs and server/src/api.rs.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct SpeakRequest {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Mute {
    muted: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueSettings {
    open: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct CreateSpace {
    title: String,
    scheduled_at: Option<u64>,
    #[serde(default)]
    private: bool,
}

fn check_name(raw: &str) -> Option<String> {
    let name = clean_name(raw).ok()?;
    assert!(!name.is_empty() && name.chars().count() <= 60, "{name:?}");
    assert!(!name.chars().any(char::is_control), "{name:?}");
    assert_eq!(name, name.trim(), "untrimmed name {name:?} from {raw:?}");
    assert_eq!(clean_name(&name), Ok(name.clone()), "not idempotent");
    Some(name)
}

/// The title check of `create_space`.
fn check_title(raw: &str) {
    let title = raw.trim();
    if title.is_empty() || title.chars().count() > 200 || title.chars().any(char::is_control) {
        return;
    }
    assert!(!title.trim().is_empty());
}

fn ip(r: &mut Reader) -> IpAddr {
    let b = r.u8();
    let (net, host) = (b >> 4, b & 0x0f);
    match r.u8() % 3 {
        0 => IpAddr::V4(Ipv4Addr::new(10, 0, net, host)),
        1 => IpAddr::V6(Ipv4Addr::new(10, 0, net, host).to_ipv6_mapped()),
        _ => IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0,
            u16::from(net),
            0,
            0,
            0,
            u16::from(host),
        )),
    }
}

fn id(r: &mut Reader) -> String {
    match r.u8() {
        255 => String::from_utf8_lossy(r.short()).into_owned(),
        b => format!("{:08x}", b % 32),
    }
}

fn check_stage(s: &Stage, now: u64, expired_at: Option<u64>) {
    let pending: Vec<_> = s.pending().collect();
    assert!(pending.len() <= MAX_PENDING_REQUESTS);
    let mut per_ip = HashMap::new();
    let mut per_net = HashMap::new();
    for r in &pending {
        *per_ip.entry(r.from).or_insert(0usize) += 1;
        *per_net.entry(subnet_of(r.from)).or_insert(0usize) += 1;
        if expired_at == Some(now) {
            assert!(now.saturating_sub(r.seen) < REQUEST_IDLE_MS);
        }
    }
    assert!(
        per_ip.values().all(|&n| n <= MAX_PENDING_PER_IP),
        "{per_ip:?}"
    );
    assert!(
        per_net.values().all(|&n| n <= MAX_PENDING_PER_SUBNET),
        "{per_net:?}"
    );
    assert!(s.members().len() <= MAX_ON_STAGE);
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let mut s = Stage::default();
    let mut now: u64 = 1_000_000;
    let mut session = 0u64;
    let mut crowded = false;
    for _ in 0..1_000 {
        if r.is_empty() {
            break;
        }
        let mut expired_at = None;
        let op = r.u8() % 14;
        match op {
            0 => {
                // POST .../requests {"name": ...}; JSON escapes make any
                // string a name, so the cleaning sees the raw text too
                let body = r.short();
                let _ = check_name(&String::from_utf8_lossy(body));
                if let Ok(req) = serde_json::from_slice::<SpeakRequest>(body) {
                    let cleaned = check_name(&req.name);
                    let id = id(&mut r);
                    let from = ip(&mut r);
                    match s.request(&id, &req.name, from, now) {
                        Ok(()) => assert!(cleaned.is_some()),
                        Err(StageError::BadName) => assert!(cleaned.is_none()),
                        Err(_) => {}
                    }
                }
            }
            1 => {
                let id = id(&mut r);
                if s.approve(&id).is_ok() {
                    let (identity, name) = s.claim(&id).expect("approved request claims");
                    assert_eq!(identity, request_identity(&id));
                    assert!(check_name(&name).is_some());
                    assert_eq!(s.display_name(&identity), name);
                }
            }
            2 => {
                let id = id(&mut r);
                if s.decline(&id).is_ok() {
                    assert_eq!(s.claim(&id), Err(StageError::Declined));
                }
            }
            3 => {
                let id = id(&mut r);
                let _ = s.claim(&id);
            }
            4 => {
                let id = id(&mut r);
                let _ = s.withdraw(&id);
            }
            5 => {
                let _ = s.expire(now);
                expired_at = Some(now);
            }
            6 => {
                let id = id(&mut r);
                s.touch(&id, now);
            }
            7 => {
                // PUT .../requests/settings {"open": bool}
                if let Ok(q) = serde_json::from_slice::<QueueSettings>(r.short()) {
                    s.set_requests_open(q.open);
                    assert_eq!(s.requests_open(), q.open);
                }
            }
            8 => {
                // PUT .../stage/<identity>/mute {"muted": bool}
                if let Ok(m) = serde_json::from_slice::<Mute>(r.short()) {
                    let who = id(&mut r);
                    let by = if r.bool() {
                        MutedBy::Host
                    } else {
                        MutedBy::Themself
                    };
                    if let Ok(_session) = s.mute(&who, m.muted, by) {
                        let member = s.member(&who).expect("muted a member");
                        assert_eq!(member.muted, m.muted);
                    }
                }
            }
            9 => {
                // POST /api/spaces {"title", "scheduled_at"?, "private"?}
                if let Ok(c) = serde_json::from_slice::<CreateSpace>(r.long()) {
                    check_title(&c.title);
                }
            }
            10 if !crowded => {
                // a crowd asks at once, from a few networks (once per input:
                // it is what fills the queue, and it is slow to repeat)
                crowded = true;
                let n = r.u16() % 700;
                let nets = r.u8() % 64 + 1;
                let base = r.u16();
                let mut ok = 0;
                for i in 0..n {
                    let k = base.wrapping_add(i);
                    let net = (k % u16::from(nets)) as u8;
                    let from = IpAddr::V4(Ipv4Addr::new(10, 1, net, (k / 64) as u8));
                    if s.request(&format!("c{k:07x}"), "crowd", from, now).is_ok() {
                        ok += 1;
                    }
                }
                assert!(ok <= n);
            }
            10 | 11 => {
                let _ = s.decline_all();
                assert_eq!(s.pending().count(), 0);
            }
            12 => {
                let who = id(&mut r);
                session += 1;
                match r.u8() % 3 {
                    0 => {
                        let role = [StageRole::Host, StageRole::Cohost, StageRole::Speaker]
                            [(r.u8() % 3) as usize];
                        let name = s.display_name(&who);
                        let _ = s.join(&who, &name, role, session);
                    }
                    1 => {
                        let _ = s.leave(u64::from(r.u8()));
                    }
                    _ => {
                        if s.remove(&who).is_ok() {
                            assert!(s.member(&who).is_none());
                        }
                    }
                }
            }
            _ => {
                // time passes: mostly forward, sometimes a jump either way
                now = match r.u8() {
                    0 => r.u64(),
                    b => now.saturating_add(u64::from(b) * 1_000),
                };
            }
        }
        // the queue's bounds, after what adds to it or expires it
        if matches!(op, 0 | 5 | 10) {
            check_stage(&s, now, expired_at);
        }
    }
    check_stage(&s, now, None);
    assert!(s
        .pending()
        .all(|r| clean_name(&r.name).as_ref() == Ok(&r.name)));
});
