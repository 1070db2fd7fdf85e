//! Prometheus metrics: requests by route and status, a latency histogram by route, and the
//! database pool's use. Served as text at `GET /metrics`.

use std::{
    collections::BTreeMap,
    fmt::Write,
    sync::{Arc, Mutex},
    time::Instant,
};

use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::Response,
};

const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Series {
    by_status: BTreeMap<u16, u64>,
    latency: Histogram,
}

/// The registry. Cheap to update: one short lock per request.
#[derive(Default)]
pub struct Metrics {
    series: Mutex<BTreeMap<(String, String), Series>>,
}

impl Metrics {
    pub fn record(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let Ok(mut series) = self.series.lock() else { return };
        let entry = series.entry((method.to_owned(), route.to_owned())).or_default();
        *entry.by_status.entry(status).or_default() += 1;
        let histogram = &mut entry.latency;
        histogram.count += 1;
        histogram.sum += seconds;
        for (bucket, count) in BUCKETS.iter().zip(histogram.counts.iter_mut()) {
            if seconds <= *bucket {
                *count += 1;
            }
        }
    }

    /// The Prometheus text exposition of everything recorded, plus the pool figures given.
    pub fn render(&self, pool: &sqlx::PgPool, extra: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        out.push_str("# HELP edgeflow_http_requests_total HTTP requests answered, by route and status.\n");
        out.push_str("# TYPE edgeflow_http_requests_total counter\n");
        let series = match self.series.lock() {
            Ok(series) => series,
            Err(poisoned) => poisoned.into_inner(),
        };
        for ((method, route), entry) in series.iter() {
            for (status, count) in &entry.by_status {
                let _ = writeln!(
                    out,
                    "edgeflow_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {count}"
                );
            }
        }
        out.push_str("# HELP edgeflow_http_request_duration_seconds Time to answer, by route.\n");
        out.push_str("# TYPE edgeflow_http_request_duration_seconds histogram\n");
        for ((method, route), entry) in series.iter() {
            let labels = format!("method=\"{method}\",route=\"{route}\"");
            let h = &entry.latency;
            for (bucket, count) in BUCKETS.iter().zip(h.counts.iter()) {
                let _ =
                    writeln!(out, "edgeflow_http_request_duration_seconds_bucket{{{labels},le=\"{bucket}\"}} {count}");
            }
            let _ = writeln!(out, "edgeflow_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "edgeflow_http_request_duration_seconds_sum{{{labels}}} {}", h.sum);
            let _ = writeln!(out, "edgeflow_http_request_duration_seconds_count{{{labels}}} {}", h.count);
        }
        drop(series);
        let size = f64::from(pool.size());
        let idle = pool.num_idle() as f64;
        let max = f64::from(pool.options().get_max_connections());
        let gauges = [
            ("edgeflow_db_pool_connections", "Open database connections.", size),
            ("edgeflow_db_pool_idle_connections", "Idle database connections.", idle),
            ("edgeflow_db_pool_in_use_connections", "Database connections in use.", size - idle),
            ("edgeflow_db_pool_max_connections", "Most database connections allowed.", max),
        ];
        for (name, help, value) in gauges.iter().copied().chain(extra.iter().copied()) {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        }
        out
    }
}

/// Route layer: runs after routing, so the route template (not the raw path) labels the series.
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics.record(method.as_str(), &route, response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}
