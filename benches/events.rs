//! Benchmark of the event list at scale: 1,000,000 events in one organization, among 10
//! organizations (100,000 in each of the other nine), spread over 90 days. Prints the p50/p95
//! latency of common queries through a real server (HTTP, auth, JSON), and of the same SQL run
//! directly (`events::store`, no HTTP) as a baseline, with the plan PostgreSQL chose.
//!
//! Run: `cargo bench --bench events` (needs PostgreSQL at EDGEFLOW_BENCH_DATABASE_URL, default
//! postgres://postgres@127.0.0.1:5432/edgeflow_bench_events, which it drops and recreates; the
//! bulk load takes a minute or two).

mod support;

use std::time::{Duration, Instant};

use edgeflow::{
    config::Config,
    events::{
        query::{EventQuery, Position},
        store,
    },
    http::list::QueryParams,
};
use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection, Postgres, QueryBuilder};
use support::{EMAIL, PASSWORD, database_url, fresh_database, summary};
use uuid::Uuid;

const EVENTS: i64 = 1_000_000;
const OTHER_ORGANIZATIONS: usize = 9;
const OTHER_EVENTS: i64 = 100_000;
const RUNS: usize = 40;
const WARM_UP: usize = 3;

/// `count` events for `organization_id`, spread evenly over the last 90 days, newest now: 2 %
/// Error, 8 % Warning; 70 % about one of 1,000 nodes (`Node: Production<n>`), 15 % about one of 200
/// flows, 15 % about one of 50 users. Ids are UUIDv7 of their time, as the server makes them.
/// Loaded with triggers off (no NOTIFY per row), as a restore would be.
async fn load(conn: &mut PgConnection, organization_id: Uuid, count: i64) {
    const CHUNK: i64 = 100_000;
    let mut from = 0;
    while from < count {
        let to = (from + CHUNK).min(count);
        sqlx::query(
            "INSERT INTO events (id, organization_id, occurred_at, level, source, action, subject, message, \
                                 node_id, flow_definition_id, user_id, client_ip, data) \
             SELECT (lpad(to_hex((extract(epoch FROM ts) * 1000)::bigint), 12, '0') || '7' \
                     || substr(h, 1, 3) || '8' || substr(h, 4, 15))::uuid, \
                    $1, ts, \
                    CASE WHEN i % 50 = 0 THEN 'Error' WHEN i % 12 = 1 THEN 'Warning' ELSE 'Info' END, \
                    CASE WHEN k < 70 THEN 'Node' WHEN k < 85 THEN 'Flow' ELSE 'ControlCenter' END, \
                    CASE WHEN k < 70 THEN 'node.event' WHEN k < 85 THEN 'flow.event' ELSE 'node.update' END, \
                    CASE WHEN k < 70 THEN 'Node: Production' || (i % 1000) \
                         WHEN k < 85 THEN 'Flow: Flow' || (i % 200) \
                         ELSE 'User: user' || (i % 50) || '@example.com' END, \
                    'message number ' || i, \
                    CASE WHEN k < 70 THEN md5('node' || (i % 1000))::uuid END, \
                    CASE WHEN k >= 70 AND k < 85 THEN md5('flow' || (i % 200))::uuid END, \
                    CASE WHEN k >= 85 THEN md5('user' || (i % 50))::uuid END, \
                    CASE WHEN k >= 85 THEN '10.0.' || (i % 250) || '.' || (i % 200) END, \
                    CASE WHEN i % 10 = 0 THEN jsonb_build_object('seq', i, 'temperature', i % 90) END \
             FROM (SELECT i, (i * 7919) % 100 AS k, md5(i::text || $1::text) AS h, \
                          now() - make_interval(secs => ($2 - i) * (90 * 86400.0 / $2)) AS ts \
                   FROM generate_series($3, $4) AS i) AS s",
        )
        .bind(organization_id)
        .bind(count)
        .bind(from + 1)
        .bind(to)
        .execute(&mut *conn)
        .await
        .expect("bulk insert");
        from = to;
    }
}

