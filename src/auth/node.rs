//! Edge node credentials: `Authorization: Basic base64(nodeId:accessKey)`, used by the tunnel
//! handshake and by nodes downloading what their flows need.

use axum::{
    extract::{FromRef, FromRequestParts},
    http::{header, request::Parts},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use uuid::Uuid;

use super::tokens::secret_hash;
use crate::{edgenodes::store as node_store, error::ApiError, state::AppState, tunnel::session::NodeIdentity};

/// An authenticated edge node.
#[derive(Debug, Clone)]
pub struct NodeAuth(pub NodeIdentity);

fn refused() -> ApiError {
    ApiError::Unauthorized("edge node credentials are missing or wrong: send Basic base64(nodeId:accessKey)".into())
}

fn basic_credentials(parts: &Parts) -> Option<(Uuid, String)> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (node_id, key) = decoded.split_once(':')?;
    Some((node_id.trim().parse().ok()?, key.to_owned()))
}

impl<S> FromRequestParts<S> for NodeAuth
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let (node_id, key) = basic_credentials(parts).ok_or_else(refused)?;
        let node = node_store::find_for_tunnel(&state.db, node_id).await?.ok_or_else(refused)?;
        if node.access_key_hash != secret_hash(&key) {
            return Err(refused());
        }
        Ok(Self(NodeIdentity { id: node.id, organization_id: node.organization_id, name: node.name }))
    }
}
