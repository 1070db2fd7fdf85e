//! Resumable uploads of a draft's content, for big files: start a session, `PUT` numbered parts
//! (each answered with its ETag, the quoted md5 of the part; a part sent again replaces the
//! earlier one), then complete with the list of parts and their ETags (and optionally the
//! whole file's sha256 and/or md5, verified), or abort. Each part is its own blob until the
//! session completes; then they are joined, streaming, into the version's content. Sessions
//! untouched for `EDGEFLOW_UPLOAD_SESSION_EXPIRY_SECONDS` expire with their parts.

use axum::{
    body::{Body, Bytes},
    extract::{DefaultBodyLimit, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use futures_util::StreamExt;
use serde_json::json;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    blobs::Written,
    cleanup::{self, PendingBlob},
    content::{Limits, check_max_size, check_quota, ensure_draft, receive, size_mismatch},
    model::{Binary, CompleteUpload, ResourceVersion, UploadSession, UploadStart, UploadedPart},
    routes::resource_event,
    store::{self, VersionRow},
    upload_store::{self, MAX_PARTS, PartRow, UploadRow, part_etag},
};
use crate::{
    auth::{context::Require, roles::at_least},
    error::{ApiError, ApiResult, ErrorBody},
    http::extract::{Json, Path},
    state::AppState,
};

const MIN_PART_SIZE: i64 = 1024 * 1024;
const MAX_PART_SIZE: i64 = 256 * 1024 * 1024;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload_part))
        // A part is limited by the session's part size as it streams, not by the JSON limit.
        .layer(DefaultBodyLimit::disable())
        .routes(routes!(start_upload))
        .routes(routes!(get_upload, abort_upload))
        .routes(routes!(complete_upload))
}

/// The draft, checked to be one.
async fn find_draft(state: &AppState, organization_id: Uuid, resource_id: Uuid, id: Uuid) -> ApiResult<VersionRow> {
    let version = store::find_version(&mut *state.db.acquire().await?, organization_id, resource_id, id, false)
        .await?
        .ok_or(ApiError::NotFound("resource version"))?;
    ensure_draft(&version)?;
    Ok(version)
}

async fn find_session(
    conn: &mut sqlx::PgConnection,
    organization_id: Uuid,
    resource_id: Uuid,
    version_id: Uuid,
    upload_id: Uuid,
    lock: bool,
) -> ApiResult<UploadRow> {
    upload_store::find(conn, organization_id, resource_id, version_id, upload_id, lock)
        .await?
        .ok_or(ApiError::NotFound("upload session"))
}

fn busy() -> ApiError {
    ApiError::conflict("UPLOAD_COMPLETING", "the upload is being completed; wait for that to finish")
}

/// Start a resumable upload
///
/// For a draft; the body may be empty or `{"partSize": n}`. Answers the `uploadId` and the part
/// size: send parts 1, 2, ... of that size (the last may be shorter) to
/// `PUT .../uploads/{uploadId}/parts/{partNumber}`. The draft's `sizeInBytes` is reserved against
/// the organization's quota while the session is open.
#[utoipa::path(post, path = "/api/resources/{resourceId}/versions/{id}/uploads", tag = "resources",
    extensions(("x-required-role" = json!("Editor"))),
    params(
        ("resourceId" = Uuid, Path, description = "The resource's id"),
        ("id" = Uuid, Path, description = "The draft's id"),
    ),
    request_body(content = Option<UploadStart>, description = "Optional"),
    responses(
        (status = 201, description = "The session", body = UploadSession),
        (status = 400, description = "Malformed body or invalid part size", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs Editor", body = ErrorBody),
        (status = 404, description = "No such version in this organization", body = ErrorBody),
        (status = 409, description = "The version is Completed (`VERSION_COMPLETED`)", body = ErrorBody),
        (status = 413, description = "Past the maximum upload size (`UPLOAD_TOO_LARGE`) or the storage quota (`QUOTA_EXCEEDED`)", body = ErrorBody),
    ))]
