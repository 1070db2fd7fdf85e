//! A version's content: the streaming upload (`multipart/form-data`, or a raw body), and the
//! downloads, for users and for edge nodes. Also the size and quota checks every upload path
//! shares, and the loop that streams a request body into a blob.

use std::time::Duration;

use axum::{
    extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Multipart, Request, State},
    http::{HeaderMap, header, request::Parts},
    response::Response,
};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde_json::json;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    blobs::{BlobWriter, Written},
    cleanup::{self, PendingBlob},
    download,
    model::{Binary, ResourceVersion, UploadForm, VersionState},
    references,
    store::{self, VersionRow},
};
use crate::{
    auth::{
        context::{AuthContext, Require, authenticate},
        node::NodeAuth,
        roles::{Role, at_least},
    },
    error::{ApiError, ApiResult, ErrorBody},
    events::store::NewEvent,
    http::extract::{Json, Path},
    state::AppState,
    tunnel::session::NodeIdentity,
};

/// An upload that receives nothing for this long is dropped (uploads have no overall timeout).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// What a stored upload is typed as when the client says nothing.
const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload_content, download_content))
        // Uploads are limited by EDGEFLOW_MAX_UPLOAD_BYTES and the quota as they stream, not by
        // the API's JSON body limit.
        .layer(DefaultBodyLimit::disable())
}

/// 409 unless the version is a draft.
pub fn ensure_draft(version: &VersionRow) -> ApiResult<()> {
    match version.state {
        VersionState::Draft => Ok(()),
        VersionState::Completed => Err(ApiError::conflict(
            "VERSION_COMPLETED",
            format!("version {} is Completed: its content and description can no longer change", version.version),
        )),
    }
}

/// 413 `UPLOAD_TOO_LARGE` past the configured maximum.
pub fn check_max_size(state: &AppState, size: u64) -> ApiResult<()> {
    let max = state.config.max_upload_bytes;
    if size > max {
        return Err(too_large(max));
    }
    Ok(())
}

/// 413 `QUOTA_EXCEEDED` when `size` more bytes (replacing `replacing`'s content, if any) would
/// take the organization past its storage quota. Takes the organization's storage lock: the
/// caller records its reservation in the same transaction.
pub async fn check_quota(
    conn: &mut sqlx::PgConnection,
    state: &AppState,
    organization_id: Uuid,
    replacing: Option<Uuid>,
    size: i64,
) -> ApiResult<()> {
    let quota = state.config.storage_quota_bytes;
    store::lock_storage(conn, organization_id).await?;
    if quota == 0 {
        return Ok(());
    }
    let used = store::storage_used(conn, organization_id, replacing).await?;
    if used.saturating_add(size) > i64::try_from(quota).unwrap_or(i64::MAX) {
        return Err(ApiError::PayloadTooLarge {
            code: "QUOTA_EXCEEDED",
            message: format!(
                "the organization's storage quota of {quota} bytes would be exceeded: {used} bytes are used and \
                 this upload needs {size}"
            ),
        });
    }
    Ok(())
}

/// Limits on a body being received.
pub struct Limits {
    /// Bytes the body must have (when known): one more is refused at once.
    pub expected: Option<u64>,
    /// Most bytes accepted.
    pub max: u64,
    /// The error past `max`.
    pub too_large: fn(u64) -> ApiError,
}

