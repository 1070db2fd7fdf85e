//! `/api/events`: the organization's audit and operations log. List (filters, `since`/`until`,
//! offset or keyset paging, count), exports (CSV, NDJSON), one event, and the live stream.

use std::time::Duration;

use axum::{
    extract::State,
    http::{HeaderMap, HeaderName},
    response::{
        IntoResponse, Response,
        sse::{KeepAlive, Sse},
    },
};
use utoipa::openapi::{
    Required,
    path::{Parameter, ParameterBuilder, ParameterIn},
    schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type},
};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    export::{self, Format},
    model::{Event, EventPage},
    query::{EVENT_LIST, EventQuery, Position},
    store,
    stream::{Follower, Start},
};
use crate::{
    auth::{context::Require, roles::at_least::Viewer},
    error::{ApiError, ApiResult, ErrorBody},
    http::{
        extract::{Json, Path},
        list::{self, QueryParams, list_params},
    },
    state::AppState,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_events)).routes(routes!(stream_events)).routes(routes!(get_event))
}

static LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

list_params!(EventListParams = EVENT_LIST);

/// The parameters of the event list beyond the shared list ones (documentation only).
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct EventParams {
    /// Only events at or after this time (`2024-01-18T15:00:00Z`; no zone means UTC).
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<String>,
    /// Only events before this time (later than `since`).
    #[param(value_type = Option<String>, format = DateTime)]
    until: Option<String>,
    /// Continue after the last event of a page: the page's `nextCursor`. Only in the default
    /// order (newest first), and not with `offset`.
    #[param(pattern = "^[A-Za-z0-9_-]+$")]
    after: Option<String>,
    /// Export, like the `Accept` header (for links that cannot set it).
    #[param(inline)]
    accept: Option<ExportFormat>,
}

/// The formats `?accept=` names (media types such as `text/csv` work too).
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum ExportFormat {
    Json,
    Csv,
    Ndjson,
}

/// The parameters of the live stream (documentation only).
struct StreamParams;

impl utoipa::IntoParams for StreamParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let string = || ObjectBuilder::new().schema_type(Type::String);
        let query = list::query_parameter;
        vec![
            query(
                "since",
                "Catch up from this time before going live.",
                string().format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
            ),
            query(
                "lastEventId",
                "Resume after this event (as the `Last-Event-ID` header does; the header wins).",
                string().pattern(Some(EVENT_ID)),
            ),
            list::filter_parameter(&EVENT_LIST),
            ParameterBuilder::new()
                .name("Last-Event-ID")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some("Resume after this event"))
                .schema(Some(string().pattern(Some(EVENT_ID))))
                .build(),
        ]
    }
}

/// An event id given to resume after (blank: none).
fn event_id(field: &str, text: Option<&str>) -> ApiResult<Option<Uuid>> {
    match text.map(str::trim).filter(|text| !text.is_empty()) {
        None => Ok(None),
        Some(text) => {
            Uuid::try_parse(text).map(Some).map_err(|_| ApiError::invalid_field(field, "expected an event id"))
        }
    }
}

/// One event of the live stream, as Server-Sent Events carry it (documentation only).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct StreamEvent {
    /// `message` for an event; `close` for the last one, whose `data` says why the stream ends.
    #[schema(inline)]
    event: Option<StreamEventKind>,
    /// The event's id (send it back as `Last-Event-ID` to resume after it).
    #[schema(pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-7[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}$")]
    id: Option<String>,
    /// The event as JSON (see `Event`), or the reason the stream closes.
    data: String,
    /// Milliseconds to wait before reconnecting.
    retry: Option<u64>,
}

#[derive(utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum StreamEventKind {
    Message,
    Close,
}

/// An event id: a UUIDv7, whose time says where to resume even once the event itself is gone.
/// Empty means none (as when absent).
const EVENT_ID: &str = "^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-7[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12})?$";

/// List, or export, the organization's events
///
/// Newest first by default. Filter on any property of an event (`id`, `timestamp`, `level`,
/// `source`, `action`, `subject`, `message`, `nodeId`, `flowDefinitionId`, `deploymentId`,
/// `userId`, `apiKeyId`, `clientIp`; names match case-insensitively), e.g. all events of a node:
/// `filters[0].propertyName=Subject&filters[0].propertyValue=Node: Production5&filters[0].filterType=contains`,
/// or all errors since a time: `filters[0].propertyName=Level&filters[0].propertyValue=Error&since=2024-01-18T15:00:00`.
///
/// Deep paging: pass a page's `nextCursor` as `after` for the next one; pages stay stable while
/// new events arrive (`nextCursor` is null at the end). `offset` works too, but slows down with depth.
///
/// With `Accept: text/csv` or `Accept: application/x-ndjson` the answer streams every matching
/// event (`limit` applies only when given). CSV fields a spreadsheet would run as a formula
/// get a leading `'`; NDJSON carries values exactly.
#[utoipa::path(get, path = "/api/events", tag = "events",
    extensions(("x-required-role" = json!("Viewer"))),
    params(EventListParams, EventParams),
    responses(
        (status = 200, description = "A page of events, or the export", content(
            (EventPage = "application/json"),
            (String = "text/csv"),
            (String = "application/x-ndjson"),
        )),
        (status = 400, description = "Unknown property or filter type, bad value, time or cursor", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 429, description = "Too many exports running; retry later", body = ErrorBody),
    ))]