struct Stats {
    p50_ms: f64,
    p95_ms: f64,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let at = |q: f64| {
        let index = ((samples.len() as f64 * q).ceil() as usize).saturating_sub(1).min(samples.len() - 1);
        samples[index].as_secs_f64() * 1000.0
    };
    Stats { p50_ms: at(0.50), p95_ms: at(0.95) }
}

/// Times `GET /api/events?<query>`; answers the stats and the item count of the last answer.
async fn time_api(client: &reqwest::Client, base: &str, token: &str, query: &str) -> (Stats, usize) {
    let url = format!("{base}/api/events?{query}");
    let mut samples = Vec::new();
    let mut items = 0;
    for run in 0..WARM_UP + RUNS {
        let started = Instant::now();
        let response = client.get(&url).bearer_auth(token).send().await.expect("request");
        assert!(response.status().is_success(), "{query}: {}", response.status());
        let page: Value = response.json().await.expect("page");
        if run >= WARM_UP {
            samples.push(started.elapsed());
        }
        items = page["items"].as_array().map_or(0, Vec::len);
    }
    (stats(samples), items)
}

fn parse(query: &str) -> EventQuery {
    let params = QueryParams(serde_urlencoded::from_str(query).expect("query"));
    EventQuery::parse(&params).expect("valid query")
}

/// Times the same SQL directly (the store functions the handler calls).
async fn time_sql(conn: &mut PgConnection, organization_id: Uuid, query: &str) -> Stats {
    let query = parse(query);
    let mut samples = Vec::new();
    for run in 0..WARM_UP + RUNS {
        let started = Instant::now();
        store::list(conn, organization_id, &query).await.expect("list");
        if query.list.include_count {
            store::count(conn, organization_id, &query).await.expect("count");
        }
        if run >= WARM_UP {
            samples.push(started.elapsed());
        }
    }
    stats(samples)
}