/// Streams `body` into `writer`, stopping at the first chunk past the limits. Nothing is
/// published: the caller finishes or aborts the writer.
pub async fn receive<S, E>(writer: &mut BlobWriter, mut body: S, limits: &Limits) -> ApiResult<()>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    loop {
        let next = tokio::time::timeout(IDLE_TIMEOUT, body.next()).await.map_err(|_| {
            ApiError::BadRequest(format!("the upload stalled: nothing received for {} s", IDLE_TIMEOUT.as_secs()))
        })?;
        let Some(chunk) = next else { return Ok(()) };
        let chunk = chunk.map_err(|err| ApiError::BadRequest(format!("the upload was interrupted: {err}")))?;
        let size = writer.size() + chunk.len() as u64;
        if size > limits.max {
            return Err((limits.too_large)(limits.max));
        }
        if let Some(expected) = limits.expected
            && size > expected
        {
            return Err(size_mismatch(size, expected, "more than"));
        }
        writer.write(chunk).await.map_err(|err| {
            ApiError::Internal(anyhow::Error::new(err).context("writing an upload to the blob store"))
        })?;
    }
}

/// 400 naming `sizeInBytes`.
pub fn size_mismatch(got: u64, expected: u64, relation: &str) -> ApiError {
    ApiError::invalid_field(
        "sizeInBytes",
        format!(
            "the upload has {relation} the declared {expected} bytes (received {got}); change sizeInBytes or send the right file"
        ),
    )
}

/// A new blob key for a version's content.
fn content_key(version: &VersionRow) -> String {
    format!("{}/{}/{}/{}", version.organization_id, version.resource_id, version.id, Uuid::new_v4().simple())
}

/// Where the bytes of an upload request are.
enum Source {
    Form(Multipart),
    Raw(axum::body::BodyDataStream),
}

/// Upload a version's content
///
/// As `multipart/form-data` (the first file field; its name is free), or as a raw body of any
/// other type. Streamed to the blob store, never held whole; it must have exactly the draft's
/// `sizeInBytes` (400 otherwise) and fit both the server's maximum and the organization's quota
/// (413 `UPLOAD_TOO_LARGE` / `QUOTA_EXCEEDED`). Uploading again replaces a draft's content. Big
/// files may rather use a resumable upload (`.../uploads`).
#[utoipa::path(post, path = "/api/resources/{resourceId}/versions/{id}/content", tag = "resources",
    extensions(("x-required-role" = json!("Editor"))),
    params(
        ("resourceId" = Uuid, Path, description = "The resource's id"),
        ("id" = Uuid, Path, description = "The draft's id"),
    ),
    request_body(content(
        (UploadForm = "multipart/form-data"),
        (Binary = "application/octet-stream"),
    )),
    responses(
        (status = 200, description = "Stored: the draft with its content's size, sha256 and md5", body = ResourceVersion),
        (status = 400, description = "No file in the form, size differs from `sizeInBytes`, or the upload broke off", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs Editor", body = ErrorBody),
        (status = 404, description = "No such resource version in this organization", body = ErrorBody),
        (status = 409, description = "The version is Completed (`VERSION_COMPLETED`)", body = ErrorBody),
        (status = 413, description = "Past the maximum upload size (`UPLOAD_TOO_LARGE`) or the storage quota (`QUOTA_EXCEEDED`)", body = ErrorBody),
    ))]
