# Multi-stage build: compile with the Rust toolchain, run on a slim Debian as a non-root user.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY migrations migrations
COPY src src
COPY benches benches
RUN cargo build --release --locked --bin edgeflow

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --create-home --home-dir /var/lib/edgeflow --uid 10001 edgeflow
COPY --from=build /src/target/release/edgeflow /usr/local/bin/edgeflow
USER edgeflow
WORKDIR /var/lib/edgeflow
ENV EDGEFLOW_LISTEN=0.0.0.0:8080 \
    EDGEFLOW_DATA_DIR=/var/lib/edgeflow/data \
    EDGEFLOW_LOG_FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["edgeflow"]
CMD ["serve"]