async fn start_upload(
    State(state): State<AppState>,
    auth: Require<at_least::Editor>,
    Path((resource_id, id)): Path<(Uuid, Uuid)>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<UploadSession>)> {
    // No body, or JSON `null`, means the defaults.
    let start: UploadStart = if body.iter().all(u8::is_ascii_whitespace) {
        UploadStart::default()
    } else {
        crate::http::extract::from_json_bytes::<Option<UploadStart>>(&body)?.unwrap_or_default()
    };
    let default_part_size = i64::try_from(state.config.upload_part_size_bytes).unwrap_or(MAX_PART_SIZE);
    let part_size = start.part_size.unwrap_or(default_part_size.clamp(MIN_PART_SIZE, MAX_PART_SIZE));
    if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&part_size) {
        return Err(ApiError::invalid_field(
            "partSize",
            format!("must be from {MIN_PART_SIZE} to {MAX_PART_SIZE} bytes"),
        ));
    }
    let mut tx = state.db.begin().await?;
    let resource = store::find_resource(&mut tx, auth.organization_id, resource_id, false)
        .await?
        .ok_or(ApiError::NotFound("resource version"))?;
    let version = store::find_version(&mut tx, auth.organization_id, resource_id, id, true)
        .await?
        .ok_or(ApiError::NotFound("resource version"))?;
    ensure_draft(&version)?;
    check_max_size(&state, u64::try_from(version.size_in_bytes).unwrap_or_default())?;
    if version.size_in_bytes > part_size * i64::from(MAX_PARTS) {
        return Err(ApiError::invalid_field(
            "partSize",
            format!("{MAX_PARTS} parts of this size cannot hold sizeInBytes"),
        ));
    }
    check_quota(&mut tx, &state, auth.organization_id, Some(version.id), version.size_in_bytes).await?;
    let session =
        upload_store::insert(&mut tx, &version, part_size, state.config.upload_session_expiry_seconds, auth.user_id())
            .await?;
    resource_event(&auth, "resource.upload.start", &resource, format!("started a resumable upload to version {} of resource {}", version.version, resource.name))
        .with_data(json!({"resourceId": resource.id, "versionId": version.id, "uploadId": session.id, "sizeInBytes": session.size_in_bytes}))
        .record(&mut tx)
        .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(session.into_api(Vec::new()))))
}

/// Show a resumable upload
///
/// With the parts received so far, so an interrupted client knows what to send again.
#[utoipa::path(get, path = "/api/resources/{resourceId}/versions/{id}/uploads/{uploadId}", tag = "resources",
    extensions(("x-required-role" = json!("Viewer"))),
    params(
        ("resourceId" = Uuid, Path, description = "The resource's id"),
        ("id" = Uuid, Path, description = "The draft's id"),
        ("uploadId" = Uuid, Path, description = "The session's id"),
    ),
    responses(
        (status = 200, description = "The session", body = UploadSession),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "No such session (or it expired)", body = ErrorBody),
    ))]
async fn get_upload(
    State(state): State<AppState>,
    auth: Require<at_least::Viewer>,
    Path((resource_id, id, upload_id)): Path<(Uuid, Uuid, Uuid)>,
) -> ApiResult<Json<UploadSession>> {
    let mut conn = state.db.acquire().await?;
    let session = find_session(&mut conn, auth.organization_id, resource_id, id, upload_id, false).await?;
    let parts = upload_store::parts(&mut conn, upload_id).await?;
    Ok(Json(session.into_api(parts)))
}

/// Upload one part
///
/// The raw bytes of part `partNumber` (1 to 10000), at most the session's `partSize`. Answers the
/// part's `ETag` (also in the body): quote it back when completing. A `Content-MD5` header, when
/// sent, is checked. Sending a part again replaces it.
#[utoipa::path(put, path = "/api/resources/{resourceId}/versions/{id}/uploads/{uploadId}/parts/{partNumber}", tag = "resources",
    extensions(("x-required-role" = json!("Editor"))),
    params(
        ("resourceId" = Uuid, Path, description = "The resource's id"),
        ("id" = Uuid, Path, description = "The draft's id"),
        ("uploadId" = Uuid, Path, description = "The session's id"),
        ("partNumber" = i32, Path, description = "1 to 10000", minimum = 1, maximum = 10000),
        // Base64 of 16 bytes: 21 characters, one whose low bits are zero, and the padding.
        ("Content-MD5" = Option<String>, Header, description = "Base64 md5 of the part, checked when sent",
            pattern = "^[A-Za-z0-9+/]{21}[AQgw]==$"),
    ),
    request_body(content = Binary, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "Stored; `ETag` names the part", body = UploadedPart),
        (status = 400, description = "Bad part number, `Content-MD5` mismatch, or the parts would exceed `sizeInBytes`", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs Editor", body = ErrorBody),
        (status = 404, description = "No such session (or it expired)", body = ErrorBody),
        (status = 409, description = "The session is being completed, or the version is Completed", body = ErrorBody),
        (status = 413, description = "Larger than the session's part size (`PART_TOO_LARGE`)", body = ErrorBody),
    ))]