async fn upload_content(
    State(state): State<AppState>,
    auth: Require<at_least::Editor>,
    Path((resource_id, id)): Path<(Uuid, Uuid)>,
    request: Request,
) -> ApiResult<Json<ResourceVersion>> {
    let version = store::find_version(&mut *state.db.acquire().await?, auth.organization_id, resource_id, id, false)
        .await?
        .ok_or(ApiError::NotFound("resource version"))?;
    ensure_draft(&version)?;
    let declared = u64::try_from(version.size_in_bytes).unwrap_or_default();
    check_max_size(&state, declared)?;

    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("multipart/form-data"));
    let raw_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let source = if is_form {
        Source::Form(Multipart::from_request(request, &()).await.map_err(|rejection| {
            ApiError::BadRequest(format!("malformed multipart body: {}", rejection.body_text()))
        })?)
    } else {
        Source::Raw(request.into_body().into_data_stream())
    };

    // Reserve the declared size against the quota and register the write: committed before the
    // first byte, so a crash leaves a record of the blob to clean up.
    let key = content_key(&version);
    let mut tx = state.db.begin().await?;
    check_quota(&mut tx, &state, auth.organization_id, Some(version.id), version.size_in_bytes).await?;
    cleanup::register_write(&mut tx, &key, auth.organization_id, state.hub.replica_id, version.size_in_bytes).await?;
    tx.commit().await?;
    let pending = PendingBlob::new(&state, key.clone());

    let mut writer = state.blobs.writer(&key);
    let limits = Limits { expected: Some(declared), max: state.config.max_upload_bytes, too_large };
    let received = match source {
        Source::Form(mut form) => receive_form(&mut writer, &mut form, &limits).await,
        Source::Raw(body) => receive(&mut writer, body, &limits)
            .await
            .map(|()| raw_type.filter(|t| !t.trim().is_empty()).unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_owned())),
    };
    let content_type = match received {
        Ok(content_type) if writer.size() == declared => content_type,
        Ok(_) => {
            let got = writer.size();
            writer.abort().await;
            pending.discard().await;
            return Err(size_mismatch(got, declared, "fewer than"));
        }
        Err(err) => {
            writer.abort().await;
            pending.discard().await;
            return Err(err);
        }
    };
    let written = match writer.finish().await {
        Ok(written) => written,
        Err(err) => {
            pending.discard().await;
            return Err(ApiError::Internal(anyhow::Error::new(err).context("finishing an upload")));
        }
    };
    match publish(&state, &auth, &version, &pending, &written, &content_type).await {
        Ok((row, released)) => {
            pending.keep();
            cleanup::delete_released(&state, &released).await;
            Ok(Json(row.into()))
        }
        Err(err) => {
            pending.discard().await;
            Err(err)
        }
    }
}

fn too_large(max: u64) -> ApiError {
    ApiError::PayloadTooLarge {
        code: "UPLOAD_TOO_LARGE",
        message: format!("the content is larger than the largest upload allowed ({max} bytes)"),
    }
}

/// Streams the form's file field; answers its content type.
async fn receive_form(writer: &mut BlobWriter, form: &mut Multipart, limits: &Limits) -> ApiResult<String> {
    loop {
        let field = form
            .next_field()
            .await
            .map_err(|err| ApiError::BadRequest(format!("malformed multipart body: {}", err.body_text())))?
            .ok_or_else(|| ApiError::BadRequest("the form has no file: send the content as a file field".into()))?;
        if field.file_name().is_none() && field.name() != Some("file") {
            // Another form field (a description, say): not the content.
            continue;
        }
        let content_type = field
            .content_type()
            .map(str::to_owned)
            .filter(|t| !t.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_owned());
        receive(writer, field, limits).await?;
        return Ok(content_type);
    }
}

/// Points the draft at the new blob, in one transaction with the claim of the blob and the audit
/// event. Answers the version and the blobs this released.
async fn publish(
    state: &AppState,
    auth: &Require<at_least::Editor>,
    version: &VersionRow,
    pending: &PendingBlob,
    written: &Written,
    content_type: &str,
) -> ApiResult<(VersionRow, Vec<String>)> {
    let mut tx = state.db.begin().await?;
    let resource = store::find_resource(&mut tx, auth.organization_id, version.resource_id, false)
        .await?
        .ok_or(ApiError::NotFound("resource"))?;
    let current = store::find_version(&mut tx, auth.organization_id, version.resource_id, version.id, true)
        .await?
        .ok_or(ApiError::NotFound("resource version"))?;
    ensure_draft(&current)?;
    if u64::try_from(current.size_in_bytes).ok() != Some(written.size) {
        return Err(size_mismatch(written.size, u64::try_from(current.size_in_bytes).unwrap_or_default(), "not"));
    }
    if !pending.claim(&mut tx).await? {
        return Err(ApiError::conflict("UPLOAD_ABANDONED", "the upload took too long and was discarded; upload again"));
    }
    let row = store::set_content(&mut tx, version.id, &pending.key, written, content_type).await?;
    NewEvent::audit(
        auth,
        "resource.version.upload",
        format!("Resource: {}", resource.name),
        format!("uploaded {} bytes to version {} of resource {}", written.size, row.version, resource.name),
    )
    .with_data(
        json!({"resourceId": resource.id, "versionId": row.id, "sizeInBytes": written.size, "sha256": written.sha256}),
    )
    .record(&mut tx)
    .await?;
    tx.commit().await?;
    Ok((row, current.blob_key.into_iter().collect()))
}

