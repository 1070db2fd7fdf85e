//! List queries, shared by every collection endpoint (DESIGN.md section 4):
//! `offset`, `limit`, `includeCount`, `orderBy`, `orderDirection` and Crosser's filters
//! `filters[i].propertyName / propertyValue / filterType`.
//!
//! Each endpoint declares a `ListSpec`: the properties a client may filter and sort on, each
//! bound to a fixed SQL expression. SQL is built only from those fragments; every value the
//! client sends is a bound parameter.

use std::collections::BTreeMap;

use axum::{extract::FromRequestParts, http::request::Parts};
use chrono::{DateTime, Datelike, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgConnection, Postgres, QueryBuilder, postgres::PgRow};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult, FieldError};

mod params;

pub(crate) use params::list_params;
pub use params::{filter_parameter, parameters, query_parameter};

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 1000;
/// Most values one `in` filter may list: each is a bound parameter, and with at most 100 filters
/// the total stays under PostgreSQL's 65535.
pub const MAX_IN_VALUES: usize = 500;

/// How a property's values are typed, which decides how a filter value is parsed and compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyType {
    Text,
    Uuid,
    Integer,
    Time,
    Boolean,
    /// Text with a fixed set of values (an enum such as a level): a value is matched
    /// case-insensitively and compared in its canonical spelling; anything else is a 400.
    Choice(&'static [&'static str]),
}

/// A property a client may filter or sort a list on.
#[derive(Debug)]
pub struct Property {
    /// The name as it appears in the returned items (matched case-insensitively).
    pub name: &'static str,
    /// The SQL expression it stands for; a fixed fragment, never client input.
    pub sql: &'static str,
    pub kind: PropertyType,
}

impl Property {
    pub const fn new(name: &'static str, sql: &'static str, kind: PropertyType) -> Self {
        Self { name, sql, kind }
    }
}

/// What an endpoint allows: its properties, its default order and its unique tie-breaker.
#[derive(Debug)]
pub struct ListSpec {
    pub properties: &'static [Property],
    /// The property used when no `orderBy` is given.
    pub default_order: &'static str,
    pub default_direction: Direction,
    /// A unique column appended to every ORDER BY, so pages never overlap or skip.
    pub tie_breaker: &'static str,
}

impl ListSpec {
    fn property(&self, name: &str) -> Option<&'static Property> {
        self.properties.iter().find(|p| p.name.eq_ignore_ascii_case(name))
    }

    fn property_names(&self) -> String {
        self.properties.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Asc,
    Desc,
}

