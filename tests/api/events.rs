//! `/api/events`: Crosser's filter examples verbatim, every filter type, bad input (400, never
//! 500), counts, keyset paging while events arrive, exports that match the list, the live stream
//! across replicas with resume, tenant isolation, audit fields and retention.

use std::{collections::HashSet, time::Duration};

use chrono::{DateTime, TimeDelta, Utc};
use futures_util::StreamExt;
use reqwest::{StatusCode, header};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::helpers::*;

/// A test event to insert directly.
struct Seed<'a> {
    at: DateTime<Utc>,
    level: &'a str,
    subject: &'a str,
    message: &'a str,
    action: &'a str,
    node_id: Option<Uuid>,
    data: Option<Value>,
}

impl<'a> Seed<'a> {
    fn new(at: DateTime<Utc>, level: &'a str, subject: &'a str, message: &'a str) -> Self {
        Self { at, level, subject, message, action: "test.seed", node_id: None, data: None }
    }
}

fn time(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

/// A UUIDv7 of the given time, as the server makes them.
fn v7_at(at: DateTime<Utc>) -> Uuid {
    let millis = at.timestamp_millis() as u64;
    Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, millis / 1000, (millis % 1000 * 1_000_000) as u32))
}

async fn insert(conn: &mut PgConnection, organization_id: Uuid, seed: &Seed<'_>) -> Uuid {
    let id = v7_at(seed.at);
    sqlx::query(
        "INSERT INTO events (id, organization_id, occurred_at, level, source, action, subject, message, node_id, data) \
         VALUES ($1, $2, $3, $4, 'ControlCenter', $5, $6, $7, $8, $9)",
    )
    .bind(id)
    .bind(organization_id)
    .bind(seed.at)
    .bind(seed.level)
    .bind(seed.action)
    .bind(seed.subject)
    .bind(seed.message)
    .bind(seed.node_id)
    .bind(&seed.data)
    .execute(conn)
    .await
    .expect("insert event");
    id
}

/// `count` events of `action` at now minus 1..count seconds (some share a time), newest last.
async fn insert_many(app: &TestApp, organization_id: Uuid, action: &str, count: i64) {
    sqlx::query(
        "INSERT INTO events (id, organization_id, occurred_at, level, source, action, subject, message) \
         SELECT gen_random_uuid(), $1, now() - make_interval(secs => (i / 3)::int + 1), 'Info', 'Node', $2, \
                'Node: Bulk' || (i % 7), 'bulk event ' || i \
         FROM generate_series(1, $3) AS i",
    )
    .bind(organization_id)
    .bind(action)
    .bind(count)
    .execute(&mut app.db().await)
    .await
    .expect("bulk insert");
}

async fn get(app: &TestApp, session: &Session, query: &str) -> (StatusCode, Value) {
    body(app.get(&format!("/api/events?{query}"), session).send().await.expect("list events")).await
}

#[track_caller]
fn items(page: &Value) -> &Vec<Value> {
    page["items"].as_array().unwrap_or_else(|| panic!("no items in {page}"))
}

fn field<'a>(page: &'a Value, name: &str) -> Vec<&'a str> {
    items(page).iter().map(|item| item[name].as_str().unwrap_or_default()).collect()
}

/// A query that also keeps only the events of `action` (filter index 9, after the test's own).
fn scoped(action: &str, query: &str) -> String {
    let scope = format!("filters[9].propertyName=action&filters[9].propertyValue={action}&filters[9].filterType=equal");
    if query.is_empty() { scope } else { format!("{query}&{scope}") }
}