/// Who is downloading: a user (or API key) of the organization, or an edge node with its own
/// credentials (`Authorization: Basic`), which reaches only what its deploy jobs name.
pub enum Downloader {
    User(AuthContext),
    Node(NodeIdentity),
}

impl FromRequestParts<AppState> for Downloader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let basic = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"));
        if basic {
            let NodeAuth(node) = NodeAuth::from_request_parts(parts, state).await?;
            Ok(Self::Node(node))
        } else {
            let auth = authenticate(parts, state).await?;
            auth.require_role(Role::Viewer)?;
            Ok(Self::User(auth))
        }
    }
}

/// Download a version's content
///
/// Drafts and Completed versions alike. `ETag` is the quoted sha256: `If-None-Match` answers 304;
/// a single `Range` (`bytes=a-b`, `bytes=a-`, `bytes=-n`) answers 206, or 416 when it lies past
/// the end. The file is offered under the last segment of the resource's path (or its name).
///
/// Edge nodes download here too, with their own credentials (`Authorization: Basic
/// base64(nodeId:accessKey)`, the `downloadUrl` of a deploy job's resources): a node may read
/// only versions named by a deploy job of its own that is not canceled or expired (403
/// otherwise).
#[utoipa::path(get, path = "/api/resources/{resourceId}/versions/{id}/content", tag = "resources",
    extensions(("x-required-role" = json!("Viewer"))),
    security(("bearer" = []), ("apiKey" = []), ("basic" = [])),
    params(
        ("resourceId" = Uuid, Path, description = "The resource's id"),
        ("id" = Uuid, Path, description = "The version's id"),
        ("Range" = Option<String>, Header, description = "One byte range"),
        ("If-None-Match" = Option<String>, Header, description = "ETags the client holds"),
        ("If-Range" = Option<String>, Header, description = "Honour `Range` only if the content still has this ETag"),
    ),
    responses(
        // As uploaded: the media type the content was uploaded with (else octet-stream).
        (status = 200, description = "The content, with the media type it was uploaded with", content_type = "*/*", body = Binary),
        (status = 206, description = "The requested range", content_type = "*/*", body = Binary),
        (status = 304, description = "Not modified"),
        (status = 401, description = "Not signed in, or wrong node credentials", body = ErrorBody),
        (status = 403, description = "A node: no deploy job of this node uses the version", body = ErrorBody),
        (status = 404, description = "No such version in this organization, or no content uploaded yet", body = ErrorBody),
        (status = 416, description = "The range lies past the end", body = ErrorBody),
    ))]
async fn download_content(
    State(state): State<AppState>,
    caller: Downloader,
    Path((resource_id, id)): Path<(Uuid, Uuid)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let mut conn = state.db.acquire().await?;
    let organization_id = match &caller {
        Downloader::User(auth) => auth.organization_id,
        Downloader::Node(node) => node.organization_id,
    };
    let row = store::find_content(&mut conn, organization_id, resource_id, id)
        .await?
        .ok_or(ApiError::NotFound("resource version"))?;
    if let Downloader::Node(node) = &caller
        && !references::node_may_download(&mut conn, node.organization_id, node.id, resource_id, id).await?
    {
        return Err(ApiError::Forbidden("no flow deployed to this node uses this resource version".into()));
    }
    drop(conn);
    download::serve(&state.blobs, &row, &headers).await
}