impl Direction {
    fn sql(self) -> &'static str {
        match self {
            Self::Asc => "ASC",
            Self::Desc => "DESC",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterType {
    Equal,
    NotEqual,
    Contains,
    StartsWith,
    GreaterThan,
    GreaterOrEqual,
    LessThan,
    LessOrEqual,
    In,
}

const FILTER_TYPES: &str =
    "equal, notEqual, contains, startsWith, greaterThan, greaterOrEqual, lessThan, lessOrEqual, in";

impl FilterType {
    fn parse(text: &str) -> Option<Self> {
        Some(match text.to_ascii_lowercase().as_str() {
            "equal" | "equals" | "eq" => Self::Equal,
            "notequal" | "ne" => Self::NotEqual,
            "contains" => Self::Contains,
            "startswith" => Self::StartsWith,
            "greaterthan" | "gt" => Self::GreaterThan,
            "greaterorequal" | "gte" => Self::GreaterOrEqual,
            "lessthan" | "lt" => Self::LessThan,
            "lessorequal" | "lte" => Self::LessOrEqual,
            "in" => Self::In,
            _ => return None,
        })
    }

    fn comparison(self) -> &'static str {
        match self {
            Self::Equal => "=",
            Self::NotEqual => "IS DISTINCT FROM",
            Self::GreaterThan => ">",
            Self::GreaterOrEqual => ">=",
            Self::LessThan => "<",
            Self::LessOrEqual => "<=",
            Self::Contains | Self::StartsWith | Self::In => "",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Text(String),
    Uuid(Uuid),
    Integer(i64),
    Time(DateTime<Utc>),
    Boolean(bool),
}

impl Value {
    fn parse(kind: PropertyType, text: &str) -> Result<Self, String> {
        let text = text.trim();
        match kind {
            PropertyType::Text => Ok(Self::Text(text.to_owned())),
            PropertyType::Uuid => Uuid::parse_str(text).map(Self::Uuid).map_err(|_| "expected a UUID".into()),
            PropertyType::Integer => text.parse().map(Self::Integer).map_err(|_| "expected an integer".into()),
            PropertyType::Time => parse_time(text).map(Self::Time),
            PropertyType::Choice(choices) => choices
                .iter()
                .find(|c| c.eq_ignore_ascii_case(text))
                .map(|c| Self::Text((*c).to_owned()))
                .ok_or_else(|| format!("expected one of {}", choices.join(", "))),
            PropertyType::Boolean => match text.to_ascii_lowercase().as_str() {
                "true" => Ok(Self::Boolean(true)),
                "false" => Ok(Self::Boolean(false)),
                _ => Err("expected true or false".into()),
            },
        }
    }

    fn push_bind(self, query: &mut QueryBuilder<Postgres>) {
        match self {
            Self::Text(v) => query.push_bind(v),
            Self::Uuid(v) => query.push_bind(v),
            Self::Integer(v) => query.push_bind(v),
            Self::Time(v) => query.push_bind(v),
            Self::Boolean(v) => query.push_bind(v),
        };
    }
}

/// Parses a UTC ISO 8601 time; a time without a zone is taken as UTC (Crosser's examples omit it).
/// Years outside 1..=9999 are refused: PostgreSQL would reject some of them with an error.
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    parse_any_time(text)
        .filter(|time| (1..=9999).contains(&time.year()))
        .ok_or_else(|| "expected an ISO 8601 time such as 2024-01-18T15:00:00Z".to_owned())
}

fn parse_any_time(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Some(time.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"] {
        if let Ok(naive) = chrono::NaiveDateTime::parse_from_str(text, format) {
            return Some(naive.and_utc());
        }
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok().map(|date| date.and_time(chrono::NaiveTime::MIN).and_utc())
}

#[derive(Debug, Clone)]
struct Filter {
    property: &'static Property,
    filter_type: FilterType,
    /// One value, or several for `in`.
    values: Vec<Value>,
    /// The raw text, for `contains` / `startsWith` which compare as text whatever the type.
    text: String,
}

/// The raw query string as name/value pairs, before an endpoint's spec reads it.
#[derive(Debug, Default, Clone)]
pub struct QueryParams(pub Vec<(String, String)>);

impl QueryParams {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str::<Vec<(String, String)>>(query)
            .map(Self)
            .map_err(|err| ApiError::BadRequest(format!("invalid query string: {err}")))
    }
}

/// A validated list request for one endpoint.
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub offset: i64,
    pub limit: i64,
    pub include_count: bool,
    order_sql: &'static str,
    direction: Direction,
    tie_breaker: &'static str,
    filters: Vec<Filter>,
}

impl ListQuery {
    pub fn parse(params: &QueryParams, spec: &'static ListSpec) -> ApiResult<Self> {
        let mut problems = Vec::new();
        let offset = int_param(params, "offset", 0, 0, i64::MAX, &mut problems);
        let limit = int_param(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT, &mut problems);
        let include_count = match params.get("includeCount") {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("true") => true,
            Some(v) if v.eq_ignore_ascii_case("false") => false,
            Some(_) => {
                problems.push(FieldError::new("includeCount", "expected true or false"));
                false
            }
        };
        let order_property = match params.get("orderBy") {
            None => spec.property(spec.default_order),
            Some(name) => {
                let found = spec.property(name);
                if found.is_none() {
                    problems.push(FieldError::new(
                        "orderBy",
                        format!("unknown property '{name}'; one of: {}", spec.property_names()),
                    ));
                }
                found
            }
        };
        let direction = match params.get("orderDirection") {
            None => spec.default_direction,
            Some(v) if v.eq_ignore_ascii_case("asc") => Direction::Asc,
            Some(v) if v.eq_ignore_ascii_case("desc") => Direction::Desc,
            Some(_) => {
                problems.push(FieldError::new("orderDirection", "expected asc or desc"));
                spec.default_direction
            }
        };
        let filters = parse_filters(params, spec, &mut problems);
        if !problems.is_empty() {
            return Err(ApiError::validation(problems));
        }
        Ok(Self {
            offset,
            limit,
            include_count,
            order_sql: order_property.map_or(spec.tie_breaker, |p| p.sql),
            direction,
            tie_breaker: spec.tie_breaker,
            filters: filters.unwrap_or_default(),
        })
    }

