//! Password hashing with argon2id at OWASP's parameters (19 MiB, t=2, p=1). Hashing takes a core
//! for tens of milliseconds, so it runs on blocking threads behind a semaphore: a burst of logins
//! queues here instead of starving the async workers that serve everything else.

use std::sync::Arc;

use argon2::{
    Algorithm, Argon2, Params, Version,
    password_hash::{PasswordHasher, PasswordVerifier},
};
use tokio::sync::Semaphore;

use crate::error::ApiError;

pub const MIN_PASSWORD_LENGTH: usize = 10;
pub const MAX_PASSWORD_LENGTH: usize = 256;

#[derive(Clone)]
pub struct PasswordHasherPool {
    permits: Arc<Semaphore>,
    /// A real hash of a random password: verifying against it when the email is unknown makes an
    /// unknown email take as long as a wrong password.
    decoy_hash: Arc<String>,
}

fn argon2() -> Argon2<'static> {
    // The parameters are constants that argon2 accepts; a failure here is a programming error
    // caught by every test that hashes.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn hash_now(password: &str) -> anyhow::Result<String> {
    argon2()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|err| anyhow::anyhow!("hashing a password failed: {err}"))
}

impl PasswordHasherPool {
    pub fn new(concurrency: usize) -> anyhow::Result<Self> {
        let decoy = uuid::Uuid::new_v4().to_string();
        Ok(Self { permits: Arc::new(Semaphore::new(concurrency.max(1))), decoy_hash: Arc::new(hash_now(&decoy)?) })
    }

    async fn run_blocking<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
        let _permit = self.permits.acquire().await.map_err(|err| ApiError::Internal(anyhow::Error::new(err)))?;
        tokio::task::spawn_blocking(work).await.map_err(|err| ApiError::Internal(anyhow::Error::new(err)))
    }

    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        Ok(self.run_blocking(move || hash_now(&password)).await??)
    }

    /// Checks a password against a stored hash; with no hash (unknown user) it still spends the
    /// same time, and answers false.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<bool, ApiError> {
        let known = stored.is_some();
        let hash = stored.unwrap_or_else(|| self.decoy_hash.as_str().to_owned());
        let matches =
            self.run_blocking(move || argon2().verify_password(password.as_bytes(), hash.as_str()).is_ok()).await?;
        Ok(known && matches)
    }
}

/// The password rules, as one field error when broken.
/// What `check_password_rules` accepts (documentation only).
pub struct Password;

impl utoipa::PartialSchema for Password {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .min_length(Some(MIN_PASSWORD_LENGTH))
            .max_length(Some(MAX_PASSWORD_LENGTH))
            .description(Some(format!("{MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters.")))
            .into()
    }
}

impl utoipa::ToSchema for Password {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("Password")
    }
}

pub fn check_password_rules(field: &str, password: &str) -> Result<(), ApiError> {
    let length = password.chars().count();
    if length < MIN_PASSWORD_LENGTH {
        return Err(ApiError::invalid_field(field, format!("must be at least {MIN_PASSWORD_LENGTH} characters")));
    }
    if length > MAX_PASSWORD_LENGTH {
        return Err(ApiError::invalid_field(field, format!("must be at most {MAX_PASSWORD_LENGTH} characters")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verifies_its_own_hashes_and_nothing_else() {
        let pool = PasswordHasherPool::new(1).unwrap();
        let hash = pool.hash("correct horse battery".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert!(pool.verify("correct horse battery".into(), Some(hash.clone())).await.unwrap());
        assert!(!pool.verify("wrong".into(), Some(hash)).await.unwrap());
        assert!(!pool.verify("anything".into(), None).await.unwrap());
    }
}
