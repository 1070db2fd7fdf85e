//! Exports of the event list: `Accept: text/csv` or `application/x-ndjson` (or `?accept=csv` /
//! `?accept=ndjson` for a plain download link) streams every matching row.
//!
//! The rows come from one query (one consistent snapshot) read as a stream by a task that writes
//! ~32 KiB chunks into a small channel the response body drains: memory stays bounded whatever
//! the size, and a slow client slows the query down rather than filling memory. A client that
//! goes away (or stops reading for a minute) ends the query: its connection is closed rather than
//! drained. An error half-way aborts the response, so a cut-off file never looks complete.
//!
//! CSV (RFC 4180): a header row, every field quoted when it holds a comma, quote or line break.
//! A field that a spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, tab or
//! carriage return) gets a leading `'`: messages come from nodes and users, and the file is meant
//! for spreadsheets. NDJSON carries the values exactly, one event per line, for programs.

use std::{io, time::Duration};

use axum::{
    body::Body,
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use futures_util::TryStreamExt;
use sqlx::PgPool;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use uuid::Uuid;

use super::{
    model::{Event, EventRow},
    query::EventQuery,
    store,
};
use crate::{
    error::{ApiError, ApiResult},
    http::list::QueryParams,
};

/// Bytes gathered before a chunk is handed to the body.
const CHUNK_BYTES: usize = 32 * 1024;
/// Chunks buffered between the query and the client.
const CHUNKS_IN_FLIGHT: usize = 4;
/// A client that reads nothing for this long is dropped.
const STALLED_AFTER: Duration = Duration::from_secs(60);

const CSV_HEADER: &str = "id,timestamp,level,source,action,subject,message,organizationId,nodeId,flowDefinitionId,\
                          deploymentId,userId,apiKeyId,clientIp,data\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
    Ndjson,
}

impl Format {
    /// The format asked for: `?accept=` first (links cannot set headers), then the `Accept`
    /// header by quality; JSON when nothing we serve is named. An `?accept=` naming nothing we
    /// serve is a 400: unlike a browser's `Accept` header, it was written for this endpoint.
    pub fn negotiate(headers: &HeaderMap, params: &QueryParams) -> ApiResult<Self> {
        if let Some(text) = params.get("accept") {
            return Self::from_media_type(text)
                .ok_or_else(|| ApiError::invalid_field("accept", "expected json, csv or ndjson"));
        }
        let accept =
            headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(",");
        let mut best = (Self::Json, -1.0_f32);
        for item in accept.split(',') {
            let mut parts = item.split(';');
            let Some(format) = parts.next().and_then(Self::from_media_type) else { continue };
            let quality = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            if quality > best.1 && quality > 0.0 {
                best = (format, quality);
            }
        }
        Ok(best.0)
    }

    fn from_media_type(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "application/json" | "json" => Some(Self::Json),
            "text/csv" | "csv" => Some(Self::Csv),
            "application/x-ndjson" | "application/ndjson" | "ndjson" => Some(Self::Ndjson),
            _ => None,
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Csv => "text/csv; charset=utf-8",
            Self::Ndjson => "application/x-ndjson",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Csv => "csv",
            Self::Ndjson => "ndjson",
        }
    }
}

/// The streaming answer. `slot` is held until the export ends.
pub fn response(
    db: PgPool,
    organization_id: Uuid,
    query: EventQuery,
    format: Format,
    slot: OwnedSemaphorePermit,
) -> Response {
    let (sender, mut receiver) = mpsc::channel::<Result<Bytes, io::Error>>(CHUNKS_IN_FLIGHT);
    tokio::spawn(async move {
        let _slot = slot;
        if let Err(err) = run(&db, organization_id, &query, format, &sender).await {
            tracing::error!(error = %err, "an event export failed half-way");
            let _ = sender.send(Err(io::Error::other("the export failed"))).await;
        }
    });
    let body = futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx));
    let name = format!("events-{}.{}", chrono::Utc::now().format("%Y%m%dT%H%M%SZ"), format.extension());
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The client went away or stopped reading.
struct Gone;

