//! Benchmark of resource content through the API, next to a baseline measured in the same run:
//!
//! 1. upload of a 200 MiB file (generated, not committed) as multipart/form-data, and its
//!    download, in MiB/s, against `std::fs::copy` of the same file on the same disk (plain, and
//!    with an fsync, since the server's local store fsyncs what it stores);
//! 2. the server's peak RSS (VmHWM of the server process) before and after a 20 MiB and a
//!    200 MiB upload: streaming means it must not grow with the file size.
//!
//! The server is the release binary, run as a child process so its memory is its own. Run:
//! `cargo bench --bench resources` (needs PostgreSQL at EDGEFLOW_BENCH_DATABASE_URL, default
//! postgres://postgres@127.0.0.1:5432/edgeflow_bench_resources, which it drops and recreates).
//! Files go under `target/bench-resources/` (one disk for the server's blobs and the baseline).

mod support;

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{Server, database_url, fresh_database, rss_kib, summary};

const MIB: u64 = 1024 * 1024;
const BIG: u64 = 200 * MIB;
const SMALL: u64 = 20 * MIB;

/// Writes `size` pseudo-random (incompressible) bytes; answers their sha256.
fn generate(path: &Path, size: u64, seed: u64) -> String {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("create the test file"));
    let mut hasher = Sha256::new();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut chunk = vec![0u8; MIB as usize];
    for _ in 0..size / MIB {
        for word in chunk.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        hasher.update(&chunk);
        file.write_all(&chunk).expect("write the test file");
    }
    file.into_inner().expect("flush").sync_all().expect("sync");
    hex::encode(hasher.finalize())
}

/// The server's `VmHWM` (peak resident set) and `VmRSS`, in MiB.
fn memory(pid: u32) -> (f64, f64) {
    (rss_kib(pid, "VmHWM:") as f64 / 1024.0, rss_kib(pid, "VmRSS:") as f64 / 1024.0)
}

fn mib_per_second(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / MIB as f64 / elapsed.as_secs_f64()
}