#[tokio::test]
async fn crossers_examples_work_verbatim() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    for name in ["Production5", "Production6"] {
        let response = app
            .post("/api/edgenodes", &owner)
            .json(&json!({"name": name, "organizationId": owner.organization_id, "type": "Production"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let mut conn = app.db().await;
    let org = owner.organization_id;
    insert(&mut conn, org, &Seed::new(time("2024-01-18T14:59:59Z"), "Error", "Node: Production5", "too early")).await;
    let late =
        insert(&mut conn, org, &Seed::new(time("2024-01-18T15:00:01Z"), "Error", "Node: Production5", "disk full"))
            .await;
    insert(&mut conn, org, &Seed::new(time("2024-01-18T15:00:02Z"), "Warning", "Node: Production6", "warm")).await;

    // "get all events belonging to the node Production5", as the Crosser docs write it.
    let (status, page) = get(
        &app,
        &owner,
        "filters[0].propertyName=Subject&filters[0].propertyValue=Node:%20Production5&filters[0].filterType=contains",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let subjects = field(&page, "subject");
    assert!(subjects.len() >= 3, "node.create plus two seeded: {page}");
    assert!(subjects.iter().all(|s| *s == "Node: Production5"), "{page}");

    // "all Error events since 2024-01-18T15:00:00", as a filter pair and with `since`.
    for query in [
        "filters[0].propertyName=Level&filters[0].propertyValue=Error&filters[0].filterType=equal\
         &filters[1].propertyName=Timestamp&filters[1].propertyValue=2024-01-18T15:00:00&filters[1].filterType=greaterThan",
        "filters[0].propertyName=Level&filters[0].propertyValue=Error&filters[0].filterType=equal&since=2024-01-18T15:00:00",
    ] {
        let (status, page) = get(&app, &owner, query).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(field(&page, "id"), [late.to_string()], "{query}: {page}");
        assert_eq!(items(&page)[0]["timestamp"], "2024-01-18T15:00:01.000000Z");
        assert_eq!(items(&page)[0]["level"], "Error");
    }
}

#[tokio::test]
async fn every_filter_type() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let mut conn = app.db().await;
    let org = owner.organization_id;
    let node = Uuid::now_v7();
    let seeds = [
        Seed {
            node_id: Some(node),
            ..Seed::new(time("2024-03-01T10:00:00.000001Z"), "Info", "Node: Production5", "started")
        },
        Seed::new(time("2024-03-01T10:00:01.000001Z"), "Warning", "Node: Production50", "cpu at 95%"),
        Seed::new(time("2024-03-01T10:00:02.000001Z"), "Error", "Flow: Temperature", "sensor_1 failed"),
        Seed::new(time("2024-03-01T10:00:03.000001Z"), "Info", "User: demo@example.com", "signed in"),
        Seed::new(time("2024-03-01T10:00:04.000001Z"), "Error", "Node: production6", "cpu at 95 degrees"),
    ];
    let mut ids = Vec::new();
    for seed in &seeds {
        ids.push(insert(&mut conn, org, seed).await.to_string());
    }
    let t2 = "2024-03-01T10:00:02.000001Z";
    let cases: Vec<(String, Vec<usize>)> = vec![
        ("filters[0].propertyName=level&filters[0].propertyValue=Error&filters[0].filterType=equal".into(), vec![4, 2]),
        ("filters[0].propertyName=LEVEL&filters[0].propertyValue=error".into(), vec![4, 2]),
        (
            "filters[0].propertyName=level&filters[0].propertyValue=Info&filters[0].filterType=notEqual".into(),
            vec![4, 2, 1],
        ),
        (
            "filters[0].propertyName=subject&filters[0].propertyValue=production5&filters[0].filterType=contains"
                .into(),
            vec![1, 0],
        ),
        (
            "filters[0].propertyName=subject&filters[0].propertyValue=Node:&filters[0].filterType=startsWith".into(),
            vec![4, 1, 0],
        ),
        (
            format!(
                "filters[0].propertyName=timestamp&filters[0].propertyValue={t2}&filters[0].filterType=greaterThan"
            ),
            vec![4, 3],
        ),
        (
            format!(
                "filters[0].propertyName=timestamp&filters[0].propertyValue={t2}&filters[0].filterType=greaterOrEqual"
            ),
            vec![4, 3, 2],
        ),
        (
            format!("filters[0].propertyName=timestamp&filters[0].propertyValue={t2}&filters[0].filterType=lessThan"),
            vec![1, 0],
        ),
        (
            format!(
                "filters[0].propertyName=timestamp&filters[0].propertyValue={t2}&filters[0].filterType=lessOrEqual"
            ),
            vec![2, 1, 0],
        ),
        (
            "filters[0].propertyName=level&filters[0].propertyValue=Warning,Error&filters[0].filterType=in".into(),
            vec![4, 2, 1],
        ),
        (format!("filters[0].propertyName=nodeId&filters[0].propertyValue={node}"), vec![0]),
        (
            format!(
                "filters[0].propertyName=id&filters[0].propertyValue={},{}&filters[0].filterType=in",
                ids[1], ids[3]
            ),
            vec![3, 1],
        ),
        // LIKE wildcards are literal.
        (
            "filters[0].propertyName=message&filters[0].propertyValue=95%25&filters[0].filterType=contains".into(),
            vec![1],
        ),
        (
            "filters[0].propertyName=message&filters[0].propertyValue=sensor_&filters[0].filterType=startsWith".into(),
            vec![2],
        ),
        // Filters AND together; since/until bound the time.
        (
            "filters[0].propertyName=level&filters[0].propertyValue=Error&filters[1].propertyName=subject\
             &filters[1].propertyValue=Node&filters[1].filterType=contains"
                .into(),
            vec![4],
        ),
        ("since=2024-03-01T10:00:01.000001Z&until=2024-03-01T10:00:03.000001Z".into(), vec![2, 1]),
        ("orderBy=timestamp&orderDirection=asc&limit=2".into(), vec![0, 1]),
        ("orderBy=subject&orderDirection=asc".into(), vec![2, 0, 1, 4, 3]),
    ];
    for (query, expected) in cases {
        let (status, page) = get(&app, &owner, &scoped("test.seed", &query)).await;
        assert_eq!(status, StatusCode::OK, "{query}: {page}");
        let expected: Vec<&str> = expected.iter().map(|i| ids[*i].as_str()).collect();
        assert_eq!(field(&page, "id"), expected, "{query}");
    }
}

#[tokio::test]
async fn bad_filter_input_is_400_never_500() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let cursor = {
        let (_, page) = get(&app, &owner, "limit=1").await;
        page["nextCursor"].as_str().map(str::to_owned)
    };
    let many = vec!["Info"; 600].join(",");
    let mut cases = vec![
        "filters[0].propertyName=password&filters[0].propertyValue=x".to_owned(),
        "filters[0].propertyName=subject;DROP TABLE events&filters[0].propertyValue=x".to_owned(),
        "filters[0].propertyName=subject&filters[0].propertyValue=x&filters[0].filterType=like".to_owned(),
        "filters[0].propertyName=subject&filters[0].propertyValue=x&filters[0].filterType=1;DELETE FROM events"
            .to_owned(),
        "filters[0].propertyName=nodeId&filters[0].propertyValue=' OR 1=1 --".to_owned(),
        "filters[0].propertyName=level&filters[0].propertyValue=Error' OR '1'='1".to_owned(),
        "filters[0].propertyName=level&filters[0].propertyValue=Critical".to_owned(),
        "filters[0].propertyName=level&filters[0].propertyValue=Info&filters[0].filterType=greaterThan".to_owned(),
        "filters[0].propertyName=timestamp&filters[0].propertyValue=yesterday&filters[0].filterType=greaterThan"
            .to_owned(),
        "filters[0].propertyName=timestamp&filters[0].propertyValue=2024-13-45T99:00:00&filters[0].filterType=lessThan"
            .to_owned(),
        "filters[0].propertyName=timestamp&filters[0].propertyValue=%2B275000-01-01T00:00:00Z".to_owned(),
        "filters[0].propertyName=subject&filters[0].propertyValue=a%00b&filters[0].filterType=contains".to_owned(),
        format!("filters[0].propertyName=level&filters[0].propertyValue={many}&filters[0].filterType=in"),
        "filters[0].propertyValue=x".to_owned(),
        "filters[x].propertyName=subject".to_owned(),
        "since=2024-01-18 15:00 UTC".to_owned(),
        "until=tomorrow".to_owned(),
        "since=2024-02-01&until=2024-01-01".to_owned(),
        "after=not-a-cursor".to_owned(),
        "after=JyBPUiAxPTEgLS0".to_owned(),
        "orderBy=occurred_at; DROP TABLE events".to_owned(),
        "orderDirection=sideways".to_owned(),
        "limit=abc".to_owned(),
        "limit=100000".to_owned(),
        "offset=-1".to_owned(),
        "includeCount=maybe".to_owned(),
    ];
    // A forged cursor with a time PostgreSQL cannot hold.
    {
        use base64::Engine;
        let forged = format!("-6000000000000000000:{}", Uuid::now_v7().simple());
        cases.push(format!("after={}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged)));
    }
    if let Some(cursor) = cursor {
        cases.push(format!("after={cursor}&orderBy=subject"));
        cases.push(format!("after={cursor}&offset=10"));
    }
    for query in &cases {
        for accept in ["application/json", "text/csv"] {
            let response =
                app.get(&format!("/api/events?{query}"), &owner).header(header::ACCEPT, accept).send().await.unwrap();
            let (status, value) = body(response).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{query} ({accept}): {value}");
            assert!(
                ["VALIDATION_FAILED", "BAD_REQUEST"].contains(&value["code"].as_str().unwrap_or_default()),
                "{value}"
            );
            assert!(value["requestId"].is_string(), "{value}");
        }
        let (status, value) = body(app.get(&format!("/api/events/stream?{query}"), &owner).send().await.unwrap()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "stream {query}: {value}");
    }
    // A bad field is named.
    let (_, value) = get(&app, &owner, "filters[0].propertyName=password&filters[0].propertyValue=x").await;
    assert_eq!(value["details"][0]["field"], "filters[0].propertyName", "{value}");
    assert!(value["details"][0]["message"].as_str().unwrap().contains("subject"), "{value}");
    let (status, value) = body(app.get("/api/events/not-an-id", &owner).send().await.unwrap()).await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "BAD_REQUEST");
    let (status, value) = body(
        app.get("/api/events/stream", &owner).header("Last-Event-ID", "1; DROP TABLE events").send().await.unwrap(),
    )
    .await;
    assert_error(status, &value, StatusCode::BAD_REQUEST, "VALIDATION_FAILED");

    // SQL in a text value is only text: no match, and the table is intact.
    let (status, page) =
        get(&app, &owner, "filters[0].propertyName=subject&filters[0].propertyValue='; DROP TABLE events; --&filters[0].filterType=contains").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(items(&page).is_empty(), "{page}");
    let (status, page) = get(&app, &owner, "").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(!items(&page).is_empty());
}

#[tokio::test]
async fn include_count_counts_every_match() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    insert_many(&app, owner.organization_id, "test.count", 130).await;
    let (status, page) = get(&app, &owner, &scoped("test.count", "includeCount=true&limit=10")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["totalCount"], 130);
    assert_eq!(items(&page).len(), 10);
    assert_eq!(page["limit"], 10);
    let (_, page) = get(
        &app,
        &owner,
        &scoped("test.count", "includeCount=true&filters[0].propertyName=subject&filters[0].propertyValue=Node: Bulk3"),
    )
    .await;
    assert_eq!(page["totalCount"], (1..=130).filter(|i| i % 7 == 3).count());
    let (_, page) = get(&app, &owner, &scoped("test.count", "limit=10")).await;
    assert!(page.get("totalCount").is_none(), "{page}");
}

#[tokio::test]
async fn cursor_paging_misses_and_repeats_nothing_while_events_arrive() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let org = owner.organization_id;
    insert_many(&app, org, "test.page", 160).await;
    // Several events at one instant: the id breaks the tie.
    let mut conn = app.db().await;
    let instant = Utc::now() - TimeDelta::seconds(30);
    for i in 0..12 {
        let message = format!("tied {i}");
        insert(&mut conn, org, &Seed { action: "test.page", ..Seed::new(instant, "Info", "Node: Tied", &message) })
            .await;
    }
    let before: Vec<String> = sqlx::query_scalar(
        "SELECT id::text FROM events WHERE organization_id = $1 AND action = 'test.page' ORDER BY occurred_at DESC, id DESC",
    )
    .bind(org)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(before.len(), 172);

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = match &cursor {
            Some(cursor) => format!("limit=25&after={cursor}"),
            None => "limit=25".to_owned(),
        };
        let (status, page) = get(&app, &owner, &scoped("test.page", &query)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(field(&page, "id").into_iter().map(str::to_owned));
        pages += 1;
        // New events arrive between pages: a few "late" ones (their time a second or two back)
        // and a new one.
        insert_many(&app, org, "test.page", 5).await;
        let message = format!("arrived during page {pages}");
        insert(&mut conn, org, &Seed { action: "test.page", ..Seed::new(Utc::now(), "Info", "Node: New", &message) })
            .await;
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(pages < 50, "paging does not end");
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "an event was repeated");
    for id in &before {
        assert!(unique.contains(id), "event {id} was missed");
    }
    assert_eq!(&seen[..before.len().min(25)], &before[..before.len().min(25)]);

    // Offset and cursor give the same pages when nothing changes.
    let (_, first) = get(
        &app,
        &owner,
        &scoped("test.page", "limit=10&filters[0].propertyName=subject&filters[0].propertyValue=Node: Tied"),
    )
    .await;
    let cursor = first["nextCursor"].as_str().unwrap().to_owned();
    let (_, by_cursor) = get(
        &app,
        &owner,
        &scoped(
            "test.page",
            &format!("limit=10&after={cursor}&filters[0].propertyName=subject&filters[0].propertyValue=Node: Tied"),
        ),
    )
    .await;
    let (_, by_offset) = get(
        &app,
        &owner,
        &scoped("test.page", "limit=10&offset=10&filters[0].propertyName=subject&filters[0].propertyValue=Node: Tied"),
    )
    .await;
    assert_eq!(field(&by_cursor, "id"), field(&by_offset, "id"));
    assert_eq!(items(&by_cursor).len(), 2);
    assert!(by_cursor["nextCursor"].is_null(), "{by_cursor}");
    // Another order has no cursor.
    let (_, page) = get(&app, &owner, &scoped("test.page", "limit=10&orderBy=subject")).await;
    assert!(page["nextCursor"].is_null(), "{page}");
}

/// Parses CSV (RFC 4180) into records.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => field.push(c),
        }
    }
    records
}

