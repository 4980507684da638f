//! Access tokens: EdDSA (Ed25519) JWTs with a role and an optional space
//! grant. The origin holds the private key and signs; every node verifies
//! with the public keys (a JWKS the origin publishes), so no edge can mint
//! access. Tokens signed by earlier versions (HS256 with the node's secret)
//! still verify where that secret is known.
//!
//! Expiry is checked against the `now` the caller passes in (seconds since
//! the Unix epoch), never the system clock, so validation is deterministic.

use jsonwebtoken::jwk::{Jwk, JwkSet, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

pub const ISSUER: &str = "tribune";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Listener,
    /// Another node of the fleet: reads every space (to relay it), and
    /// nothing more.
    Node,
    Speaker,
    Host,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Listener => "listener",
            Role::Node => "node",
            Role::Speaker => "speaker",
            Role::Host => "host",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "listener" => Ok(Role::Listener),
            "node" => Ok(Role::Node),
            "speaker" => Ok(Role::Speaker),
            "host" => Ok(Role::Host),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role {other:?} (expected admin, host, speaker, listener or node)"
            )),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Identity of the bearer.
    pub sub: String,
    pub iss: String,
    pub iat: u64,
    pub exp: u64,
    pub role: Role,
    /// The space this token is limited to; `None` is node-wide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token is malformed: {0}")]
    Malformed(String),
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token expired {0} s ago")]
    Expired(u64),
    #[error("token was not issued by tribune")]
    WrongIssuer,
    #[error("could not sign token: {0}")]
    Signing(String),
}

impl Claims {
    pub fn new(identity: &str, role: Role, space: Option<&str>, now: u64, ttl_secs: u64) -> Self {
        Claims {
            sub: identity.to_string(),
            iss: ISSUER.to_string(),
            iat: now,
            exp: now.saturating_add(ttl_secs),
            role,
            space: space.map(str::to_string),
        }
    }

    /// What this token may do in `space_id` with at least `role`.
    /// Admin tokens and node-wide tokens of a sufficient role pass.
    pub fn allows(&self, space_id: &str, role: Role) -> bool {
        self.role >= role
            && (self.role == Role::Admin || self.space.as_deref().is_none_or(|s| s == space_id))
    }
}

/// The private key tokens are signed with (the origin's alone).
#[derive(Clone)]
pub struct Signer {
    key: EncodingKey,
    kid: String,
    jwk: Jwk,
}

impl Signer {
    /// From an Ed25519 private key in PKCS#8 v1 (DER).
    pub fn from_pkcs8(der: &[u8]) -> Result<Signer, TokenError> {
        let key = EncodingKey::from_ed_der(der);
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::EdDSA)
            .map_err(|e| TokenError::Signing(format!("not an Ed25519 key: {e}")))?;
        let kid = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|e| TokenError::Signing(e.to_string()))?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
        // a key that cannot sign is refused now, not at the first token
        let signer = Signer { key, kid, jwk };
        signer.sign_raw(&Claims::new("key check", Role::Listener, None, 0, 1))?;
        Ok(signer)
    }

    /// The public half, as published in the JWKS.
    pub fn jwk(&self) -> Jwk {
        self.jwk.clone()
    }

    fn sign_raw<T: Serialize>(&self, claims: &T) -> Result<String, TokenError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key)
            .map_err(|e| TokenError::Signing(e.to_string()))
    }
}

/// The public keys tokens are verified with.
#[derive(Clone, Default)]
pub struct Verifier {
    keys: Vec<(Option<String>, DecodingKey)>,
    /// The node secret earlier versions signed tokens with (HS256).
    legacy_secret: Option<Vec<u8>>,
}

impl Verifier {
    /// Verifies what `signer` signs.
    pub fn of(signer: &Signer) -> Verifier {
        Verifier::from_jwks(&JwkSet {
            keys: vec![signer.jwk()],
        })
        .unwrap_or_default()
    }

    /// From a JWKS (the origin's `/.well-known/jwks.json`): its Ed25519 keys.
    pub fn from_jwks(set: &JwkSet) -> Result<Verifier, TokenError> {
        let mut keys = Vec::new();
        for jwk in &set.keys {
            if let jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(p) = &jwk.algorithm {
                let key = DecodingKey::from_ed_components(&p.x)
                    .map_err(|e| TokenError::Malformed(format!("bad key in JWKS: {e}")))?;
                keys.push((jwk.common.key_id.clone(), key));
            }
        }
        if keys.is_empty() {
            return Err(TokenError::Malformed("no Ed25519 key in the JWKS".into()));
        }
        Ok(Verifier {
            keys,
            legacy_secret: None,
        })
    }

    /// Also accepts tokens signed with `secret` by earlier versions.
    pub fn with_legacy_secret(mut self, secret: &[u8]) -> Verifier {
        self.legacy_secret = Some(secret.to_vec());
        self
    }
}

pub fn sign(claims: &Claims, signer: &Signer) -> Result<String, TokenError> {
    signer.sign_raw(claims)
}