async fn call(request: reqwest::RequestBuilder, expected: u16) -> Value {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    assert_eq!(status, expected, "{text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Uploads `path` as multipart/form-data to a new draft; answers the elapsed time and the ids.
async fn upload(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    resource: &str,
    path: &Path,
    size: u64,
) -> (Duration, String, Value) {
    let draft = call(
        client
            .post(format!("{base}/api/resources/{resource}/versions"))
            .bearer_auth(token)
            .json(&json!({"description": "bench", "sizeInBytes": size})),
        201,
    )
    .await;
    let version = draft["id"].as_str().expect("version id").to_owned();
    let file = tokio::fs::File::open(path).await.expect("open the test file");
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
    let part = reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(stream), size)
        .file_name("bench.bin")
        .mime_str("application/octet-stream")
        .expect("mime");
    let form = reqwest::multipart::Form::new().part("file", part);
    let started = Instant::now();
    let stored = call(
        client
            .post(format!("{base}/api/resources/{resource}/versions/{version}/content"))
            .bearer_auth(token)
            .multipart(form),
        200,
    )
    .await;
    (started.elapsed(), version, stored)
}

/// Downloads a version, counting the bytes; answers the elapsed time, the count and the ETag.
async fn download(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    resource: &str,
    version: &str,
) -> (Duration, u64, String) {
    let started = Instant::now();
    let response = client
        .get(format!("{base}/api/resources/{resource}/versions/{version}/content"))
        .bearer_auth(token)
        .send()
        .await
        .expect("download");
    assert_eq!(response.status().as_u16(), 200);
    let etag = response.headers().get("etag").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let mut stream = response.bytes_stream();
    let mut received = 0u64;
    while let Some(chunk) = stream.next().await {
        received += chunk.expect("chunk").len() as u64;
    }
    (started.elapsed(), received, etag)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let database_url = database_url("edgeflow_bench_resources");
    fresh_database(&database_url).await;
    let work: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("bench-resources");
    let _ = std::fs::remove_dir_all(&work);
    let data_dir = work.join("data");
    std::fs::create_dir_all(&data_dir).expect("bench directory");

    println!("generating the test files under {} ...", work.display());
    let big = work.join("big.bin");
    let small = work.join("small.bin");
    let big_sha = generate(&big, BIG, 1);
    generate(&small, SMALL, 2);

    // Baseline: a plain copy on the same disk, and the same with an fsync.
    let copy = work.join("copy.bin");
    let started = Instant::now();
    std::fs::copy(&big, &copy).expect("copy");
    let copy_time = started.elapsed();
    std::fs::remove_file(&copy).expect("remove copy");
    let started = Instant::now();
    std::fs::copy(&big, &copy).expect("copy");
    std::fs::File::open(&copy).expect("open copy").sync_all().expect("fsync copy");
    let copy_sync_time = started.elapsed();
    std::fs::remove_file(&copy).expect("remove copy");

    let data_dir_setting = data_dir.display().to_string();
    let server = Server::start(&database_url, &[("EDGEFLOW_DATA_DIR", data_dir_setting.as_str())]).await;
    let pid = server.pid();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(600)).build().expect("client");
    let (base, token, organization) = (server.base.clone(), server.token.clone(), server.organization);
    let resource = call(client.post(format!("{base}/api/resources")).bearer_auth(&token).json(&json!({
            "organizationId": organization, "name": "bench", "type": "File", "category": "/organization/", "path": "bench.bin"
        })),
        201,
    )
    .await;
    let resource = resource["id"].as_str().expect("resource id").to_owned();

    let (hwm_start, rss_start) = memory(pid);
    let (small_time, _, _) = upload(&client, &base, &token, &resource, &small, SMALL).await;
    let (hwm_small, _) = memory(pid);
    let (upload_time, version, stored) = upload(&client, &base, &token, &resource, &big, BIG).await;
    let (hwm_big, rss_after_upload) = memory(pid);
    assert_eq!(stored["sha256"], big_sha, "the stored sha256 is the file's");
    let (download_time, received, etag) = download(&client, &base, &token, &resource, &version).await;
    assert_eq!(received, BIG);
    assert_eq!(etag, format!("\"{big_sha}\""));
    let (hwm_end, rss_end) = memory(pid);
    drop(server);
    let _ = std::fs::remove_dir_all(&work);

    println!();
    println!("resource content through the API vs a plain file copy (same disk, {} MiB file)", BIG / MIB);
    println!("  std::fs::copy                     {:>8.1} MiB/s", mib_per_second(BIG, copy_time));
    println!("  std::fs::copy + fsync             {:>8.1} MiB/s", mib_per_second(BIG, copy_sync_time));
    println!("  upload (multipart, sha256+md5, fsync) {:>4.1} MiB/s", mib_per_second(BIG, upload_time));
    println!("  download                          {:>8.1} MiB/s", mib_per_second(BIG, download_time));
    println!("  ({} MiB upload: {:.1} MiB/s)", SMALL / MIB, mib_per_second(SMALL, small_time));
    println!();
    println!("server memory (VmHWM = peak resident set since start, VmRSS = now)");
    println!("  before any upload                 peak {hwm_start:>7.1} MiB   rss {rss_start:>7.1} MiB");
    println!("  after the {:>3} MiB upload          peak {hwm_small:>7.1} MiB", SMALL / MIB);
    println!(
        "  after the {:>3} MiB upload          peak {hwm_big:>7.1} MiB   rss {rss_after_upload:>7.1} MiB",
        BIG / MIB
    );
    println!("  after the {:>3} MiB download        peak {hwm_end:>7.1} MiB   rss {rss_end:>7.1} MiB", BIG / MIB);
    println!(
        "  peak growth: {:+.1} MiB for the {} MiB file, {:+.1} MiB more for the {} MiB file",
        hwm_small - hwm_start,
        SMALL / MIB,
        hwm_big - hwm_small,
        BIG / MIB
    );

    let (copy, copy_sync) = (mib_per_second(BIG, copy_time), mib_per_second(BIG, copy_sync_time));
    let upload = mib_per_second(BIG, upload_time);
    let download = mib_per_second(BIG, download_time);
    summary(
        &format!("{} MiB resource upload (multipart, sha256+md5, fsync)", BIG / MIB),
        format!("{upload:.0} MiB/s"),
        format!("`fs::copy` + fsync {copy_sync:.0} MiB/s ({:.2}x)", upload / copy_sync),
    );
    summary(
        &format!("{} MiB resource download", BIG / MIB),
        format!("{download:.0} MiB/s"),
        format!("`fs::copy` {copy:.0} MiB/s ({:.2}x)", download / copy),
    );
    summary(
        "server peak RSS through a 20 MiB then a 200 MiB upload and download",
        format!("{hwm_small:.1} MiB, then {hwm_end:.1} MiB"),
        format!("{hwm_start:.1} MiB before any upload"),
    );
}