async fn upload_part(
    State(state): State<AppState>,
    auth: Require<at_least::Editor>,
    Path((resource_id, id, upload_id, part_number)): Path<(Uuid, Uuid, Uuid, i32)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    if !(1..=MAX_PARTS).contains(&part_number) {
        return Err(ApiError::invalid_field("partNumber", format!("must be from 1 to {MAX_PARTS}")));
    }
    let content_md5 = match headers.get("content-md5") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| STANDARD.decode(v.trim()).ok())
                .filter(|bytes| bytes.len() == 16)
                .map(hex::encode)
                .ok_or_else(|| ApiError::invalid_field("Content-MD5", "expected the base64 of 16 bytes"))?,
        ),
    };
    let version = find_draft(&state, auth.organization_id, resource_id, id).await?;
    let mut conn = state.db.acquire().await?;
    let session = find_session(&mut conn, auth.organization_id, resource_id, id, upload_id, false).await?;
    if session.state != "Open" {
        return Err(busy());
    }
    let others = upload_store::other_parts_size(&mut conn, upload_id, part_number).await?;
    let key = format!("{}/uploads/{upload_id}/{part_number}-{}", version.organization_id, Uuid::new_v4().simple());
    // The session reserved its whole size against the quota: a part reserves nothing more.
    cleanup::register_write(&mut conn, &key, auth.organization_id, state.hub.replica_id, 0).await?;
    drop(conn);
    let pending = PendingBlob::new(&state, key.clone());

    let mut writer = state.blobs.writer(&key);
    let room = u64::try_from(session.size_in_bytes - others).unwrap_or_default();
    let part_size = u64::try_from(session.part_size).unwrap_or_default();
    let limits = Limits { expected: None, max: part_size, too_large: part_too_large };
    let checked = async {
        receive(&mut writer, body.into_data_stream(), &limits).await?;
        let written = writer.written();
        if written.size > room {
            return Err(ApiError::invalid_field(
                "sizeInBytes",
                format!("the parts would add up to more than the declared {} bytes", session.size_in_bytes),
            ));
        }
        if let Some(expected) = &content_md5
            && *expected != written.md5
        {
            return Err(ApiError::invalid_field("Content-MD5", "does not match the part received"));
        }
        Ok(written)
    }
    .await;
    let written = match checked {
        Ok(_) => match writer.finish().await {
            Ok(written) => written,
            Err(err) => {
                pending.discard().await;
                return Err(ApiError::Internal(anyhow::Error::new(err).context("finishing an upload part")));
            }
        },
        Err(err) => {
            writer.abort().await;
            pending.discard().await;
            return Err(err);
        }
    };
    let part = PartRow {
        part_number,
        size_in_bytes: i64::try_from(written.size).unwrap_or(i64::MAX),
        md5: written.md5.clone(),
        blob_key: key,
    };
    let stored = async {
        let mut tx = state.db.begin().await?;
        let session = find_session(&mut tx, auth.organization_id, resource_id, id, upload_id, true).await?;
        if session.state != "Open" {
            return Err(busy());
        }
        if !pending.claim(&mut tx).await? {
            return Err(ApiError::conflict(
                "UPLOAD_ABANDONED",
                "the part took too long and was discarded; send it again",
            ));
        }
        let replaced =
            upload_store::put_part(&mut tx, upload_id, &part, state.config.upload_session_expiry_seconds).await?;
        tx.commit().await?;
        Ok(replaced)
    }
    .await;
    match stored {
        Ok(replaced) => {
            pending.keep();
            cleanup::delete_released(&state, &replaced.into_iter().collect::<Vec<_>>()).await;
        }
        Err(err) => {
            pending.discard().await;
            return Err(err);
        }
    }
    let etag = part_etag(&part.md5);
    let mut response =
        Json(UploadedPart { part_number, etag: etag.clone(), size_in_bytes: part.size_in_bytes }).into_response();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    Ok(response)
}