fn validation(alg: Algorithm) -> Validation {
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    validation
}

fn decode_with<T: serde::de::DeserializeOwned>(
    token: &str,
    key: &DecodingKey,
    alg: Algorithm,
) -> Result<T, TokenError> {
    jsonwebtoken::decode::<T>(token, key, &validation(alg))
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::BadSignature,
            _ => TokenError::Malformed(e.to_string()),
        })
}

/// Checks an HS256 signature and decodes the claims. Expiry is left to the
/// caller, against its own clock.
fn decode<T: serde::de::DeserializeOwned>(token: &str, secret: &[u8]) -> Result<T, TokenError> {
    decode_with(token, &DecodingKey::from_secret(secret), Algorithm::HS256)
}

fn check_expiry(exp: u64, now: u64) -> Result<(), TokenError> {
    if exp <= now {
        return Err(TokenError::Expired(now - exp));
    }
    Ok(())
}

pub fn verify(token: &str, verifier: &Verifier, now: u64) -> Result<Claims, TokenError> {
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
    let claims: Claims = match header.alg {
        Algorithm::EdDSA => {
            // the key it names, else each key in turn (a JWKS of one, usually)
            let named = verifier
                .keys
                .iter()
                .filter(|(kid, _)| header.kid.is_none() || *kid == header.kid);
            let mut result = Err(TokenError::BadSignature);
            for (_, key) in named {
                result = decode_with(token, key, Algorithm::EdDSA);
                if result.is_ok() {
                    break;
                }
            }
            result?
        }
        Algorithm::HS256 => match &verifier.legacy_secret {
            Some(secret) => decode(token, secret)?,
            None => return Err(TokenError::BadSignature),
        },
        other => {
            return Err(TokenError::Malformed(format!(
                "unsupported algorithm {other:?}"
            )))
        }
    };
    if claims.iss != ISSUER {
        return Err(TokenError::WrongIssuer);
    }
    check_expiry(claims.exp, now)?;
    Ok(claims)
}

/// Parses durations such as `90s`, `15m`, `12h`, `30d` or plain seconds.
pub fn parse_ttl(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("bad duration {text:?}: expected e.g. 90s, 15m, 12h, 30d"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("bad duration unit in {text:?}: use s, m, h or d")),
    };
    match n.checked_mul(mult) {
        Some(0) => Err(format!("duration {text:?} must be positive")),
        Some(s) if s <= MAX_TTL_SECS => Ok(s),
        _ => Err(format!(
            "duration {text:?} is too long: a token lives at most 366 days"
        )),
    }
}

