//! Building the application: the router with its middleware, and serving it (HTTP or HTTPS) with
//! graceful shutdown.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use axum::{
    Router,
    extract::{DefaultBodyLimit, Request, State},
    http::{Extensions, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use axum_server::{Handle, tls_rustls::RustlsConfig};
use tower::ServiceBuilder;
use tower_http::{
    catch_panic::CatchPanicLayer,
    compression::{CompressionLayer, DefaultPredicate, Predicate},
    cors::{AllowOrigin, CorsLayer},
    sensitive_headers::SetSensitiveRequestHeadersLayer,
};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::{
    apikeys, auth,
    config::Config,
    db, edgenodes,
    error::{ApiError, error_response},
    health,
    http::{idempotency, metrics, pretty, request_id},
    openapi::ApiDoc,
    organizations, registrationkeys,
    state::AppState,
    users,
};

/// Every documented API route, with its OpenAPI description.
pub fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(auth::routes::router())
        .merge(users::routes::router())
        .merge(organizations::routes::router())
        .merge(apikeys::routes::router())
        .merge(edgenodes::routes::router())
        .merge(registrationkeys::routes::router())
        .merge(edgenodes::remote::router())
        .merge(edgenodes::shadow::router())
        .merge(crate::jobs::routes::router())
        .merge(crate::deployments::routes::router())
        .merge(crate::tunnel::routes::router())
        .merge(crate::flows::definitions::router())
        .merge(crate::flows::drafts::router())
        .merge(crate::flows::versions::router())
        .merge(crate::resources::routes::router())
        .merge(organizations::usage::router())
        .merge(crate::events::routes::router())
}

/// Answers 503 when a request takes longer than the configured timeout. Resource uploads (see
/// `resources::is_long_transfer`) are exempt: they stream for as long as data keeps coming, and
/// stop on their own idle timeout instead.
async fn request_timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    if crate::resources::is_long_transfer(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Unavailable(format!("the request took longer than {} s", limit.as_secs())).into_response(),
    }
}

async fn no_such_endpoint() -> ApiError {
    ApiError::NotFound("endpoint")
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a handler panicked");
    error_response(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "internal error".into(), Vec::new())
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    let origins: Vec<&String> = origins.iter().filter(|o| !o.trim().is_empty()).collect();
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o.trim() == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o.trim()).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::IF_MATCH,
                header::IF_NONE_MATCH,
                HeaderName::from_static("x-api-key"),
                HeaderName::from_static("idempotency-key"),
                HeaderName::from_static("x-request-id"),
            ])
            .expose_headers([header::ETAG, header::RETRY_AFTER, HeaderName::from_static("x-request-id")]),
    )
}

/// The whole application for one replica.
pub fn router(state: AppState) -> Router {
    let config = state.config.clone();
    let (api, mut document) = api_routes().split_for_parts();
    crate::openapi::complete(&mut document);
    let api = api
        .route_layer(middleware::from_fn_with_state(state.clone(), idempotency::replay_or_record))
        .route_layer(middleware::from_fn_with_state(state.metrics.clone(), metrics::track))
        .layer(DefaultBodyLimit::max(config.body_limit_bytes))
        .layer(middleware::from_fn_with_state(Duration::from_secs(config.request_timeout_seconds), request_timeout));
    let middleware = ServiceBuilder::new()
        .layer(middleware::from_fn(request_id::request_context))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::COOKIE,
            HeaderName::from_static("x-api-key"),
        ]))
        .option_layer(cors(&config.cors_origins))
        // Files served with byte ranges (resource downloads) go out as stored.
        .layer(CompressionLayer::new().compress_when(DefaultPredicate::new().and(
            |_: StatusCode, _: Version, headers: &HeaderMap, _: &Extensions| {
                !headers.contains_key(header::ACCEPT_RANGES)
            },
        )))
        .layer(middleware::from_fn(pretty::pretty_json));
    Router::new()
        .merge(api)
        .merge(health::router())
        .merge(SwaggerUi::new("/docs").url("/api/openapi.json", document))
        .fallback(no_such_endpoint)
        .layer(middleware)
        .with_state(state)
}

/// A replica that is serving: its address, its state, and the means to stop it.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub state: AppState,
    handle: Handle<SocketAddr>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Stops accepting, lets requests in flight finish (up to `grace`), then returns.
    pub async fn shutdown(self, grace: Duration) -> anyhow::Result<()> {
        self.state.hub.shutdown().await;
        self.handle.graceful_shutdown(Some(grace));
        self.task.await.context("server task")?.context("server")?;
        Ok(())
    }

    /// Stops at once, as a crash would (tests of what survives one).
    pub fn abort(self) {
        self.state.hub.abort();
        self.handle.shutdown();
        self.task.abort();
    }
}

/// Connects, migrates, bootstraps the first user, and starts serving on `config.listen`.
pub async fn start(config: Config) -> anyhow::Result<RunningServer> {
    db::create_database_if_missing(&config.database_url).await?;
    let pool = db::connect(&config).await?;
    db::migrate(&pool).await?;
    let state = AppState::build(config, pool).await?;
    users::bootstrap::ensure_first_owner(&state).await?;
    crate::housekeeping::spawn(state.db.clone());
    crate::deployments::driver::spawn(state.clone());
    crate::housekeeping::spawn_resource_cleanup(state.clone());

    let listener = std::net::TcpListener::bind(state.config.listen)
        .with_context(|| format!("cannot listen on {}", state.config.listen))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let service = router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let handle = Handle::new();
    let task = match (&state.config.tls_cert, &state.config.tls_key) {
        (Some(cert), Some(key)) => {
            // Several servers may start in one process (tests); only the first install counts.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let tls =
                RustlsConfig::from_pem_file(cert, key).await.context("reading EDGEFLOW_TLS_CERT / EDGEFLOW_TLS_KEY")?;
            let server = axum_server::from_tcp_rustls(listener, tls)?.handle(handle.clone());
            tokio::spawn(server.serve(service))
        }
        _ => {
            let server = axum_server::from_tcp(listener)?.handle(handle.clone());
            tokio::spawn(server.serve(service))
        }
    };
    Ok(RunningServer { addr, state, handle, task })
}

/// Runs until SIGINT or SIGTERM, then shuts down gracefully.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let server = start(config).await?;
    let scheme = if server.state.config.tls_enabled() { "https" } else { "http" };
    tracing::info!("EdgeFlow Control Center listening on {scheme}://{} (API docs at /docs)", server.addr);
    shutdown_signal().await;
    tracing::info!("shutting down: finishing requests in flight");
    server.shutdown(Duration::from_secs(30)).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