fn part_too_large(max: u64) -> ApiError {
    ApiError::PayloadTooLarge {
        code: "PART_TOO_LARGE",
        message: format!("a part may have at most the session's part size of {max} bytes"),
    }
}

/// An ETag as sent back: quotes and a weak prefix dropped, lower case.
fn normalize_etag(etag: &str) -> String {
    etag.trim().trim_start_matches("W/").trim_matches('"').to_ascii_lowercase()
}

/// A hex digest given by the client, checked for its length.
fn hex_digest(field: &str, value: Option<&str>, length: usize) -> ApiResult<Option<String>> {
    let Some(value) = value.map(str::trim) else { return Ok(None) };
    if value.len() != length || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::invalid_field(field, format!("expected {length} hex digits")));
    }
    Ok(Some(value.to_ascii_lowercase()))
}

/// Matches the client's part list with the parts received: ascending numbers, each received
/// with that ETag. Answers the parts to join, in order.
fn match_parts(request: &CompleteUpload, received: &[PartRow]) -> ApiResult<Vec<PartRow>> {
    let mut chosen = Vec::with_capacity(request.parts.len());
    let mut previous = 0;
    for (i, part) in request.parts.iter().enumerate() {
        if part.part_number <= previous {
            return Err(ApiError::invalid_field(
                format!("parts[{i}].partNumber"),
                "part numbers must be in ascending order, each once",
            ));
        }
        previous = part.part_number;
        let Some(found) = received.iter().find(|r| r.part_number == part.part_number) else {
            return Err(ApiError::invalid_field(
                format!("parts[{i}].partNumber"),
                format!("part {} was not uploaded", part.part_number),
            ));
        };
        if normalize_etag(&part.etag) != found.md5 {
            return Err(ApiError::invalid_field(
                format!("parts[{i}].etag"),
                format!(
                    "does not match part {}: upload it again or send the ETag its upload answered",
                    part.part_number
                ),
            ));
        }
        chosen.push(found.clone());
    }
    Ok(chosen)
}

/// Complete a resumable upload
///
/// `{"parts": [{"partNumber", "etag"}], "sha256"?, "md5"?}`: the parts, ascending, with the ETags
/// their uploads answered; they must add up to the draft's `sizeInBytes`. They are joined into
/// the draft's content (replacing any earlier content); `sha256` / `md5` (hex), when given, must
/// match the whole (400 otherwise, and the session stays open). Parts not listed are dropped.
#[utoipa::path(post, path = "/api/resources/{resourceId}/versions/{id}/uploads/{uploadId}/complete", tag = "resources",
    extensions(("x-required-role" = json!("Editor"))),
    params(
        ("resourceId" = Uuid, Path, description = "The resource's id"),
        ("id" = Uuid, Path, description = "The draft's id"),
        ("uploadId" = Uuid, Path, description = "The session's id"),
    ),
    request_body = CompleteUpload,
    responses(
        (status = 200, description = "The draft with its new content", body = ResourceVersion),
        (status = 400, description = "A part is missing or its ETag differs, the size differs from `sizeInBytes`, or a checksum differs", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs Editor", body = ErrorBody),
        (status = 404, description = "No such session (or it expired)", body = ErrorBody),
        (status = 409, description = "Already being completed, aborted meanwhile, or the version is Completed", body = ErrorBody),
    ))]