/// Longest lifetime a token may be given: a leaked token must not work forever.
pub const MAX_TTL_SECS: u64 = 366 * 86_400;

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn keypair() -> Signer {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let der = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8v1(&rng).unwrap();
        Signer::from_pkcs8(der.as_ref()).unwrap()
    }

    #[test]
    fn a_signed_token_verifies_until_it_expires() {
        let signer = keypair();
        let verifier = Verifier::of(&signer);
        let claims = Claims::new("alice", Role::Speaker, Some("s1"), 1_000, 60);
        let tok = sign(&claims, &signer).unwrap();
        assert_eq!(verify(&tok, &verifier, 1_030), Ok(claims));
        assert_eq!(verify(&tok, &verifier, 1_060), Err(TokenError::Expired(0)));
        assert_eq!(verify(&tok, &verifier, 1_100), Err(TokenError::Expired(40)));
    }

    #[test]
    fn a_node_verifies_with_the_published_keys_and_cannot_sign() {
        let origin = keypair();
        let jwks = JwkSet {
            keys: vec![origin.jwk()],
        };
        // what an edge fetches: JSON, with no private part in it
        let text = serde_json::to_string(&jwks).unwrap();
        assert!(
            text.contains("\"kty\":\"OKP\"") && !text.contains("\"d\""),
            "{text}"
        );
        let edge = Verifier::from_jwks(&serde_json::from_str(&text).unwrap()).unwrap();
        let tok = sign(&Claims::new("n", Role::Node, None, 0, 60), &origin).unwrap();
        assert_eq!(verify(&tok, &edge, 1).unwrap().role, Role::Node);
        // another key's token, and an HS256 one, do not pass the edge
        let other = sign(&Claims::new("x", Role::Admin, None, 0, 60), &keypair()).unwrap();
        assert_eq!(verify(&other, &edge, 1), Err(TokenError::BadSignature));
        let legacy = legacy_sign(&Claims::new("x", Role::Admin, None, 0, 60));
        assert_eq!(verify(&legacy, &edge, 1), Err(TokenError::BadSignature));
        // but the origin still takes its own older tokens
        let origin_verifier = Verifier::of(&origin).with_legacy_secret(SECRET);
        assert_eq!(verify(&legacy, &origin_verifier, 1).unwrap().sub, "x");
        assert!(Verifier::from_jwks(&JwkSet { keys: vec![] }).is_err());
    }

    /// A token as versions before EdDSA signed them.
    fn legacy_sign(claims: &Claims) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    #[test]
    fn forged_and_malformed_tokens_are_rejected() {
        let signer = keypair();
        let verifier = Verifier::of(&signer);
        let claims = Claims::new("mallory", Role::Admin, None, 1_000, 60);
        let forged = sign(&claims, &keypair()).unwrap();
        assert_eq!(
            verify(&forged, &verifier, 1_001),
            Err(TokenError::BadSignature)
        );
        assert!(matches!(
            verify("not.a.jwt", &verifier, 0),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            verify("", &verifier, 0),
            Err(TokenError::Malformed(_))
        ));
        // tampered payload with the original signature
        let good = sign(
            &Claims::new("bob", Role::Listener, None, 1_000, 60),
            &signer,
        )
        .unwrap();
        let parts: Vec<&str> = good.split('.').collect();
        let evil = sign(&Claims::new("bob", Role::Admin, None, 1_000, 60), &signer).unwrap();
        let evil_payload = evil.split('.').nth(1).unwrap();
        let tampered = format!("{}.{}.{}", parts[0], evil_payload, parts[2]);
        assert_eq!(
            verify(&tampered, &verifier, 1_001),
            Err(TokenError::BadSignature)
        );
        // "alg": "none" is no way in
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", parts[1]);
        assert!(verify(&none, &verifier, 1_001).is_err());
    }

    #[test]
    fn a_node_token_reads_every_space_and_does_nothing_else() {
        let node = Claims::new("edge-1", Role::Node, None, 0, 60);
        assert!(node.allows("any", Role::Listener));
        assert!(node.allows("any", Role::Node));
        assert!(!node.allows("any", Role::Speaker));
        assert!(!node.allows("any", Role::Host));
        let listener = Claims::new("l", Role::Listener, None, 0, 60);
        assert!(!listener.allows("any", Role::Node));
    }

    #[test]
    fn grants_are_scoped_to_a_space_and_role() {
        let speaker = Claims::new("s", Role::Speaker, Some("a"), 0, 60);
        assert!(speaker.allows("a", Role::Speaker));
        assert!(speaker.allows("a", Role::Listener));
        assert!(!speaker.allows("b", Role::Speaker));
        assert!(!speaker.allows("a", Role::Host));
        let admin = Claims::new("root", Role::Admin, Some("x"), 0, 60);
        assert!(admin.allows("a", Role::Host));
        let host = Claims::new("h", Role::Host, None, 0, 60);
        assert!(host.allows("any", Role::Speaker));
    }

    #[test]
    fn ttl_parsing() {
        assert_eq!(parse_ttl("90"), Ok(90));
        assert_eq!(parse_ttl("15m"), Ok(900));
        assert_eq!(parse_ttl("2d"), Ok(172_800));
        assert!(parse_ttl("0s").is_err());
        assert_eq!(parse_ttl("366d"), Ok(MAX_TTL_SECS));
        assert!(parse_ttl("367d").is_err());
        assert!(parse_ttl("18446744073709551615").is_err());
        assert!(parse_ttl("18446744073709551615d").is_err());
        assert!(parse_ttl("5 weeks").is_err());
        assert!(parse_ttl("").is_err());
    }
}

/// Waiting-room tickets travel signed, so a client cannot pick its place.
#[derive(Serialize, Deserialize)]
struct TicketClaims {
    seq: u64,
    nb: u64,
    /// The node process that issued it: a ticket does not survive a restart.
    boot: u64,
    exp: u64,
}

pub fn sign_ticket(
    ticket: crate::admission::Ticket,
    boot: u64,
    secret: &[u8],
    exp: u64,
) -> Result<String, TokenError> {
    let claims = TicketClaims {
        seq: ticket.seq,
        nb: ticket.not_before_ms,
        boot,
        exp,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| TokenError::Signing(e.to_string()))
}

pub fn verify_ticket(
    token: &str,
    boot: u64,
    secret: &[u8],
    now: u64,
) -> Result<crate::admission::Ticket, TokenError> {
    let c: TicketClaims = decode(token, secret)?;
    check_expiry(c.exp, now)?;
    if c.boot != boot {
        return Err(TokenError::Malformed(
            "ticket from an earlier run of this node".into(),
        ));
    }
    Ok(crate::admission::Ticket {
        seq: c.seq,
        not_before_ms: c.nb,
    })
}

#[cfg(test)]
mod ticket_tests {
    use super::*;
    use crate::admission::Ticket;

    #[test]
    fn tickets_verify_only_for_their_node_run_and_secret() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let t = Ticket {
            seq: 42,
            not_before_ms: 1234,
        };
        let signed = sign_ticket(t, 7, secret, 1_000).unwrap();
        assert_eq!(verify_ticket(&signed, 7, secret, 999), Ok(t));
        assert!(
            verify_ticket(&signed, 8, secret, 999).is_err(),
            "another boot"
        );
        assert_eq!(
            verify_ticket(&signed, 7, b"other secret, other node........", 999),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify_ticket(&signed, 7, secret, 1_000),
            Err(TokenError::Expired(0))
        );
    }
}
