//! Access tokens (short-lived HS256 JWTs, algorithm pinned) and opaque secrets (refresh tokens,
//! API keys, node access keys): random, shown once, stored only as their SHA-256.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::roles::Role;
use crate::error::ApiError;

pub const ISSUER: &str = "edgeflow";
pub const AUDIENCE: &str = "edgeflow-api";
const ACCESS: &str = "access";

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: Uuid,
    pub org: Uuid,
    pub sid: Uuid,
    pub role: Role,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    pub aud: String,
    pub typ: String,
}

#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    pub ttl_seconds: i64,
}

impl TokenKeys {
    pub fn new(secret: &[u8], ttl_seconds: i64) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl_seconds,
        }
    }

    /// Signs an access token; answers it with its expiry.
    pub fn issue(
        &self,
        user_id: Uuid,
        organization_id: Uuid,
        session_id: Uuid,
        role: Role,
    ) -> Result<(String, DateTime<Utc>), ApiError> {
        let now = Utc::now();
        let expires_at = now + chrono::Duration::seconds(self.ttl_seconds);
        let claims = Claims {
            sub: user_id,
            org: organization_id,
            sid: session_id,
            role,
            iat: now.timestamp(),
            exp: expires_at.timestamp(),
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            typ: ACCESS.into(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|err| ApiError::Internal(anyhow::Error::new(err)))?;
        Ok((token, expires_at))
    }

    /// Checks signature, algorithm, expiry, issuer, audience and type.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map_err(|err| {
            use jsonwebtoken::errors::ErrorKind;
            ApiError::Unauthorized(match err.kind() {
                ErrorKind::ExpiredSignature => "the access token has expired; refresh it or sign in again".into(),
                _ => "the access token is invalid".into(),
            })
        })?;
        if data.claims.typ != ACCESS {
            return Err(ApiError::Unauthorized("the access token is invalid".into()));
        }
        Ok(data.claims)
    }
}

/// `bytes` random bytes, URL-safe base64.
pub fn random_secret(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buffer);
    URL_SAFE_NO_PAD.encode(buffer)
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buffer = [0u8; N];
    rand::rng().fill_bytes(&mut buffer);
    buffer
}

/// What we store of a high-entropy secret: its SHA-256 (no salt or stretching needed at 256 bits).
pub fn secret_hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tampering() {
        let keys = TokenKeys::new(b"0123456789abcdef0123456789abcdef", 60);
        let (user, org, sid) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let (token, _) = keys.issue(user, org, sid, Role::Admin).unwrap();
        let claims = keys.verify(&token).unwrap();
        assert_eq!((claims.sub, claims.org, claims.sid, claims.role), (user, org, sid, Role::Admin));

        let other = TokenKeys::new(b"another secret entirely, 32 byte", 60);
        assert!(other.verify(&token).is_err(), "signature from another key accepted");

        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        parts[0] = &forged;
        assert!(keys.verify(&parts.join(".")).is_err(), "alg none accepted");
    }

    #[test]
    fn expired_tokens_are_refused() {
        let keys = TokenKeys::new(b"0123456789abcdef0123456789abcdef", -120);
        let (token, _) = keys.issue(Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7(), Role::Viewer).unwrap();
        assert!(keys.verify(&token).is_err());
    }
}