async fn list_events(
    State(state): State<AppState>,
    auth: Require<Viewer>,
    headers: HeaderMap,
    params: QueryParams,
) -> ApiResult<Response> {
    let query = EventQuery::parse(&params)?;
    let format = Format::negotiate(&headers, &params)?;
    if format != Format::Json {
        let slot = state.events.export_slot()?;
        return Ok(export::response(state.db.clone(), auth.organization_id, query, format, slot));
    }
    let mut conn = state.db.acquire().await?;
    let (rows, more) = store::list(&mut conn, auth.organization_id, &query).await?;
    let total_count = if query.list.include_count {
        Some(store::count(&mut conn, auth.organization_id, &query).await?)
    } else {
        None
    };
    let next_cursor = match rows.last() {
        Some(last) if more && query.keyset() => Some(Position { at: last.occurred_at, id: last.id }.cursor()),
        _ => None,
    };
    let page = EventPage {
        items: rows.into_iter().map(Event::from).collect(),
        offset: query.list.offset,
        limit: query.list.limit,
        total_count,
        next_cursor,
    };
    Ok(Json(page).into_response())
}

/// Show one event
#[utoipa::path(get, path = "/api/events/{id}", tag = "events",
    extensions(("x-required-role" = json!("Viewer"))),
    params(("id" = Uuid, Path, description = "Event id")),
    responses(
        (status = 200, description = "The event", body = Event),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "No such event in the organization", body = ErrorBody),
    ))]
async fn get_event(
    State(state): State<AppState>,
    auth: Require<Viewer>,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Event>> {
    let mut conn = state.db.acquire().await?;
    let row = store::find(&mut conn, auth.organization_id, id).await?.ok_or(ApiError::NotFound("event"))?;
    Ok(Json(row.into()))
}

/// Follow the organization's events live
///
/// Server-Sent Events: each new event matching the filters (the list's `filters[i]...`), written
/// through any replica, as `id: <event id>` and `data: <event JSON>`; a comment line every few
/// seconds keeps the connection open. Reconnecting with `Last-Event-ID` (browsers do) resumes
/// after that event without a gap; `since` catches up from a time first. The stream ends with an
/// `event: close` when the credential expires or is revoked, or the server restarts.
#[utoipa::path(get, path = "/api/events/stream", tag = "events",
    extensions(("x-required-role" = json!("Viewer"))),
    params(StreamParams),
    responses(
        (status = 200, description = "The stream; the schema describes each event", content_type = "text/event-stream", body = StreamEvent),
        (status = 400, description = "Bad filter, time or Last-Event-ID", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
    ))]
async fn stream_events(
    State(state): State<AppState>,
    auth: Require<Viewer>,
    headers: HeaderMap,
    params: QueryParams,
) -> ApiResult<impl IntoResponse> {
    for unsupported in ["until", "after"] {
        if params.get(unsupported).is_some() {
            return Err(ApiError::invalid_field(unsupported, "does not apply to a live stream"));
        }
    }
    let query = EventQuery::parse(&params)?;
    // Both are checked, though the header wins: a malformed one is a 400 either way.
    let from_header = headers.get(&LAST_EVENT_ID).map(|value| value.to_str().unwrap_or("\u{fffd}"));
    let from_header = event_id("Last-Event-ID", from_header)?;
    let from_query = event_id("lastEventId", params.get("lastEventId"))?;
    let last_event_id = from_header.or(from_query);
    // Subscribe first: whatever commits from here on is heard, whatever came before is in the table.
    let notices = state.events.subscribe();
    let start = match (last_event_id, query.since) {
        (Some(id), _) => {
            let mut conn = state.db.acquire().await?;
            let known = store::position_of(&mut conn, auth.organization_id, id).await?;
            // A pruned event still says when it was written (ids are UUIDv7).
            let position = known.or_else(|| {
                let (seconds, nanos) = id.get_timestamp()?.to_unix();
                let at = chrono::DateTime::from_timestamp(i64::try_from(seconds).ok()?, nanos)?;
                Some(Position { at, id })
            });
            Start::After(position.ok_or_else(|| ApiError::invalid_field("Last-Event-ID", "no such event"))?)
        }
        (None, Some(since)) => Start::After(Position { at: since, id: Uuid::nil() }),
        (None, None) => Start::Live,
    };
    let follower = Follower::open(state.db.clone(), &auth, state.revocations.clone(), query, notices, start).await?;
    let keep_alive = KeepAlive::new()
        .interval(Duration::from_secs(state.config.event_stream_keepalive_seconds.max(1)))
        .text("heartbeat");
    let mut response = Sse::new(follower.into_stream()).keep_alive(keep_alive).into_response();
    // Proxies must pass each event on at once.
    response.headers_mut().insert("x-accel-buffering", axum::http::HeaderValue::from_static("no"));
    Ok(response)
}
