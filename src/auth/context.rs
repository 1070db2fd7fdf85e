//! Who is calling: `AuthContext`, resolved from a bearer access token or an `X-API-Key`, and the
//! role guard `Require<R>`. Every handler that touches tenant data takes one of them, so a route
//! without one is visibly public.

use std::{marker::PhantomData, net::IpAddr, ops::Deref};

use axum::{
    extract::{FromRef, FromRequestParts},
    http::{header, request::Parts},
};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    roles::{Role, at_least::MinimumRole},
    tokens::secret_hash,
};
use crate::{
    apikeys::store as apikey_store,
    error::{ApiError, ApiResult},
    http::client_ip::ClientIp,
    state::AppState,
};

pub const API_KEY_HEADER: &str = "x-api-key";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    User { user_id: Uuid, session_id: Uuid },
    ApiKey { key_id: Uuid },
}

#[derive(Debug, Clone)]
pub struct AuthContext {
    pub principal: Principal,
    /// The active organization: every tenant query is scoped by it.
    pub organization_id: Uuid,
    pub role: Role,
    pub client_ip: Option<IpAddr>,
    /// When the credential was issued and when it expires (an API key may never expire).
    pub issued_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl AuthContext {
    pub fn user_id(&self) -> Option<Uuid> {
        match self.principal {
            Principal::User { user_id, .. } => Some(user_id),
            Principal::ApiKey { .. } => None,
        }
    }

    pub fn api_key_id(&self) -> Option<Uuid> {
        match self.principal {
            Principal::ApiKey { key_id } => Some(key_id),
            Principal::User { .. } => None,
        }
    }

    /// For calls about the signed-in person (profile, password, sessions): API keys act for an
    /// organization, not a person, and are refused.
    pub fn require_user(&self) -> ApiResult<(Uuid, Uuid)> {
        match self.principal {
            Principal::User { user_id, session_id } => Ok((user_id, session_id)),
            Principal::ApiKey { .. } => {
                Err(ApiError::Forbidden("this call acts for a signed-in user; API keys cannot use it".into()))
            }
        }
    }

    pub fn require_role(&self, needed: Role) -> ApiResult<()> {
        if self.role >= needed {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!("this action needs the {needed} role; you have {}", self.role)))
        }
    }

    /// A body may name an organization only if it is the caller's active one.
    pub fn check_organization(&self, organization_id: Uuid) -> ApiResult<()> {
        if organization_id == self.organization_id {
            Ok(())
        } else {
            Err(ApiError::Forbidden("organizationId is not your active organization; switch organization first".into()))
        }
    }

    /// A stable name for the caller, for rate limits and idempotency records.
    pub fn principal_key(&self) -> String {
        match self.principal {
            Principal::User { user_id, .. } => format!("user:{user_id}"),
            Principal::ApiKey { key_id } => format!("apikey:{key_id}"),
        }
    }
}

fn bearer_token(parts: &Parts) -> ApiResult<Option<&str>> {
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else { return Ok(None) };
    let text = value.to_str().map_err(|_| ApiError::Unauthorized("malformed Authorization header".into()))?;
    match text.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
            Ok(Some(token.trim()))
        }
        _ => Err(ApiError::Unauthorized("expected Authorization: Bearer <token> (or an X-API-Key header)".into())),
    }
}

/// Resolves the caller from the request's credentials, checks its rate limit, and caches the
/// answer in the request so later extractors and layers do not resolve it again.
pub async fn authenticate(parts: &mut Parts, state: &AppState) -> ApiResult<AuthContext> {
    if let Some(context) = parts.extensions.get::<AuthContext>() {
        return Ok(context.clone());
    }
    let client_ip = ClientIp::from_parts(parts, state.config.trust_proxy).0;
    let context = if let Some(token) = bearer_token(parts)? {
        let claims = state.tokens.verify(token)?;
        if state.revocations.is_revoked(claims.sid) {
            return Err(ApiError::Unauthorized("the session has been signed out".into()));
        }
        AuthContext {
            principal: Principal::User { user_id: claims.sub, session_id: claims.sid },
            organization_id: claims.org,
            role: claims.role,
            client_ip,
            issued_at: DateTime::from_timestamp(claims.iat, 0),
            expires_at: DateTime::from_timestamp(claims.exp, 0),
        }
    } else if let Some(key) = parts.headers.get(API_KEY_HEADER) {
        let key = key.to_str().map_err(|_| ApiError::Unauthorized("malformed X-API-Key header".into()))?;
        let found = apikey_store::find_live_by_hash(&state.db, &secret_hash(key.trim())).await?;
        let Some(found) = found else {
            return Err(ApiError::Unauthorized("the API key is invalid, revoked or expired".into()));
        };
        AuthContext {
            principal: Principal::ApiKey { key_id: found.id },
            organization_id: found.organization_id,
            role: found.role,
            client_ip,
            issued_at: Some(found.created_at),
            expires_at: found.expires_at,
        }
    } else {
        return Err(ApiError::Unauthorized("sign in: send Authorization: Bearer <token> or X-API-Key".into()));
    };
    state.rate_limits.check_api(&context.principal_key(), context.organization_id)?;
    parts.extensions.insert(context.clone());
    Ok(context)
}

impl<S> FromRequestParts<S> for AuthContext
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        authenticate(parts, &AppState::from_ref(state)).await
    }
}

/// An authenticated caller whose role is at least `R` (403 otherwise).
pub struct Require<R: MinimumRole> {
    pub auth: AuthContext,
    _role: PhantomData<R>,
}

impl<R: MinimumRole> Deref for Require<R> {
    type Target = AuthContext;

    fn deref(&self) -> &AuthContext {
        &self.auth
    }
}

impl<S, R> FromRequestParts<S> for Require<R>
where
    AppState: FromRef<S>,
    S: Send + Sync,
    R: MinimumRole,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let auth = authenticate(parts, &AppState::from_ref(state)).await?;
        auth.require_role(R::ROLE)?;
        Ok(Self { auth, _role: PhantomData })
    }
}