/// What the CSV holds for a JSON value.
fn csv_text(value: &Value) -> String {
    let text = match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{text}") } else { text }
}

#[tokio::test]
async fn exports_stream_every_row_and_match_the_list() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let org = owner.organization_id;
    let mut conn = app.db().await;
    insert_many(&app, org, "test.export", 1200).await;
    let awkward = [
        "comma, and \"quotes\"",
        "two\r\nlines",
        "=HYPERLINK(\"http://evil.example\")",
        "-5 degrees",
        "unicode: ü → ✓",
    ];
    for (i, message) in awkward.iter().enumerate() {
        let at = Utc::now() - TimeDelta::milliseconds(i as i64);
        let data = json!({"reading": i, "note": "a,b\"c"});
        insert(
            &mut conn,
            org,
            &Seed {
                action: "test.export",
                data: Some(data),
                node_id: Some(Uuid::now_v7()),
                ..Seed::new(at, "Warning", "Node: Awkward, Inc.", message)
            },
        )
        .await;
    }
    let filter = "filters[0].propertyName=level&filters[0].propertyValue=Warning";
    let (_, list) = get(&app, &owner, &scoped("test.export", &format!("{filter}&limit=1000"))).await;
    assert_eq!(items(&list).len(), awkward.len());

    let response = app
        .get(&format!("/api/events?{}", scoped("test.export", filter)), &owner)
        .header(header::ACCEPT, "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    assert!(
        response.headers()[header::CONTENT_DISPOSITION].to_str().unwrap().starts_with("attachment; filename=\"events-")
    );
    let csv = parse_csv(&response.text().await.unwrap());
    let header_row = &csv[0];
    assert_eq!(header_row[..3], ["id", "timestamp", "level"]);
    assert_eq!(csv.len() - 1, awkward.len());
    for (record, item) in csv[1..].iter().zip(items(&list)) {
        for (name, value) in header_row.iter().zip(record) {
            assert_eq!(value, &csv_text(&item[name.as_str()]), "{name} of {item}");
        }
    }

    // NDJSON carries exactly the list's items.
    let response = app
        .get(&format!("/api/events?{}", scoped("test.export", filter)), &owner)
        .header(header::ACCEPT, "application/x-ndjson")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/x-ndjson");
    let lines: Vec<Value> =
        response.text().await.unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(&lines, items(&list));

    // Every matching row, past the list's limits, streamed; `?accept=csv` for plain links.
    let response =
        app.get(&format!("/api/events?accept=csv&{}", scoped("test.export", "")), &owner).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut bytes = 0;
    let mut text = String::new();
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.unwrap();
        bytes += chunk.len();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(bytes > 100_000, "{bytes}");
    assert_eq!(parse_csv(&text).len() - 1, 1200 + awkward.len());
    // An explicit limit applies.
    let response = app
        .get(&format!("/api/events?limit=7&{}", scoped("test.export", "")), &owner)
        .header(header::ACCEPT, "application/x-ndjson")
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap().lines().count(), 7);
    // An offset alone skips, without the list's default limit.
    let response = app
        .get(&format!("/api/events?offset=1000&{}", scoped("test.export", "")), &owner)
        .header(header::ACCEPT, "application/x-ndjson")
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap().lines().count(), 200 + awkward.len());
}