    /// The SQL expression the list is ordered by (before the tie-breaker), and the direction.
    pub fn order(&self) -> (&'static str, Direction) {
        (self.order_sql, self.direction)
    }

    /// Appends ` AND <condition>` for every filter.
    pub fn push_filters(&self, query: &mut QueryBuilder<Postgres>) {
        for filter in &self.filters {
            let sql = filter.property.sql;
            query.push(" AND ");
            match filter.filter_type {
                FilterType::Contains => {
                    query.push(format_args!("({sql})::text ILIKE '%' || "));
                    query.push_bind(escape_like(&filter.text));
                    query.push(" || '%'");
                }
                FilterType::StartsWith => {
                    query.push(format_args!("({sql})::text ILIKE "));
                    query.push_bind(escape_like(&filter.text));
                    query.push(" || '%'");
                }
                FilterType::In => {
                    query.push(format_args!("({sql}) IN ("));
                    for (i, value) in filter.values.iter().enumerate() {
                        if i > 0 {
                            query.push(", ");
                        }
                        value.clone().push_bind(query);
                    }
                    query.push(")");
                }
                other => {
                    query.push(format_args!("({sql}) {} ", other.comparison()));
                    if let Some(value) = filter.values.first() {
                        value.clone().push_bind(query);
                    }
                }
            }
        }
    }

    /// Appends ORDER BY (with the tie-breaker), LIMIT and OFFSET.
    pub fn push_order_and_page(&self, query: &mut QueryBuilder<Postgres>) {
        let dir = self.direction.sql();
        query.push(format_args!(" ORDER BY {} {dir}, {} {dir}", self.order_sql, self.tie_breaker));
        query.push(" LIMIT ").push_bind(self.limit);
        query.push(" OFFSET ").push_bind(self.offset);
    }

    /// Runs the list: `SELECT <columns> <from_where><filters><order><page>`, and the count when
    /// asked. `from_where` pushes ` FROM ... WHERE <scope>` with the scope's values bound.
    pub async fn fetch<T>(
        &self,
        conn: &mut PgConnection,
        columns: &str,
        from_where: impl Fn(&mut QueryBuilder<Postgres>),
    ) -> ApiResult<(Vec<T>, Option<i64>)>
    where
        T: for<'r> FromRow<'r, PgRow> + Send + Unpin,
    {
        let mut query = QueryBuilder::new(format!("SELECT {columns}"));
        from_where(&mut query);
        self.push_filters(&mut query);
        self.push_order_and_page(&mut query);
        let rows = query.build_query_as::<T>().fetch_all(&mut *conn).await?;
        let total = if self.include_count {
            let mut count = QueryBuilder::new("SELECT count(*)");
            from_where(&mut count);
            self.push_filters(&mut count);
            Some(count.build_query_scalar::<i64>().fetch_one(&mut *conn).await?)
        } else {
            None
        };
        Ok((rows, total))
    }

