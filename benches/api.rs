//! Benchmark of the foundation, printing its figures next to a baseline measured in the same run:
//!
//! 1. authenticated `GET /api/users/me` requests/s vs `pgbench -S` (select-only) transactions/s,
//!    with the same number of concurrent clients, on the same PostgreSQL;
//! 2. the p50/p99 latency of that GET alone, and while logins are hammered concurrently.
//!
//! Run: `cargo bench --bench api` (needs PostgreSQL at EDGEFLOW_BENCH_DATABASE_URL, default
//! postgres://postgres@127.0.0.1:5432/edgeflow_bench, which it drops and recreates, and `pgbench`).

mod support;

use std::{
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use edgeflow::config::Config;
use serde_json::{Value, json};
use support::{EMAIL, PASSWORD, database_url, fresh_database, summary};

const CLIENTS: usize = 16;
const SECONDS: u64 = 8;

struct Stats {
    requests: usize,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn stats(mut latencies: Vec<Duration>, elapsed: Duration) -> Stats {
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Stats {
        requests: latencies.len(),
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
    }
}

/// `clients` tasks calling GET /api/users/me back to back for `seconds`.
async fn load_me(client: &reqwest::Client, url: &str, token: &str, clients: usize, seconds: u64) -> Stats {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (client, url, token) = (client.clone(), url.to_owned(), token.to_owned());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let response = client.get(&url).bearer_auth(&token).send().await.expect("request");
                    assert!(response.status().is_success(), "{}", response.status());
                    response.bytes().await.expect("body");
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("task"));
    }
    stats(all, started.elapsed())
}

/// `pgbench -S` (select-only) transactions/s; with `script`, pgbench running that SQL instead.
fn pgbench_tps(database_url: &str, clients: usize, seconds: u64, script: Option<&std::path::Path>) -> Option<f64> {
    if script.is_none() {
        let init = Command::new("pgbench").args(["-i", "-q", "-s", "10", database_url]).output().ok()?;
        if !init.status.success() {
            eprintln!("pgbench -i failed: {}", String::from_utf8_lossy(&init.stderr));
            return None;
        }
    }
    let (clients, seconds) = (clients.to_string(), seconds.to_string());
    let mut args = vec!["-n", "-c", clients.as_str(), "-j", "2", "-T", seconds.as_str()];
    let script_arg;
    match script {
        Some(path) => {
            script_arg = format!("--file={}", path.display());
            args.push(&script_arg);
        }
        None => args.push("-S"),
    }
    args.push(database_url);
    let run = Command::new("pgbench").args(&args).output().ok()?;
    let out = String::from_utf8_lossy(&run.stdout);
    out.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.trim_start_matches("tps = ").split_whitespace().next()?.parse().ok())
}