/// A minimal Server-Sent Events reader.
struct SseReader {
    chunks: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

#[derive(Debug, Default)]
struct SseMessage {
    id: Option<String>,
    event: Option<String>,
    data: String,
    comments: Vec<String>,
}

impl SseMessage {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|_| panic!("not JSON: {self:?}"))
    }
}

impl SseReader {
    async fn open(app: &TestApp, session: &Session, query: &str, last_event_id: Option<&str>) -> Self {
        let mut request = app.get(&format!("/api/events/stream?{query}"), session).timeout(Duration::from_secs(60));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.expect("stream");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "text/event-stream");
        Self { chunks: Box::pin(response.bytes_stream()), buffer: String::new() }
    }

    /// The next block (event or comments), or None on timeout or end.
    async fn next(&mut self, within: Duration) -> Option<SseMessage> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut message = SseMessage::default();
                for line in block.lines() {
                    if let Some(comment) = line.strip_prefix(':') {
                        message.comments.push(comment.trim().to_owned());
                    } else if let Some((name, value)) = line.split_once(':') {
                        let value = value.strip_prefix(' ').unwrap_or(value);
                        match name {
                            "id" => message.id = Some(value.to_owned()),
                            "event" => message.event = Some(value.to_owned()),
                            "data" => message.data.push_str(value),
                            _ => {}
                        }
                    }
                }
                return Some(message);
            }
            let chunk = tokio::time::timeout_at(deadline, self.chunks.next()).await.ok()??.ok()?;
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The next event carrying data (skipping comments).
    async fn next_event(&mut self, within: Duration) -> Option<SseMessage> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let message = self.next(left).await?;
            if !message.data.is_empty() {
                return Some(message);
            }
        }
    }
}