    pub fn page<T>(&self, items: Vec<T>, total_count: Option<i64>) -> Page<T> {
        Page { items, offset: self.offset, limit: self.limit, total_count }
    }
}

fn int_param(
    params: &QueryParams,
    name: &str,
    default: i64,
    min: i64,
    max: i64,
    problems: &mut Vec<FieldError>,
) -> i64 {
    match params.get(name).map(|v| v.trim().parse::<i64>()) {
        None => default,
        Some(Ok(v)) if (min..=max).contains(&v) => v,
        Some(_) => {
            let range = if max == i64::MAX { format!("at least {min}") } else { format!("from {min} to {max}") };
            problems.push(FieldError::new(name, format!("expected a whole number {range}")));
            default
        }
    }
}

fn parse_filters(params: &QueryParams, spec: &ListSpec, problems: &mut Vec<FieldError>) -> Option<Vec<Filter>> {
    // Group `filters[i].field=value` by i, in index order.
    let mut raw: BTreeMap<u32, BTreeMap<String, String>> = BTreeMap::new();
    for (key, value) in &params.0 {
        let Some(rest) = key.strip_prefix("filters[") else { continue };
        // Crosser's `filters[0].propertyName`, or OpenAPI's deepObject `filters[0][propertyName]`.
        let split = rest.split_once("].").or_else(|| rest.strip_suffix(']').and_then(|r| r.split_once("][")));
        let parsed = split.and_then(|(index, field)| {
            Some((index.parse::<u32>().ok().filter(|i| *i < 100)?, field.to_ascii_lowercase()))
        });
        match parsed {
            Some((index, field)) => {
                raw.entry(index).or_default().insert(field, value.clone());
            }
            None => problems
                .push(FieldError::new(key.clone(), "expected filters[N].propertyName, .propertyValue or .filterType")),
        }
    }
    let mut filters = Vec::new();
    for (index, fields) in raw {
        let at = |field: &str| format!("filters[{index}].{field}");
        for name in fields.keys() {
            if !["propertyname", "propertyvalue", "filtertype"].contains(&name.as_str()) {
                problems.push(FieldError::new(at(name), "unknown filter field"));
            }
        }
        let Some(name) = fields.get("propertyname") else {
            problems.push(FieldError::new(at("propertyName"), "required"));
            continue;
        };
        let Some(property) = spec.property(name) else {
            problems.push(FieldError::new(
                at("propertyName"),
                format!("unknown property '{name}'; one of: {}", spec.property_names()),
            ));
            continue;
        };
        let type_text = fields.get("filtertype").map_or("equal", String::as_str);
        let Some(filter_type) = FilterType::parse(type_text) else {
            problems.push(FieldError::new(
                at("filterType"),
                format!("unknown filter type '{type_text}'; one of: {FILTER_TYPES}"),
            ));
            continue;
        };
        let Some(text) = fields.get("propertyvalue").cloned() else {
            problems.push(FieldError::new(at("propertyValue"), "required"));
            continue;
        };
        if text.contains('\0') {
            problems.push(FieldError::new(at("propertyValue"), "must not contain NUL characters"));
            continue;
        }
        let ordered = matches!(
            filter_type,
            FilterType::GreaterThan | FilterType::GreaterOrEqual | FilterType::LessThan | FilterType::LessOrEqual
        );
        if ordered && matches!(property.kind, PropertyType::Boolean | PropertyType::Uuid | PropertyType::Choice(_)) {
            problems
                .push(FieldError::new(at("filterType"), format!("'{type_text}' does not apply to {}", property.name)));
            continue;
        }
        let pieces: Vec<&str> = match filter_type {
            FilterType::In if text.split(',').count() > MAX_IN_VALUES => {
                problems.push(FieldError::new(at("propertyValue"), format!("at most {MAX_IN_VALUES} values for 'in'")));
                continue;
            }
            FilterType::In => text.split(',').collect(),
            FilterType::Contains | FilterType::StartsWith => Vec::new(),
            _ => vec![text.as_str()],
        };
        let mut values = Vec::new();
        for piece in pieces {
            match Value::parse(property.kind, piece) {
                Ok(value) => values.push(value),
                Err(message) => {
                    problems.push(FieldError::new(at("propertyValue"), format!("{message} for {}", property.name)));
                    break;
                }
            }
        }
        filters.push(Filter { property, filter_type, values, text });
    }
    Some(filters)
}

fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// One page of a list.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub items: Vec<T>,
    pub offset: i64,
    pub limit: i64,
    /// Items matching the filters, with `includeCount=true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_count: Option<i64>,
}