async fn complete_upload(
    State(state): State<AppState>,
    auth: Require<at_least::Editor>,
    Path((resource_id, id, upload_id)): Path<(Uuid, Uuid, Uuid)>,
    Json(request): Json<CompleteUpload>,
) -> ApiResult<Json<ResourceVersion>> {
    let sha256 = hex_digest("sha256", request.sha256.as_deref(), 64)?;
    let md5 = hex_digest("md5", request.md5.as_deref(), 32)?;
    let version = find_draft(&state, auth.organization_id, resource_id, id).await?;
    let mut tx = state.db.begin().await?;
    let session = find_session(&mut tx, auth.organization_id, resource_id, id, upload_id, true).await?;
    let received = upload_store::parts(&mut tx, upload_id).await?;
    let parts = match_parts(&request, &received)?;
    let total: i64 = parts.iter().map(|p| p.size_in_bytes).sum();
    if total != version.size_in_bytes {
        return Err(ApiError::invalid_field(
            "parts",
            format!("the parts add up to {total} bytes but the version declares sizeInBytes {}", version.size_in_bytes),
        ));
    }
    if !upload_store::begin_completing(&mut tx, upload_id, state.config.upload_session_expiry_seconds).await? {
        return Err(busy());
    }
    let key = format!("{}/{}/{}/{}", version.organization_id, version.resource_id, version.id, Uuid::new_v4().simple());
    cleanup::register_write(&mut tx, &key, auth.organization_id, state.hub.replica_id, 0).await?;
    tx.commit().await?;
    let pending = PendingBlob::new(&state, key);
    let completing = Completing { db: state.db.clone(), upload_id, done: false };

    let outcome = async {
        let written = join_parts(&state, &pending.key, &parts, sha256.as_deref(), md5.as_deref()).await?;
        publish(&state, &auth, &version, &session, &pending, &written).await
    }
    .await;
    match outcome {
        Ok((row, released)) => {
            pending.keep();
            completing.finished();
            cleanup::delete_released(&state, &released).await;
            Ok(Json(row.into()))
        }
        Err(err) => {
            pending.discard().await;
            completing.reopen().await;
            Err(err)
        }
    }
}

/// A session being completed. Unless the completion succeeds, it goes back to Open (also when
/// the request is dropped midway), so the client can complete again or abort.
struct Completing {
    db: sqlx::PgPool,
    upload_id: Uuid,
    done: bool,
}

impl Completing {
    fn finished(mut self) {
        self.done = true;
    }

    async fn reopen(mut self) {
        self.done = true;
        if let Ok(mut conn) = self.db.acquire().await
            && let Err(err) = upload_store::reopen(&mut conn, self.upload_id).await
        {
            tracing::warn!(error = %err, upload = %self.upload_id, "reopening an upload session failed");
        }
    }
}

impl Drop for Completing {
    fn drop(&mut self) {
        if !self.done
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let (db, upload_id) = (self.db.clone(), self.upload_id);
            runtime.spawn(async move {
                if let Ok(mut conn) = db.acquire().await {
                    let _ = upload_store::reopen(&mut conn, upload_id).await;
                }
            });
        }
    }
}

/// Streams the parts, in order, into the blob `key`, checking the digests before it is published.
async fn join_parts(
    state: &AppState,
    key: &str,
    parts: &[PartRow],
    sha256: Option<&str>,
    md5: Option<&str>,
) -> ApiResult<Written> {
    let internal =
        |err: object_store::Error| ApiError::Internal(anyhow::Error::new(err).context("joining upload parts"));
    let mut writer = state.blobs.writer(key);
    for part in parts {
        let size = u64::try_from(part.size_in_bytes).unwrap_or_default();
        let mut stream = match state.blobs.read(&part.blob_key, 0..size).await {
            Ok(stream) => stream,
            Err(err) => {
                writer.abort().await;
                return Err(internal(err));
            }
        };
        while let Some(chunk) = stream.next().await {
            let written = match chunk {
                Ok(chunk) => writer.write(chunk).await.map_err(internal),
                Err(err) => Err(ApiError::Internal(anyhow::Error::new(err).context("reading an upload part"))),
            };
            if let Err(err) = written {
                writer.abort().await;
                return Err(err);
            }
        }
    }
    let written = writer.written();
    let mismatch = [("sha256", sha256, &written.sha256), ("md5", md5, &written.md5)]
        .into_iter()
        .find(|(_, expected, actual)| expected.is_some_and(|e| e != actual.as_str()));
    if let Some((field, _, actual)) = mismatch {
        writer.abort().await;
        return Err(ApiError::invalid_field(
            field,
            format!("does not match the joined parts (their {field} is {actual})"),
        ));
    }
    writer.finish().await.map_err(internal)
}