async fn create_node(app: &TestApp, session: &Session, name: &str) -> String {
    let response = app
        .post("/api/edgenodes", session)
        .json(&json!({"name": name, "organizationId": session.organization_id, "type": "Production"}))
        .send()
        .await
        .unwrap();
    let (status, value) = body(response).await;
    assert_eq!(status, StatusCode::CREATED, "{value}");
    value["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_stream_delivers_events_written_through_another_replica() {
    let app = TestApp::spawn_with(|config| config.event_stream_keepalive_seconds = 1).await;
    let other = app.replica().await;
    let owner = app.owner().await;
    let filter =
        "filters[0].propertyName=Subject&filters[0].propertyValue=Node:%20Streamed&filters[0].filterType=startsWith";
    let mut stream = SseReader::open(&app, &owner, filter, None).await;
    let hello = stream.next(Duration::from_secs(5)).await.expect("greeting");
    assert_eq!(hello.comments, ["connected"]);

    // Heartbeats keep the connection open.
    let beat = stream.next(Duration::from_secs(5)).await.expect("heartbeat");
    assert_eq!(beat.comments, ["heartbeat"], "{beat:?}");

    // Not matching: skipped. Matching, through the other replica: delivered.
    create_node(&other, &owner, "Unrelated").await;
    let node_id = create_node(&other, &owner, "Streamed1").await;
    let message = stream.next_event(Duration::from_secs(10)).await.expect("the event from the other replica");
    let event = message.json();
    assert_eq!(event["subject"], "Node: Streamed1");
    assert_eq!(event["action"], "node.create");
    assert_eq!(event["nodeId"], node_id);
    assert_eq!(event["userId"], owner.user_id.to_string());
    assert_eq!(message.id.as_deref(), event["id"].as_str());

    // In commit order, each once.
    for i in 2..=6 {
        create_node(&other, &owner, &format!("Streamed{i}")).await;
    }
    for i in 2..=6 {
        let event = stream.next_event(Duration::from_secs(10)).await.expect("event").json();
        assert_eq!(event["subject"], format!("Node: Streamed{i}"));
    }
    other.stop().await;
}

#[tokio::test]
async fn the_stream_resumes_after_last_event_id_then_goes_live() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let org = owner.organization_id;
    let mut conn = app.db().await;
    let base = Utc::now() - TimeDelta::seconds(60);
    let mut ids = Vec::new();
    for i in 0..4 {
        let level = if i == 2 { "Info" } else { "Error" };
        let message = format!("resume {i}");
        ids.push(
            insert(&mut conn, org, &Seed::new(base + TimeDelta::seconds(i), level, "Node: Resume", &message)).await,
        );
    }
    let filter = "filters[0].propertyName=level&filters[0].propertyValue=Error";
    let mut stream = SseReader::open(&app, &owner, filter, Some(&ids[0].to_string())).await;
    // After ids[0]: ids[1] and ids[3] (ids[2] is Info), oldest first.
    for expected in [ids[1], ids[3]] {
        let message = stream.next_event(Duration::from_secs(5)).await.expect("caught-up event");
        assert_eq!(message.id, Some(expected.to_string()));
    }
    let live = insert(&mut conn, org, &Seed::new(Utc::now(), "Error", "Node: Resume", "live")).await;
    let message = stream.next_event(Duration::from_secs(5)).await.expect("live event");
    assert_eq!(message.id, Some(live.to_string()));
    // Nothing more (no repeats).
    assert!(stream.next_event(Duration::from_millis(700)).await.is_none());

    // `since` catches up from a time.
    let mut stream = SseReader::open(
        &app,
        &owner,
        &format!(
            "{filter}&since={}",
            (base + TimeDelta::seconds(2)).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        ),
        None,
    )
    .await;
    let message = stream.next_event(Duration::from_secs(5)).await.expect("event since");
    assert_eq!(message.id, Some(ids[3].to_string()));

    // Signing out ends the stream with a reason.
    let mut stream = SseReader::open(&app, &owner, filter, None).await;
    let response = app.post("/api/authentication/logout", &owner).send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let closing = loop {
        let message = stream.next(Duration::from_secs(10)).await.expect("close event");
        if message.event.is_some() {
            break message;
        }
    };
    assert_eq!(closing.event.as_deref(), Some("close"));
    assert!(closing.json()["reason"].as_str().unwrap().contains("signed out"));
}

