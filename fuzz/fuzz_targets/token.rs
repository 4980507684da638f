//! Access tokens and waiting-room tickets from query strings and
//! Authorization headers. Raw strings; HS256 tokens built from fuzz bytes
//! and correctly signed with the node's secret (the legacy path, so the
//! claims parser is reached); and round trips of what the origin signs
//! (EdDSA) and the node's tickets (HS256).
#![no_main]
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;
use tribune_core::admission::Ticket;
use std::sync::OnceLock;
use tribune_core::token::{
    sign, sign_ticket, verify, verify_ticket, Claims, Role, Signer, TokenError, Verifier, ISSUER,
};
use tribune_fuzz::Reader;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

/// The origin's signing key, made once per run.
fn signer() -> &'static Signer {
    static SIGNER: OnceLock<Signer> = OnceLock::new();
    SIGNER.get_or_init(|| {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let der = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8v1(&rng).expect("a key");
        Signer::from_pkcs8(der.as_ref()).expect("a signer")
    })
}

/// What the origin verifies with: its key, and the legacy secret.
fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| Verifier::of(signer()).with_legacy_secret(SECRET))
}

fn jwt(header: &[u8], payload: &[u8], key: &[u8]) -> String {
    let signed = format!("{}.{}", B64.encode(header), B64.encode(payload));
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(signed.as_bytes());
    let tag = mac.finalize().into_bytes();
    format!("{signed}.{}", B64.encode(tag))
}

/// Checks what any accepted token must satisfy.
fn check(token: &str, now: u64, boot: u64) -> (bool, bool) {
    let claims = verify(token, verifier(), now);
    if let Ok(c) = &claims {
        assert_eq!(c.iss, ISSUER);
        assert!(c.exp > now);
    }
    let ticket = verify_ticket(token, boot, SECRET, now);
    (claims.is_ok(), ticket.is_ok())
}

fn role(b: u8) -> Role {
    [Role::Listener, Role::Node, Role::Speaker, Role::Host, Role::Admin][(b % 5) as usize]
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let mode = r.u8() % 4;
    let now = r.u64();
    let boot = r.u64();
    match mode {
        0 => {
            let text = String::from_utf8_lossy(r.rest());
            let _ = check(&text, now, boot);
        }
        1 | 2 => {
            // a well-formed JWT around fuzz bytes; mode 2 signs with another key
            let header = r.short();
            let payload = r.rest();
            let key: &[u8] = if mode == 1 { SECRET } else { b"not the secret" };
            let token = jwt(header, payload, key);
            let (claims_ok, ticket_ok) = check(&token, now, boot);
            if claims_ok || ticket_ok {
                assert_eq!(mode, 1, "a token signed with another key was accepted");
                let h: serde_json::Value =
                    serde_json::from_slice(header).expect("accepted header is JSON");
                assert_eq!(h["alg"], "HS256", "accepted a token whose header says {h}");
            }
        }
        _ => {
            // what the node signs verifies back to itself until it expires
            let sub = String::from_utf8_lossy(r.short()).into_owned();
            let space = r
                .bool()
                .then(|| String::from_utf8_lossy(r.short()).into_owned());
            let role = role(r.u8());
            let claims = Claims::new(&sub, role, space.as_deref(), r.u64(), r.u64());
            let token = sign(&claims, signer()).expect("signing never fails");
            match verify(&token, verifier(), now) {
                Ok(c) => {
                    assert_eq!(c, claims);
                    assert!(claims.exp > now);
                }
                Err(TokenError::Expired(ago)) => {
                    assert!(claims.exp <= now);
                    assert_eq!(ago, now - claims.exp);
                }
                Err(e) => panic!("own token refused: {e}"),
            }
            let ticket = Ticket {
                seq: r.u64(),
                not_before_ms: r.u64(),
            };
            let exp = r.u64();
            let signed_boot = if r.bool() { boot } else { boot ^ 1 };
            let t = sign_ticket(ticket, signed_boot, SECRET, exp).expect("signing never fails");
            match verify_ticket(&t, boot, SECRET, now) {
                Ok(back) => {
                    assert_eq!(
                        (back.seq, back.not_before_ms),
                        (ticket.seq, ticket.not_before_ms)
                    );
                    assert!(exp > now && signed_boot == boot);
                }
                Err(_) => assert!(exp <= now || signed_boot != boot),
            }
            // a ticket is not an access token, nor the other way round
            assert!(verify(&t, verifier(), now).is_err());
        }
    }
});
