//! Access tokens: HS256 JWTs with a role and an optional space grant.
//!
//! Expiry is checked against the `now` the caller passes in (seconds since
//! the Unix epoch), never the system clock, so validation is deterministic.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

pub const ISSUER: &str = "tribune";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Listener,
    Speaker,
    Host,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Listener => "listener",
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
            "speaker" => Ok(Role::Speaker),
            "host" => Ok(Role::Host),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role {other:?} (expected admin, host, speaker or listener)"
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

pub fn sign(claims: &Claims, secret: &[u8]) -> Result<String, TokenError> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| TokenError::Signing(e.to_string()))
}

/// Checks an HS256 signature and decodes the claims. Expiry is left to the
/// caller, against its own clock.
fn decode<T: serde::de::DeserializeOwned>(token: &str, secret: &[u8]) -> Result<T, TokenError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<T>(token, &DecodingKey::from_secret(secret), &validation)
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::BadSignature,
            _ => TokenError::Malformed(e.to_string()),
        })
}

fn check_expiry(exp: u64, now: u64) -> Result<(), TokenError> {
    if exp <= now {
        return Err(TokenError::Expired(now - exp));
    }
    Ok(())
}

pub fn verify(token: &str, secret: &[u8], now: u64) -> Result<Claims, TokenError> {
    let claims: Claims = decode(token, secret)?;
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

    #[test]
    fn a_signed_token_verifies_until_it_expires() {
        let claims = Claims::new("alice", Role::Speaker, Some("s1"), 1_000, 60);
        let tok = sign(&claims, SECRET).unwrap();
        assert_eq!(verify(&tok, SECRET, 1_030), Ok(claims));
        assert_eq!(verify(&tok, SECRET, 1_060), Err(TokenError::Expired(0)));
        assert_eq!(verify(&tok, SECRET, 1_100), Err(TokenError::Expired(40)));
    }

    #[test]
    fn forged_and_malformed_tokens_are_rejected() {
        let claims = Claims::new("mallory", Role::Admin, None, 1_000, 60);
        let forged = sign(&claims, b"another secret entirely........").unwrap();
        assert_eq!(
            verify(&forged, SECRET, 1_001),
            Err(TokenError::BadSignature)
        );
        assert!(matches!(
            verify("not.a.jwt", SECRET, 0),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            verify("", SECRET, 0),
            Err(TokenError::Malformed(_))
        ));
        // tampered payload with the original signature
        let good = sign(&Claims::new("bob", Role::Listener, None, 1_000, 60), SECRET).unwrap();
        let parts: Vec<&str> = good.split('.').collect();
        let evil = sign(&Claims::new("bob", Role::Admin, None, 1_000, 60), SECRET).unwrap();
        let evil_payload = evil.split('.').nth(1).unwrap();
        let tampered = format!("{}.{}.{}", parts[0], evil_payload, parts[2]);
        assert_eq!(
            verify(&tampered, SECRET, 1_001),
            Err(TokenError::BadSignature)
        );
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