#[tokio::test]
async fn a_stream_that_falls_behind_catches_up_from_the_table_without_gaps_or_repeats() {
    use edgeflow::{
        auth::{
            context::{AuthContext, Principal},
            revocation::RevocationList,
            roles::Role,
        },
        events::{
            feed::Notice,
            query::EventQuery,
            stream::{Follower, Start},
        },
        http::list::QueryParams,
    };
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let org = owner.organization_id;
    let pool = sqlx::PgPool::connect(&app.database_url).await.unwrap();
    let auth = AuthContext {
        principal: Principal::User { user_id: owner.user_id, session_id: owner.session_id },
        organization_id: org,
        role: Role::Viewer,
        client_ip: None,
        issued_at: None,
        expires_at: None,
    };
    let query = EventQuery::parse(&QueryParams(vec![
        ("filters[0].propertyName".into(), "action".into()),
        ("filters[0].propertyValue".into(), "test.lag".into()),
    ]))
    .unwrap();
    // A feed of four notices: a burst overflows it, as a slow client's would.
    let (sender, notices) = tokio::sync::broadcast::channel(4);
    let follower =
        Follower::open(pool.clone(), &auth, std::sync::Arc::new(RevocationList::new(900)), query, notices, Start::Live)
            .await
            .unwrap();
    let mut stream = Box::pin(follower.into_stream());
    assert!(stream.next().await.is_some(), "greeting");
    let mut conn = app.db().await;
    let mut expected = Vec::new();
    for i in 0..300 {
        let message = format!("burst {i}");
        let id = insert(
            &mut conn,
            org,
            &Seed { action: "test.lag", ..Seed::new(Utc::now(), "Info", "Node: Lag", &message) },
        )
        .await;
        sender.send(Notice::Inserted { organization_id: org, id }).unwrap();
        expected.push(id.to_string());
    }
    let mut received = Vec::new();
    while received.len() < expected.len() {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("in time")
            .expect("open")
            .unwrap();
        // Comments (none expected here) have no id.
        let text = format!("{event:?}");
        if let Some(id) = expected.iter().find(|id| text.contains(id.as_str())) {
            received.push(id.clone());
        }
    }
    assert_eq!(received, expected, "every event once, in order");
    // A notice for an event already sent is not sent again.
    sender.send(Notice::Inserted { organization_id: org, id: expected[0].parse().unwrap() }).unwrap();
    sender.send(Notice::Closing).unwrap();
    let last = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.unwrap().unwrap().unwrap();
    assert!(format!("{last:?}").contains("close"), "{last:?}");
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn another_organization_sees_none_of_it() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let stranger = app.register("stranger@example.com", "Stranger Inc").await;
    let mut conn = app.db().await;
    let secret =
        insert(&mut conn, owner.organization_id, &Seed::new(Utc::now(), "Error", "Node: Secret", "secret")).await;
    // An event of no organization (a failed sign-in of an unknown email) is nobody's.
    let (status, _) = app.try_login("nobody@example.com", "wrong-password-123").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let mut stream = SseReader::open(&app, &stranger, "", None).await;
    let mut own_stream = SseReader::open(&app, &owner, "", None).await;
    insert(&mut conn, owner.organization_id, &Seed::new(Utc::now(), "Error", "Node: Secret", "live secret")).await;
    assert_eq!(
        own_stream.next_event(Duration::from_secs(5)).await.expect("own event").json()["message"],
        "live secret"
    );

    let (status, page) = get(&app, &stranger, "limit=1000").await;
    assert_eq!(status, StatusCode::OK);
    for item in items(&page) {
        assert_eq!(item["organizationId"], stranger.organization_id.to_string(), "{item}");
        assert_ne!(item["subject"], "Node: Secret");
        assert_ne!(item["action"], "auth.login_failed");
    }
    let (status, value) = body(app.get(&format!("/api/events/{secret}"), &stranger).send().await.unwrap()).await;
    assert_error(status, &value, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (status, value) = body(app.get(&format!("/api/events/{secret}"), &owner).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{value}");
    assert_eq!(value["message"], "secret");
    let response = app.get("/api/events?accept=ndjson", &stranger).send().await.unwrap();
    assert!(!response.text().await.unwrap().contains("Secret"));
    // Resuming from another organization's event id shows nothing of it.
    let mut resumed = SseReader::open(&app, &stranger, "", Some(&secret.to_string())).await;
    assert!(resumed.next_event(Duration::from_millis(700)).await.is_none());
    assert!(stream.next_event(Duration::from_millis(300)).await.is_none());
    let (_, unknown) =
        get(&app, &owner, "filters[0].propertyName=action&filters[0].propertyValue=auth.login_failed").await;
    assert!(items(&unknown).is_empty(), "{unknown}");
}

#[tokio::test]
async fn audit_events_say_who_did_what_from_where() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let viewer = app.member(&owner, "viewer@example.com", "Viewer").await;
    let node_id = create_node(&app, &owner, "Audited").await;
    let response =
        app.post("/api/apikeys", &owner).json(&json!({"name": "script", "role": "Operator"})).send().await.unwrap();
    let (status, key) = body(response).await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    let key_secret = key["key"].as_str().expect("the key").to_owned();
    let response = app
        .client
        .post(app.url("/api/edgenodes"))
        .header("X-API-Key", &key_secret)
        .json(&json!({"name": "ByKey", "organizationId": owner.organization_id, "type": "DevAndTest"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);

    // A Viewer reads the log.
    let (status, page) =
        get(&app, &viewer, "filters[0].propertyName=action&filters[0].propertyValue=node.create").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let by_user = items(&page).iter().find(|e| e["subject"] == "Node: Audited").expect("node.create by the owner");
    assert_eq!(by_user["nodeId"], node_id);
    assert_eq!(by_user["userId"], owner.user_id.to_string());
    assert_eq!(by_user["clientIp"], "127.0.0.1");
    assert_eq!(by_user["level"], "Info");
    assert_eq!(by_user["source"], "ControlCenter");
    assert!(by_user["apiKeyId"].is_null());
    let by_key = items(&page).iter().find(|e| e["subject"] == "Node: ByKey").expect("node.create by the key");
    assert_eq!(by_key["apiKeyId"], key["id"]);
    assert!(by_key["userId"].is_null());
    let timestamp = by_key["timestamp"].as_str().unwrap();
    assert!(timestamp.ends_with('Z') && timestamp.len() == "2020-09-29T12:57:10.481896Z".len(), "{timestamp}");

    // API keys read the log too, and the stream.
    let response =
        app.client.get(app.url("/api/events?limit=1")).header("X-API-Key", &key_secret).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (status, _) = body(app.client.get(app.url("/api/events")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn retention_deletes_only_old_events() {
    let app = TestApp::spawn().await;
    let owner = app.owner().await;
    let mut conn = app.db().await;
    let org = owner.organization_id;
    let old = Utc::now() - TimeDelta::days(100);
    for i in 0..2500 {
        let message = format!("old {i}");
        insert(&mut conn, org, &Seed::new(old + TimeDelta::milliseconds(i), "Info", "Node: Old", &message)).await;
    }
    let kept =
        insert(&mut conn, org, &Seed::new(Utc::now() - TimeDelta::days(89), "Info", "Node: Recent", "kept")).await;
    let pool = sqlx::PgPool::connect(&app.database_url).await.unwrap();
    let deleted = edgeflow::events::retention::prune(&pool, 90).await.unwrap();
    assert_eq!(deleted, 2500);
    let left: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM events WHERE subject IN ('Node: Old', 'Node: Recent')")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, [kept]);
    conn.close().await.unwrap();
}
