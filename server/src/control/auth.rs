//! Keys and request credentials.
//!
//! Two kinds of key live in a node's data folder:
//! - `signing.key`: the Ed25519 private key access tokens are signed with.
//!   Only the origin has one; every node verifies with its public half
//!   (`/.well-known/jwks.json`), so no edge can mint access.
//! - `secret.key`: the node's own secret for what never leaves it
//!   (waiting-room tickets), and for tokens signed by earlier versions.

use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use tribune_core::token::{self, Claims, Role, Signer, TokenError, Verifier};

pub fn secret_path(data: &Path) -> PathBuf {
    data.join("secret.key")
}

pub fn signing_key_path(data: &Path) -> PathBuf {
    data.join("signing.key")
}

/// How this node signs and verifies access tokens.
#[derive(Clone)]
pub struct Keys {
    /// `None` on an edge: it verifies, it cannot mint.
    pub signer: Option<Signer>,
    pub verifier: Verifier,
    /// The public keys, as published.
    pub jwks: JwkSet,
}

impl Keys {
    /// An origin's keys: its own signing key (created on first start), and
    /// its older HS256 secret still accepted.
    pub fn origin(data: &Path, legacy_secret: &[u8]) -> Result<(Keys, bool), String> {
        let (signer, created) = load_or_create_signing_key(data)?;
        let jwks = JwkSet {
            keys: vec![signer.jwk()],
        };
        Ok((
            Keys {
                verifier: Verifier::of(&signer).with_legacy_secret(legacy_secret),
                signer: Some(signer),
                jwks,
            },
            created,
        ))
    }

    /// An edge's keys: the upstream's public keys only.
    pub fn verify_only(jwks: JwkSet) -> Result<Keys, String> {
        let verifier = Verifier::from_jwks(&jwks).map_err(|e| e.to_string())?;
        Ok(Keys {
            signer: None,
            verifier,
            jwks,
        })
    }

    /// Signs `claims`, or says why this node cannot.
    pub fn sign(&self, claims: &Claims) -> Result<String, String> {
        let signer = self
            .signer
            .as_ref()
            .ok_or("this node cannot mint tokens: ask the origin")?;
        token::sign(claims, signer).map_err(|e| e.to_string())
    }
}

/// Writes `bytes` as hex to a new file only its owner can read.
fn write_key_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(hex.as_bytes())?;
    f.sync_all()
}

/// Loads the node's secret, creating it on first start.
pub fn load_or_create_secret(data: &Path) -> std::io::Result<(Vec<u8>, bool)> {
    let path = secret_path(data);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok((decode_secret(&text, &path)?, false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut secret = [0u8; 32];
            rand::fill(&mut secret);
            write_key_file(&path, &secret)?;
            Ok((secret.to_vec(), true))
        }
        Err(e) => Err(e),
    }
}

/// Loads the token signing key, creating it on first start.
pub fn load_or_create_signing_key(data: &Path) -> Result<(Signer, bool), String> {
    let path = signing_key_path(data);
    let created = match std::fs::read_to_string(&path) {
        Ok(_) => false,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let rng = aws_lc_rs::rand::SystemRandom::new();
            let der = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8v1(&rng)
                .map_err(|_| "cannot generate a signing key".to_string())?;
            write_key_file(&path, der.as_ref())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            true
        }
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    Ok((load_signing_key(data)?, created))
}

/// Loads an existing signing key (for `tribune token`).
pub fn load_signing_key(data: &Path) -> Result<Signer, String> {
    let path = signing_key_path(data);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "cannot read {}: {e} (run `tribune serve --data {}` once to create it; edges have none)",
            path.display(),
            data.display()
        )
    })?;
    let der = decode_hex(&text, &path).map_err(|e| e.to_string())?;
    Signer::from_pkcs8(&der).map_err(|e| format!("{}: {e}", path.display()))
}

fn decode_hex(text: &str, path: &Path) -> std::io::Result<Vec<u8>> {
    let text = text.trim();
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is not hex", path.display()),
            )
        })
}

fn decode_secret(text: &str, path: &Path) -> std::io::Result<Vec<u8>> {
    let text = text.trim();
    let bytes: Option<Vec<u8>> = (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    match bytes {
        Some(b) if b.len() >= 16 => Ok(b),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} is not a hex secret of at least 16 bytes",
                path.display()
            ),
        )),
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing credentials: send `Authorization: Bearer <token>`")]
    Missing,
    #[error("unsupported Authorization scheme: use Bearer or Basic source:<token>")]
    BadScheme,
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("this token does not allow {action} (role {role}{scope})")]
    Forbidden {
        action: &'static str,
        role: Role,
        scope: String,
    },
}

impl AuthError {
    pub fn status(&self) -> u16 {
        match self {
            AuthError::Forbidden { .. } => 403,
            _ => 401,
        }
    }
}

/// Extracts a token from an Authorization header value: `Bearer <jwt>` or
/// `Basic base64(user:<jwt>)` (Icecast sources send `source:<password>`).
pub fn token_from_header(value: Option<&str>) -> Result<String, AuthError> {
    let value = value.ok_or(AuthError::Missing)?.trim();
    let (scheme, rest) = value.split_once(' ').ok_or(AuthError::BadScheme)?;
    if scheme.eq_ignore_ascii_case("bearer") {
        Ok(rest.trim().to_string())
    } else if scheme.eq_ignore_ascii_case("basic") {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .map_err(|_| AuthError::BadScheme)?;
        let text = String::from_utf8(raw).map_err(|_| AuthError::BadScheme)?;
        let (_, password) = text.split_once(':').ok_or(AuthError::BadScheme)?;
        Ok(password.to_string())
    } else {
        Err(AuthError::BadScheme)
    }
}

pub fn verify(keys: &Keys, token: &str, now_secs: u64) -> Result<Claims, AuthError> {
    Ok(token::verify(token, &keys.verifier, now_secs)?)
}

/// Checks that `claims` may do `action` in `space_id` with at least `role`.
pub fn require(
    claims: &Claims,
    space_id: &str,
    role: Role,
    action: &'static str,
) -> Result<(), AuthError> {
    if claims.allows(space_id, role) {
        Ok(())
    } else {
        Err(AuthError::Forbidden {
            action,
            role: claims.role,
            scope: claims
                .space
                .as_deref()
                .map(|s| format!(", space {s}"))
                .unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_from_bearer_and_basic() {
        assert_eq!(
            token_from_header(Some("Bearer abc.def")),
            Ok("abc.def".into())
        );
        // "source:tok" in base64
        assert_eq!(
            token_from_header(Some("Basic c291cmNlOnRvaw==")),
            Ok("tok".into())
        );
        assert_eq!(token_from_header(None), Err(AuthError::Missing));
        assert_eq!(
            token_from_header(Some("Digest x")),
            Err(AuthError::BadScheme)
        );
        assert_eq!(
            token_from_header(Some("Basic !!!")),
            Err(AuthError::BadScheme)
        );
    }
}