impl<T> Page<T> {
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            offset: self.offset,
            limit: self.limit,
            total_count: self.total_count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) static SPEC: ListSpec = ListSpec {
        properties: &[
            Property::new("name", "t.name", PropertyType::Text),
            Property::new("createdAt", "t.created_at", PropertyType::Time),
            Property::new("id", "t.id", PropertyType::Uuid),
            Property::new("level", "t.level", PropertyType::Choice(&["Info", "Warning", "Error"])),
        ],
        default_order: "name",
        default_direction: Direction::Asc,
        tie_breaker: "t.id",
    };

    fn params(query: &str) -> QueryParams {
        QueryParams(serde_urlencoded::from_str(query).unwrap())
    }

    fn sql(query: &str) -> String {
        let list = ListQuery::parse(&params(query), &SPEC).unwrap();
        let mut builder = QueryBuilder::<Postgres>::new("SELECT 1 FROM t WHERE true");
        list.push_filters(&mut builder);
        list.push_order_and_page(&mut builder);
        builder.sql().as_str().to_owned()
    }

    #[test]
    fn values_are_bound_never_interpolated() {
        let text = sql(
            "filters[0].propertyName=NAME&filters[0].propertyValue=x'%3B drop table t&filters[0].filterType=contains",
        );
        assert!(!text.contains("drop"), "{text}");
        assert!(text.contains("(t.name)::text ILIKE '%' || $1 || '%'"), "{text}");
        assert!(text.ends_with("ORDER BY t.name ASC, t.id ASC LIMIT $2 OFFSET $3"), "{text}");
    }

    #[test]
    fn in_binds_each_value() {
        let text = sql(
            "filters[0].propertyName=name&filters[0].propertyValue=a,b,c&filters[0].filterType=in&orderBy=createdAt&orderDirection=desc",
        );
        assert!(text.contains("(t.name) IN ($1, $2, $3)"), "{text}");
        assert!(text.contains("ORDER BY t.created_at DESC, t.id DESC"), "{text}");
    }

    #[test]
    fn unknown_property_filter_type_and_bad_values_are_named() {
        for (query, field) in [
            ("filters[0].propertyName=nope&filters[0].propertyValue=1", "filters[0].propertyName"),
            (
                "filters[0].propertyName=name&filters[0].propertyValue=1&filters[0].filterType=like",
                "filters[0].filterType",
            ),
            (
                "filters[0].propertyName=createdAt&filters[0].propertyValue=yesterday&filters[0].filterType=greaterThan",
                "filters[0].propertyValue",
            ),
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("offset=-1", "offset"),
            ("orderBy=password", "orderBy"),
        ] {
            let Err(ApiError::Validation { details, .. }) = ListQuery::parse(&params(query), &SPEC) else {
                panic!("{query} was accepted");
            };
            assert_eq!(details[0].field, field, "{query}");
        }
    }

    #[test]
    fn choices_match_case_insensitively_and_refuse_the_rest() {
        let list = ListQuery::parse(
            &params("filters[0].propertyName=level&filters[0].propertyValue=error,WARNING&filters[0].filterType=in"),
            &SPEC,
        )
        .unwrap();
        assert_eq!(list.filters[0].values, vec![Value::Text("Error".into()), Value::Text("Warning".into())]);
        for query in [
            "filters[0].propertyName=level&filters[0].propertyValue=Critical",
            "filters[0].propertyName=level&filters[0].propertyValue=Info&filters[0].filterType=greaterThan",
            "filters[0].propertyName=name&filters[0].propertyValue=a%00b",
            "filters[0].propertyName=createdAt&filters[0].propertyValue=-20000-01-01T00:00:00&filters[0].filterType=lessThan",
        ] {
            let Err(ApiError::Validation { details, .. }) = ListQuery::parse(&params(query), &SPEC) else {
                panic!("{query} was accepted");
            };
            assert!(details[0].field.starts_with("filters[0]."), "{query}: {details:?}");
        }
    }

    #[test]
    fn deep_object_filters_read_as_crosser_ones_and_need_a_value() {
        let flat = ListQuery::parse(&params("filters[0].propertyName=name&filters[0].propertyValue=a"), &SPEC).unwrap();
        let deep =
            ListQuery::parse(&params("filters[0][propertyName]=name&filters[0][propertyValue]=a"), &SPEC).unwrap();
        assert_eq!(format!("{:?}", flat.filters), format!("{:?}", deep.filters));
        let Err(ApiError::Validation { details, .. }) =
            ListQuery::parse(&params("filters[0].propertyName=name"), &SPEC)
        else {
            panic!("a filter without a value was accepted");
        };
        assert_eq!(details[0].field, "filters[0].propertyValue");
    }

    #[test]
    fn like_wildcards_in_values_are_literal() {
        assert_eq!(escape_like(r"50%_a\b"), r"50\%\_a\\b");
    }

    #[test]
    fn times_without_zone_are_utc() {
        assert_eq!(parse_time("2024-01-18T15:00:00").unwrap().to_rfc3339(), "2024-01-18T15:00:00+00:00");
        assert!(parse_time("2024-01-18T15:00:00+02:00").is_ok());
        assert!(parse_time("soon").is_err());
        assert!(parse_time("+20000-01-01T00:00:00").is_err());
    }
}
