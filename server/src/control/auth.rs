//! Signing secret and request credentials.

use base64::Engine;
use std::io::Write;
use std::path::{Path, PathBuf};
use tribune_core::token::{self, Claims, Role, TokenError};

pub fn secret_path(data: &Path) -> PathBuf {
    data.join("secret.key")
}

/// Loads the node's signing secret, creating it on first start.
pub fn load_or_create_secret(data: &Path) -> std::io::Result<(Vec<u8>, bool)> {
    let path = secret_path(data);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok((decode_secret(&text, &path)?, false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data)?;
            let mut secret = [0u8; 32];
            rand::fill(&mut secret);
            let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&path)?;
            f.write_all(hex.as_bytes())?;
            f.sync_all()?;
            Ok((secret.to_vec(), true))
        }
        Err(e) => Err(e),
    }
}

/// Loads an existing secret (for `tribune token`).
pub fn load_secret(data: &Path) -> Result<Vec<u8>, String> {
    let path = secret_path(data);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "cannot read {}: {e} (run `tribune serve --data {}` once to create it)",
            path.display(),
            data.display()
        )
    })?;
    decode_secret(&text, &path).map_err(|e| e.to_string())
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

pub fn verify(secret: &[u8], token: &str, now_secs: u64) -> Result<Claims, AuthError> {
    Ok(token::verify(token, secret, now_secs)?)
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