/// The plan of the page query, one node per line, with actual times.
async fn plan(conn: &mut PgConnection, organization_id: Uuid, query: &str) -> Vec<String> {
    let query = parse(query);
    let mut sql =
        QueryBuilder::<Postgres>::new(format!("EXPLAIN (ANALYZE, COSTS OFF, TIMING ON) SELECT {}", store::COLUMNS));
    query.push_from_where(&mut sql, organization_id);
    let mut page = query.list.clone();
    page.limit += 1;
    page.push_order_and_page(&mut sql);
    let lines: Vec<String> = sql.build_query_scalar().fetch_all(&mut *conn).await.expect("explain");
    lines.into_iter().filter(|l| l.contains("->") || !l.starts_with(' ')).map(|l| l.trim_end().to_owned()).collect()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let database_url = database_url("edgeflow_bench_events");
    fresh_database(&database_url).await;
    let mut config = Config::for_database(&database_url);
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.admin_email = Some(EMAIL.into());
    config.admin_password = Some(PASSWORD.into());
    config.access_token_ttl_seconds = 3600;
    config.rate_limit_api_per_second = 0;
    let server = edgeflow::app::start(config).await.expect("server");
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().expect("client");
    let tokens: Value = client
        .post(format!("{base}/api/authentication/login"))
        .json(&json!({"email": EMAIL, "password": PASSWORD}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("tokens");
    let token = tokens["token"].as_str().expect("token").to_owned();
    let organization_id: Uuid = tokens["organizationId"].as_str().and_then(|s| s.parse().ok()).expect("organization");

    let mut conn = PgConnection::connect(&database_url).await.expect("connect");
    let started = Instant::now();
    conn.execute("SET session_replication_role = replica").await.expect("triggers off");
    load(&mut conn, organization_id, EVENTS).await;
    for n in 0..OTHER_ORGANIZATIONS {
        let other = Uuid::now_v7();
        sqlx::query("INSERT INTO organizations (id, name) VALUES ($1, $2)")
            .bind(other)
            .bind(format!("Bench {n}"))
            .execute(&mut conn)
            .await
            .expect("organization");
        load(&mut conn, other, OTHER_EVENTS).await;
    }
    conn.execute("SET session_replication_role = origin").await.expect("triggers on");
    conn.execute("VACUUM ANALYZE events").await.expect("vacuum");
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&mut conn).await.expect("count");
    let size: String = sqlx::query_scalar("SELECT pg_size_pretty(pg_total_relation_size('events'))")
        .fetch_one(&mut conn)
        .await
        .expect("size");
    println!(
        "EdgeFlow events benchmark: {total} events ({EVENTS} in the measured organization, {OTHER_EVENTS} in each of \
         {OTHER_ORGANIZATIONS} others), table with indexes {size}, loaded in {:.0} s; {} cores; {RUNS} runs per query",
        started.elapsed().as_secs_f64(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );

    // The cursor of page 10,000 (50 per page): the event just before it.
    let (at, id): (chrono::DateTime<chrono::Utc>, Uuid) = sqlx::query_as(
        "SELECT occurred_at, id FROM events WHERE organization_id = $1 ORDER BY occurred_at DESC, id DESC OFFSET 499949 LIMIT 1",
    )
    .bind(organization_id)
    .fetch_one(&mut conn)
    .await
    .expect("cursor row");
    let cursor = Position { at, id }.cursor();
    let week_ago = (chrono::Utc::now() - chrono::TimeDelta::days(7)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let queries: Vec<(&str, String)> = vec![
        (
            "first page, subject contains (common)",
            "filters[0].propertyName=Subject&filters[0].propertyValue=Node:%20Production5&filters[0].filterType=contains".into(),
        ),
        (
            "first page, subject contains (rare, 0.1 %)",
            "filters[0].propertyName=Subject&filters[0].propertyValue=Node:%20Production901&filters[0].filterType=contains"
                .into(),
        ),
        (
            "level=Error + since 7 days",
            format!("filters[0].propertyName=Level&filters[0].propertyValue=Error&filters[0].filterType=equal&since={week_ago}"),
        ),
        ("page 10,000 by offset", "limit=50&offset=499950".into()),
        ("page 10,000 by cursor", format!("limit=50&after={cursor}")),
        ("first page + includeCount", "includeCount=true".into()),
        (
            "level=Error + includeCount",
            "filters[0].propertyName=Level&filters[0].propertyValue=Error&includeCount=true".into(),
        ),
    ];
    println!(
        "\n{:<40} {:>12} {:>12} {:>12} {:>12} {:>6}",
        "query", "API p50 ms", "API p95 ms", "SQL p50 ms", "SQL p95 ms", "items"
    );
    let mut plans = Vec::new();
    for (name, query) in &queries {
        let (api, items) = time_api(&client, &base, &token, query).await;
        let sql = time_sql(&mut conn, organization_id, query).await;
        println!(
            "{name:<40} {:>12.2} {:>12.2} {:>12.2} {:>12.2} {items:>6}",
            api.p50_ms, api.p95_ms, sql.p50_ms, sql.p95_ms
        );
        summary(
            &format!("events ({EVENTS} of {total}): {name}"),
            format!("p50 {:.2} ms, p95 {:.2} ms", api.p50_ms, api.p95_ms),
            format!(
                "the same SQL: p50 {:.2} ms, p95 {:.2} ms ({:.1}x at p50)",
                sql.p50_ms,
                sql.p95_ms,
                api.p50_ms / sql.p50_ms.max(0.001)
            ),
        );
        plans.push((name, plan(&mut conn, organization_id, query).await));
    }
    println!("\n-- plans of the page queries (EXPLAIN ANALYZE)");
    for (name, lines) in plans {
        println!("{name}:");
        for line in lines {
            println!("    {line}");
        }
    }
    server.shutdown(Duration::from_secs(5)).await.expect("shutdown");
}