async fn run(
    db: &PgPool,
    organization_id: Uuid,
    query: &EventQuery,
    format: Format,
    sender: &mpsc::Sender<Result<Bytes, io::Error>>,
) -> Result<(), sqlx::Error> {
    let mut conn = db.acquire().await?;
    let mut sql = store::export_sql(organization_id, query);
    let mut buffer = String::with_capacity(CHUNK_BYTES + 4096);
    if format == Format::Csv {
        buffer.push_str(CSV_HEADER);
    }
    let mut gone = false;
    {
        let mut rows = sql.build_query_as::<EventRow>().fetch(&mut *conn);
        while let Some(row) = rows.try_next().await? {
            match format {
                Format::Csv => csv_row(&mut buffer, &Event::from(row)),
                Format::Json | Format::Ndjson => {
                    let line =
                        serde_json::to_string(&Event::from(row)).map_err(|err| sqlx::Error::Decode(err.into()))?;
                    buffer.push_str(&line);
                    buffer.push('\n');
                }
            }
            if buffer.len() >= CHUNK_BYTES && send(sender, &mut buffer).await.is_err() {
                gone = true;
                break;
            }
        }
    }
    if gone {
        // The rest of the result is still coming: close the connection rather than drain it.
        conn.close_on_drop();
        return Ok(());
    }
    let _ = send(sender, &mut buffer).await;
    Ok(())
}

async fn send(sender: &mpsc::Sender<Result<Bytes, io::Error>>, buffer: &mut String) -> Result<(), Gone> {
    if buffer.is_empty() {
        return Ok(());
    }
    let chunk = Bytes::from(std::mem::replace(buffer, String::with_capacity(CHUNK_BYTES + 4096)));
    match tokio::time::timeout(STALLED_AFTER, sender.send(Ok(chunk))).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(Gone),
    }
}

/// Appends one event as a CSV record, in `CSV_HEADER`'s order.
pub fn csv_row(out: &mut String, event: &Event) {
    let uuid = |id: Option<Uuid>| id.map(|id| id.to_string()).unwrap_or_default();
    let fields = [
        event.id.to_string(),
        event.timestamp.0.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        event.level.as_str().to_owned(),
        event.source.as_str().to_owned(),
        event.action.clone(),
        event.subject.clone(),
        event.message.clone(),
        event.organization_id.to_string(),
        uuid(event.node_id),
        uuid(event.flow_definition_id),
        uuid(event.deployment_id),
        uuid(event.user_id),
        uuid(event.api_key_id),
        event.client_ip.clone().unwrap_or_default(),
        event.data.as_ref().map(|d| d.to_string()).unwrap_or_default(),
    ];
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(out, field);
    }
    out.push_str("\r\n");
}

/// Appends one field: quoted when needed, formula starts defused.
pub fn csv_field(out: &mut String, value: &str) {
    let defuse = value.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote = value.contains([',', '"', '\r', '\n']);
    if quote {
        out.push('"');
    }
    if defuse {
        out.push('\'');
    }
    if quote {
        for c in value.chars() {
            if c == '"' {
                out.push('"');
            }
            out.push(c);
        }
        out.push('"');
    } else {
        out.push_str(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(value: &str) -> String {
        let mut out = String::new();
        csv_field(&mut out, value);
        out
    }

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(field("Node: Production5"), "Node: Production5");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("two\nlines"), "\"two\nlines\"");
        assert_eq!(field(""), "");
    }

    #[test]
    fn formulas_are_defused() {
        assert_eq!(field("=HYPERLINK(\"http://x\")"), "\"'=HYPERLINK(\"\"http://x\"\")\"");
        assert_eq!(field("-5 degrees"), "'-5 degrees");
        assert_eq!(field("@SUM(A1)"), "'@SUM(A1)");
    }

    #[test]
    fn the_format_follows_accept_and_the_query() {
        let headers = |accept: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
            headers
        };
        let none = QueryParams::default();
        assert_eq!(Format::negotiate(&HeaderMap::new(), &none).ok(), Some(Format::Json));
        assert_eq!(Format::negotiate(&headers("text/csv"), &none).ok(), Some(Format::Csv));
        assert_eq!(Format::negotiate(&headers("application/x-ndjson"), &none).ok(), Some(Format::Ndjson));
        assert_eq!(Format::negotiate(&headers("text/csv;q=0.5, application/json"), &none).ok(), Some(Format::Json));
        assert_eq!(Format::negotiate(&headers("*/*"), &none).ok(), Some(Format::Json));
        let query = QueryParams(vec![("accept".into(), "csv".into())]);
        assert_eq!(Format::negotiate(&HeaderMap::new(), &query).ok(), Some(Format::Csv));
        let unknown = QueryParams(vec![("accept".into(), "xml".into())]);
        assert!(Format::negotiate(&HeaderMap::new(), &unknown).is_err());
    }
}
