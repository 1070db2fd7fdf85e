//! What a request for events asks for: the shared list conventions (filters, order, paging,
//! count), plus `since`/`until` and the keyset cursor `after`. Shared by the list, the exports and
//! the live stream, so all three select the same events for the same parameters.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Datelike, Utc};
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use super::model::{LEVELS, SOURCES};
use crate::{
    error::{ApiError, ApiResult, FieldError},
    http::list::{Direction, ListQuery, ListSpec, Property, PropertyType, QueryParams, parse_time},
};

/// The properties of an event a client may filter and sort on (names as in the items).
pub static EVENT_LIST: ListSpec = ListSpec {
    properties: &[
        Property::new("id", "e.id", PropertyType::Uuid),
        Property::new("timestamp", "e.occurred_at", PropertyType::Time),
        Property::new("level", "e.level", PropertyType::Choice(LEVELS)),
        Property::new("source", "e.source", PropertyType::Choice(SOURCES)),
        Property::new("action", "e.action", PropertyType::Text),
        Property::new("subject", "e.subject", PropertyType::Text),
        Property::new("message", "e.message", PropertyType::Text),
        Property::new("nodeId", "e.node_id", PropertyType::Uuid),
        Property::new("flowDefinitionId", "e.flow_definition_id", PropertyType::Uuid),
        Property::new("deploymentId", "e.deployment_id", PropertyType::Uuid),
        Property::new("userId", "e.user_id", PropertyType::Uuid),
        Property::new("apiKeyId", "e.api_key_id", PropertyType::Uuid),
        Property::new("clientIp", "e.client_ip", PropertyType::Text),
    ],
    default_order: "timestamp",
    default_direction: Direction::Desc,
    tie_breaker: "e.id",
};

/// A place in the default order (newest first): the time and id of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub at: DateTime<Utc>,
    pub id: Uuid,
}

impl Position {
    /// The opaque cursor for `after`.
    pub fn cursor(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.at.timestamp_micros(), self.id.simple()))
    }

    pub fn from_cursor(cursor: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(cursor.trim()).ok()?;
        let text = std::str::from_utf8(&bytes).ok()?;
        let (micros, id) = text.split_once(':')?;
        // Only times PostgreSQL can hold (a forged cursor must be a 400, not a database error).
        let at = DateTime::from_timestamp_micros(micros.parse().ok()?).filter(|at| (1..=9999).contains(&at.year()))?;
        Some(Self { at, id: Uuid::try_parse(id).ok()? })
    }
}

/// A validated request for events.
#[derive(Debug, Clone)]
pub struct EventQuery {
    pub list: ListQuery,
    /// Events at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Events before this time.
    pub until: Option<DateTime<Utc>>,
    /// Continue after this event (keyset paging).
    pub after: Option<Position>,
    /// Whether `limit` was given rather than defaulted: an export without one has no limit.
    pub explicit_limit: bool,
}

impl EventQuery {
    pub fn parse(params: &QueryParams) -> ApiResult<Self> {
        let mut problems = Vec::new();
        let since = time_param(params, "since", &mut problems);
        let until = time_param(params, "until", &mut problems);
        if let (Some(since), Some(until)) = (since, until)
            && since >= until
        {
            problems.push(FieldError::new("until", "must be later than since"));
        }
        let after = params.get("after").and_then(|text| {
            let position = Position::from_cursor(text);
            if position.is_none() {
                problems.push(FieldError::new("after", "not a cursor from nextCursor"));
            }
            position
        });
        let list = match ListQuery::parse(params, &EVENT_LIST) {
            Ok(list) => Some(list),
            Err(ApiError::Validation { details, .. }) => {
                problems.extend(details);
                None
            }
            Err(other) => return Err(other),
        };
        if let Some(list) = &list
            && after.is_some()
        {
            if !is_keyset_order(list) {
                problems.push(FieldError::new(
                    "after",
                    "a cursor follows the default order (timestamp, newest first); drop orderBy/orderDirection or page with offset",
                ));
            }
            if list.offset != 0 {
                problems.push(FieldError::new("offset", "page with either offset or after, not both"));
            }
        }
        match list {
            Some(list) if problems.is_empty() => {
                Ok(Self { list, since, until, after, explicit_limit: params.get("limit").is_some() })
            }
            _ => Err(ApiError::validation(problems)),
        }
    }

