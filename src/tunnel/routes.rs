//! `GET /api/tunnel`: where edge nodes connect. Credentials are checked before the upgrade, so a
//! bad one is a plain 401 and never a socket.

use axum::{
    extract::{State, WebSocketUpgrade, ws::rejection::WebSocketUpgradeRejection},
    response::{IntoResponse, Response},
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::session;
use crate::{
    auth::node::NodeAuth,
    error::{ApiError, ErrorBody},
    http::client_ip::ClientIp,
    state::AppState,
};

/// Socket buffers: small, because a replica holds tens of thousands of sockets (tungstenite's
/// default read buffer alone is 128 KiB).
const READ_BUFFER_BYTES: usize = 1024;
const WRITE_BUFFER_BYTES: usize = 0;
const MAX_WRITE_BUFFER_BYTES: usize = 1024 * 1024;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(tunnel))
}

/// The edge node tunnel (WebSocket)
///
/// Edge nodes connect here with `Authorization: Basic base64(nodeId:accessKey)` and upgrade to a
/// WebSocket speaking the protocol in `openapi/asyncapi.yaml`: the node sends `hello`, the server
/// answers `welcome`, then the shadow and every unfinished job in order.
#[utoipa::path(get, path = "/api/tunnel", tag = "tunnel",
    responses(
        (status = 101, description = "Switching to the tunnel protocol"),
        (status = 400, description = "Not a WebSocket upgrade request", body = ErrorBody),
        (status = 401, description = "Missing or wrong node credentials", body = ErrorBody),
    ),
    security(("basic" = [])))]
async fn tunnel(
    State(state): State<AppState>,
    NodeAuth(node): NodeAuth,
    ClientIp(ip): ClientIp,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            return ApiError::BadRequest(format!("expected a WebSocket upgrade: {}", rejection.body_text()))
                .into_response();
        }
    };
    let hub = state.hub.clone();
    let max_message = hub.settings.max_message_bytes;
    upgrade
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(MAX_WRITE_BUFFER_BYTES)
        // A frame may be a whole message: agents (ours included) send each message in one frame,
        // so a smaller frame limit would close a node's tunnel for a message within the limit.
        .max_frame_size(max_message)
        .max_message_size(max_message)
        .on_upgrade(move |socket| session::run(hub, socket, node, ip.map(|ip| ip.to_string())))
}