/// Makes the joined blob the draft's content and ends the session, in one transaction.
async fn publish(
    state: &AppState,
    auth: &Require<at_least::Editor>,
    version: &VersionRow,
    session: &UploadRow,
    pending: &PendingBlob,
    written: &Written,
) -> ApiResult<(VersionRow, Vec<String>)> {
    let mut tx = state.db.begin().await?;
    let resource = store::find_resource(&mut tx, auth.organization_id, version.resource_id, false)
        .await?
        .ok_or(ApiError::NotFound("resource version"))?;
    let current = store::find_version(&mut tx, auth.organization_id, version.resource_id, version.id, true)
        .await?
        .ok_or(ApiError::NotFound("resource version"))?;
    ensure_draft(&current)?;
    if u64::try_from(current.size_in_bytes).ok() != Some(written.size) {
        return Err(size_mismatch(written.size, u64::try_from(current.size_in_bytes).unwrap_or_default(), "not"));
    }
    if upload_store::find(&mut tx, auth.organization_id, version.resource_id, version.id, session.id, true)
        .await?
        .is_none()
    {
        return Err(ApiError::conflict("UPLOAD_ABORTED", "the upload session was aborted or expired meanwhile"));
    }
    if !pending.claim(&mut tx).await? {
        return Err(ApiError::conflict(
            "UPLOAD_ABANDONED",
            "joining the parts took too long and was discarded; complete again",
        ));
    }
    let content_type = "application/octet-stream";
    let row = store::set_content(&mut tx, version.id, &pending.key, written, content_type).await?;
    let mut released = upload_store::delete(&mut tx, session.id).await?;
    released.extend(current.blob_key);
    resource_event(
        auth,
        "resource.upload.complete",
        &resource,
        format!("completed a resumable upload of {} bytes to version {} of resource {}", written.size, row.version, resource.name),
    )
    .with_data(json!({"resourceId": resource.id, "versionId": row.id, "uploadId": session.id, "sizeInBytes": written.size, "sha256": written.sha256}))
    .record(&mut tx)
    .await?;
    tx.commit().await?;
    Ok((row, released))
}

/// Abort a resumable upload
///
/// Deletes the session and its parts. The draft keeps whatever content it had.
#[utoipa::path(delete, path = "/api/resources/{resourceId}/versions/{id}/uploads/{uploadId}", tag = "resources",
    extensions(("x-required-role" = json!("Editor"))),
    params(
        ("resourceId" = Uuid, Path, description = "The resource's id"),
        ("id" = Uuid, Path, description = "The draft's id"),
        ("uploadId" = Uuid, Path, description = "The session's id"),
    ),
    responses(
        (status = 204, description = "Aborted"),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Needs Editor", body = ErrorBody),
        (status = 404, description = "No such session (or it expired)", body = ErrorBody),
    ))]
async fn abort_upload(
    State(state): State<AppState>,
    auth: Require<at_least::Editor>,
    Path((resource_id, id, upload_id)): Path<(Uuid, Uuid, Uuid)>,
) -> ApiResult<StatusCode> {
    let mut tx = state.db.begin().await?;
    let resource = store::find_resource(&mut tx, auth.organization_id, resource_id, false)
        .await?
        .ok_or(ApiError::NotFound("upload session"))?;
    find_session(&mut tx, auth.organization_id, resource_id, id, upload_id, true).await?;
    let released = upload_store::delete(&mut tx, upload_id).await?;
    resource_event(
        &auth,
        "resource.upload.abort",
        &resource,
        format!("aborted a resumable upload to resource {}", resource.name),
    )
    .with_data(json!({"resourceId": resource.id, "versionId": id, "uploadId": upload_id}))
    .record(&mut tx)
    .await?;
    tx.commit().await?;
    cleanup::delete_released(&state, &released).await;
    Ok(StatusCode::NO_CONTENT)
}