    /// Whether the list is in the default order, where `nextCursor` and `after` apply.
    pub fn keyset(&self) -> bool {
        is_keyset_order(&self.list)
    }

    /// Pushes ` FROM events e WHERE <organization> <since/until> <filters> <after>`, every value
    /// bound.
    pub fn push_from_where(&self, query: &mut QueryBuilder<Postgres>, organization_id: Uuid) {
        self.push_scope(query, organization_id);
        if let Some(after) = self.after {
            query.push(" AND (e.occurred_at, e.id) < (").push_bind(after.at).push(", ").push_bind(after.id).push(")");
        }
    }

    /// The same without the cursor: what `totalCount` counts, and what the stream follows.
    pub fn push_scope(&self, query: &mut QueryBuilder<Postgres>, organization_id: Uuid) {
        query.push(" FROM events e WHERE e.organization_id = ").push_bind(organization_id);
        if let Some(since) = self.since {
            query.push(" AND e.occurred_at >= ").push_bind(since);
        }
        if let Some(until) = self.until {
            query.push(" AND e.occurred_at < ").push_bind(until);
        }
        self.list.push_filters(query);
    }
}

fn is_keyset_order(list: &ListQuery) -> bool {
    list.order() == ("e.occurred_at", Direction::Desc)
}

fn time_param(params: &QueryParams, name: &str, problems: &mut Vec<FieldError>) -> Option<DateTime<Utc>> {
    let text = params.get(name)?;
    match parse_time(text.trim()) {
        Ok(time) => Some(time),
        Err(message) => {
            problems.push(FieldError::new(name, message));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &str) -> ApiResult<EventQuery> {
        EventQuery::parse(&QueryParams(serde_urlencoded::from_str(query).unwrap()))
    }

    fn problems(query: &str) -> Vec<String> {
        match parse(query) {
            Err(ApiError::Validation { details, .. }) => details.into_iter().map(|d| d.field).collect(),
            other => panic!("{query}: {other:?}"),
        }
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let position = Position { at: parse_time("2020-09-29T12:57:10.481896Z").unwrap(), id: Uuid::now_v7() };
        assert_eq!(Position::from_cursor(&position.cursor()), Some(position));
        let forged = URL_SAFE_NO_PAD.encode(format!("-6000000000000000000:{}", Uuid::now_v7().simple()));
        for garbage in ["", "x", "bm90IGEgY3Vyc29y", "' OR 1=1 --", forged.as_str()] {
            assert_eq!(Position::from_cursor(garbage), None, "{garbage}");
        }
    }

    #[test]
    fn crossers_examples_parse() {
        let query =
            parse("filters[0].propertyName=Subject&filters[0].propertyValue=Node:%20Production5&filters[0].filterType=contains")
                .unwrap();
        assert!(query.keyset());
        let query =
            parse("filters[0].propertyName=level&filters[0].propertyValue=Error&since=2024-01-18T15:00:00").unwrap();
        assert_eq!(query.since.unwrap().to_rfc3339(), "2024-01-18T15:00:00+00:00");
    }

    #[test]
    fn bad_times_cursors_and_cursor_with_another_order_are_refused() {
        assert_eq!(problems("since=yesterday"), ["since"]);
        assert_eq!(problems("since=2024-01-02&until=2024-01-01"), ["until"]);
        assert_eq!(problems("after=nope"), ["after"]);
        let cursor = Position { at: Utc::now(), id: Uuid::now_v7() }.cursor();
        assert_eq!(problems(&format!("after={cursor}&orderBy=subject")), ["after"]);
        assert_eq!(problems(&format!("after={cursor}&orderDirection=asc")), ["after"]);
        assert_eq!(problems(&format!("after={cursor}&offset=5")), ["offset"]);
        assert!(parse(&format!("after={cursor}&orderBy=Timestamp&orderDirection=desc")).is_ok());
        assert_eq!(problems("since=nope&filters[0].propertyName=password"), ["since", "filters[0].propertyName"]);
    }
}
