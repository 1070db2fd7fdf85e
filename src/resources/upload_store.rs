//! Resumable upload sessions and their parts in SQL. Every query is scoped by organization id
//! (parts through their session).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    model::{UploadSession, UploadedPart},
    store::VersionRow,
};

/// Part numbers run from 1 to this (as S3's do).
pub const MAX_PARTS: i32 = 10_000;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UploadRow {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub resource_id: Uuid,
    pub version_id: Uuid,
    pub size_in_bytes: i64,
    pub part_size: i64,
    /// `Open`, or `Completing` while its parts are being joined.
    pub state: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

const UPLOAD_COLUMNS: &str = "u.id, u.organization_id, u.resource_id, u.version_id, u.size_in_bytes, u.part_size, u.state, u.created_at, u.expires_at";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PartRow {
    pub part_number: i32,
    pub size_in_bytes: i64,
    pub md5: String,
    pub blob_key: String,
}

/// A part's ETag: its hex md5 in double quotes.
pub fn part_etag(md5: &str) -> String {
    format!("\"{md5}\"")
}

impl UploadRow {
    pub fn into_api(self, parts: Vec<PartRow>) -> UploadSession {
        let part_count =
            if self.part_size > 0 { (self.size_in_bytes + self.part_size - 1) / self.part_size } else { 0 };
        UploadSession {
            upload_id: self.id,
            resource_id: self.resource_id,
            version_id: self.version_id,
            size_in_bytes: self.size_in_bytes,
            part_size: self.part_size,
            part_count,
            max_parts: MAX_PARTS,
            created_at: self.created_at.into(),
            expires_at: self.expires_at.into(),
            parts: parts
                .into_iter()
                .map(|p| UploadedPart {
                    part_number: p.part_number,
                    etag: part_etag(&p.md5),
                    size_in_bytes: p.size_in_bytes,
                })
                .collect(),
        }
    }
}

pub async fn insert(
    conn: &mut PgConnection,
    version: &VersionRow,
    part_size: i64,
    expiry_seconds: i64,
    created_by: Option<Uuid>,
) -> Result<UploadRow, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO resource_uploads AS u (id, organization_id, resource_id, version_id, size_in_bytes, part_size, \
         created_by, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(secs => $8)) \
         RETURNING {UPLOAD_COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(version.organization_id)
    .bind(version.resource_id)
    .bind(version.id)
    .bind(version.size_in_bytes)
    .bind(part_size)
    .bind(created_by)
    .bind(expiry_seconds as f64)
    .fetch_one(conn)
    .await
}

/// The organization's session `id` of this version (an expired one is gone); with `lock`,
/// locked until the transaction ends.
pub async fn find(
    conn: &mut PgConnection,
    organization_id: Uuid,
    resource_id: Uuid,
    version_id: Uuid,
    id: Uuid,
    lock: bool,
) -> Result<Option<UploadRow>, sqlx::Error> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {UPLOAD_COLUMNS} FROM resource_uploads u WHERE u.id = $1 AND u.version_id = $2 AND u.resource_id = $3 \
         AND u.organization_id = $4 AND u.expires_at > now(){lock}"
    )))
    .bind(id)
    .bind(version_id)
    .bind(resource_id)
    .bind(organization_id)
    .fetch_optional(conn)
    .await
}

pub async fn parts(conn: &mut PgConnection, upload_id: Uuid) -> Result<Vec<PartRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT part_number, size_in_bytes, md5, blob_key FROM resource_upload_parts WHERE upload_id = $1 ORDER BY part_number",
    )
    .bind(upload_id)
    .fetch_all(conn)
    .await
}

/// Bytes of the session's parts other than `part_number`.
pub async fn other_parts_size(conn: &mut PgConnection, upload_id: Uuid, part_number: i32) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COALESCE(sum(size_in_bytes), 0)::bigint FROM resource_upload_parts WHERE upload_id = $1 AND part_number <> $2",
    )
    .bind(upload_id)
    .bind(part_number)
    .fetch_one(conn)
    .await
}

/// Records a part (replacing an earlier upload of the same number, whose blob the trigger
/// queues for deletion) and renews the session's expiry. Answers the replaced blob's key.
pub async fn put_part(
    conn: &mut PgConnection,
    upload_id: Uuid,
    part: &PartRow,
    expiry_seconds: i64,
) -> Result<Option<String>, sqlx::Error> {
    let replaced: Option<String> = sqlx::query_scalar(
        "SELECT blob_key FROM resource_upload_parts WHERE upload_id = $1 AND part_number = $2 FOR UPDATE",
    )
    .bind(upload_id)
    .bind(part.part_number)
    .fetch_optional(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO resource_upload_parts (upload_id, part_number, size_in_bytes, md5, blob_key) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (upload_id, part_number) DO UPDATE SET size_in_bytes = EXCLUDED.size_in_bytes, md5 = EXCLUDED.md5, \
         blob_key = EXCLUDED.blob_key, created_at = now()",
    )
    .bind(upload_id)
    .bind(part.part_number)
    .bind(part.size_in_bytes)
    .bind(&part.md5)
    .bind(&part.blob_key)
    .execute(&mut *conn)
    .await?;
    renew(conn, upload_id, expiry_seconds).await?;
    Ok(replaced)
}

pub async fn renew(conn: &mut PgConnection, upload_id: Uuid, expiry_seconds: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE resource_uploads SET updated_at = now(), expires_at = now() + make_interval(secs => $2) WHERE id = $1",
    )
    .bind(upload_id)
    .bind(expiry_seconds as f64)
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves an Open session to Completing (one completion at a time); false when it is not Open.
pub async fn begin_completing(
    conn: &mut PgConnection,
    upload_id: Uuid,
    expiry_seconds: i64,
) -> Result<bool, sqlx::Error> {
    let changed = sqlx::query(
        "UPDATE resource_uploads SET state = 'Completing', updated_at = now(), \
         expires_at = now() + make_interval(secs => $2) WHERE id = $1 AND state = 'Open'",
    )
    .bind(upload_id)
    .bind(expiry_seconds as f64)
    .execute(conn)
    .await?;
    Ok(changed.rows_affected() == 1)
}

/// Back to Open after a completion that failed (e.g. a checksum mismatch), so the client may fix
/// parts and complete again, or abort.
pub async fn reopen(conn: &mut PgConnection, upload_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE resource_uploads SET state = 'Open', updated_at = now() WHERE id = $1 AND state = 'Completing'",
    )
    .bind(upload_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes a session (its parts' blobs are queued for deletion by the trigger); answers those
/// blob keys.
pub async fn delete(conn: &mut PgConnection, upload_id: Uuid) -> Result<Vec<String>, sqlx::Error> {
    let keys: Vec<String> = sqlx::query_scalar("SELECT blob_key FROM resource_upload_parts WHERE upload_id = $1")
        .bind(upload_id)
        .fetch_all(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM resource_uploads WHERE id = $1").bind(upload_id).execute(&mut *conn).await?;
    Ok(keys)
}

/// Deletes every session of a version (when its content is replaced or it is completed);
/// answers the parts' blob keys.
pub async fn delete_for_version(conn: &mut PgConnection, version_id: Uuid) -> Result<Vec<String>, sqlx::Error> {
    let keys: Vec<String> = sqlx::query_scalar(
        "SELECT p.blob_key FROM resource_upload_parts p JOIN resource_uploads u ON u.id = p.upload_id WHERE u.version_id = $1",
    )
    .bind(version_id)
    .fetch_all(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM resource_uploads WHERE version_id = $1").bind(version_id).execute(&mut *conn).await?;
    Ok(keys)
}