async fn tokens_user(client: &reqwest::Client, base: &str, token: &str) -> String {
    let me: Value = client
        .get(format!("{base}/api/users/me"))
        .bearer_auth(token)
        .send()
        .await
        .expect("me")
        .json()
        .await
        .expect("me body");
    me["id"].as_str().expect("user id").to_owned()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let database_url = database_url("edgeflow_bench");
    fresh_database(&database_url).await;
    let mut config = Config::for_database(&database_url);
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.admin_email = Some(EMAIL.into());
    config.admin_password = Some(PASSWORD.into());
    config.rate_limit_login_per_ip = 0;
    config.rate_limit_login_per_account = 0;
    config.rate_limit_api_per_second = 0;
    config.max_sessions_per_user = 100_000;
    let server = edgeflow::app::start(config).await.expect("server");
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().expect("client");
    let login = |client: reqwest::Client, base: String| async move {
        let response = client
            .post(format!("{base}/api/authentication/login"))
            .json(&json!({"email": EMAIL, "password": PASSWORD}))
            .send()
            .await
            .expect("login");
        assert!(response.status().is_success());
        response.json::<Value>().await.expect("tokens")
    };
    let token = login(client.clone(), base.clone()).await["token"].as_str().expect("token").to_owned();
    let me = format!("{base}/api/users/me");

    println!(
        "EdgeFlow foundation benchmark ({} cores, {CLIENTS} concurrent clients, {SECONDS} s per run)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    load_me(&client, &me, &token, CLIENTS, 1).await; // warm-up
    let api = load_me(&client, &me, &token, CLIENTS, SECONDS).await;
    // The statement behind GET /api/users/me, run by pgbench for this user: the API's own floor.
    let user_id = tokens_user(&client, &base, &token).await;
    let script = std::env::temp_dir().join(format!("edgeflow-me-{user_id}.sql"));
    std::fs::write(&script, format!(
        "SELECT u.id, u.email, u.name, u.created_at, coalesce(json_agg(json_build_object('id', o.id, 'name', o.name, \
         'role', m.role) ORDER BY o.name, o.id) FILTER (WHERE o.id IS NOT NULL), '[]') FROM users u \
         LEFT JOIN memberships m ON m.user_id = u.id LEFT JOIN organizations o ON o.id = m.organization_id \
         WHERE u.id = '{user_id}' GROUP BY u.id;\n"
    ))
    .expect("script");
    let (pg, pg_same) = tokio::task::spawn_blocking({
        let url = database_url.clone();
        let script = script.clone();
        move || (pgbench_tps(&url, CLIENTS, SECONDS, None), pgbench_tps(&url, CLIENTS, SECONDS, Some(&script)))
    })
    .await
    .expect("pgbench task");
    println!("\n-- throughput");
    println!(
        "GET /api/users/me (bearer)   {:>10.0} requests/s  ({} requests, p50 {:.2} ms, p99 {:.2} ms)",
        api.per_second, api.requests, api.p50_ms, api.p99_ms
    );
    match pg {
        Some(tps) => println!(
            "pgbench -S (baseline)        {tps:>10.0} transactions/s\nratio API / pgbench -S       {:>10.2}",
            api.per_second / tps
        ),
        None => println!("pgbench -S (baseline)        not available (install PostgreSQL's pgbench)"),
    }
    if let Some(tps) = pg_same {
        println!(
            "pgbench, the endpoint's SQL  {tps:>10.0} transactions/s\nratio API / its own query    {:>10.2}",
            api.per_second / tps
        );
    }

    // Latency of the GET with few clients, alone and while logins are hammered.
    let quiet = load_me(&client, &me, &token, 4, SECONDS).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let logins = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let hammers: Vec<_> = (0..16)
        .map(|_| {
            let (client, base, stop, logins) = (client.clone(), base.clone(), stop.clone(), logins.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    login(client.clone(), base.clone()).await;
                    logins.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    let busy = load_me(&client, &me, &token, 4, SECONDS).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for hammer in hammers {
        hammer.await.expect("hammer");
    }
    println!("\n-- GET /api/users/me latency, 4 clients");
    println!(
        "alone                        p50 {:>7.2} ms   p99 {:>7.2} ms   ({:.0} requests/s)",
        quiet.p50_ms, quiet.p99_ms, quiet.per_second
    );
    println!(
        "with 16 clients logging in   p50 {:>7.2} ms   p99 {:>7.2} ms   ({:.0} requests/s; {:.0} logins/s)",
        busy.p50_ms,
        busy.p99_ms,
        busy.per_second,
        logins.load(std::sync::atomic::Ordering::Relaxed) as f64 / SECONDS as f64
    );
    println!("p99 ratio busy / alone       {:>7.2}", busy.p99_ms / quiet.p99_ms.max(0.001));

    let figure = format!("GET /api/users/me, {CLIENTS} clients");
    let value = format!("{:.0} requests/s (p50 {:.1} ms, p99 {:.1} ms)", api.per_second, api.p50_ms, api.p99_ms);
    match (pg_same, pg) {
        (Some(same), Some(select)) => summary(
            &figure,
            value,
            format!(
                "its own SQL through pgbench {same:.0}/s ({:.2}x); `pgbench -S` {select:.0}/s ({:.2}x)",
                api.per_second / same,
                api.per_second / select
            ),
        ),
        _ => summary(&figure, value, "pgbench not available".into()),
    }
    summary(
        "the same GET, p99 with 4 clients, while 16 clients sign in",
        format!("{:.1} ms", busy.p99_ms),
        format!("{:.1} ms alone ({:.2}x)", quiet.p99_ms, busy.p99_ms / quiet.p99_ms.max(0.001)),
    );
    server.shutdown(Duration::from_secs(5)).await.expect("shutdown");
}
