//! Starting a session: the row, its first refresh token and an access token, as one answer.

use axum::http::{HeaderMap, header};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{model::TokenResponse, roles::Role, store};
use crate::{error::ApiResult, state::AppState};

pub struct Started {
    pub tokens: TokenResponse,
    /// Sessions ended to make room; mark them revoked locally once the transaction commits.
    pub evicted: Vec<Uuid>,
}

pub fn user_agent(headers: &HeaderMap) -> Option<String> {
    headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(|v| v.chars().take(256).collect())
}

pub async fn start(
    conn: &mut PgConnection,
    state: &AppState,
    user_id: Uuid,
    organization_id: Uuid,
    role: Role,
    client_ip: Option<String>,
    user_agent: Option<String>,
) -> ApiResult<Started> {
    let session = store::create_session(
        conn,
        user_id,
        organization_id,
        state.config.session_ttl_days,
        state.config.max_sessions_per_user,
        client_ip,
        user_agent,
    )
    .await?;
    let (token, expires_at) = state.tokens.issue(user_id, organization_id, session.id, role)?;
    Ok(Started {
        tokens: TokenResponse {
            token,
            token_type: "Bearer".into(),
            expires_at: expires_at.into(),
            refresh_token: session.refresh_token,
            refresh_expires_at: session.expires_at.into(),
            session_id: session.id,
            user_id,
            organization_id,
            role,
        },
        evicted: session.evicted,
    })
}
