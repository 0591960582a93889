//! Test services for the storage suites: S3 served by `s3s-fs` in this
//! process, the moto server and the MongoDB wire server that `scripts/test`
//! provisions (`CITADEL_TEST_MOTO_ENDPOINT`, `CITADEL_TEST_MONGO_URI`).
//! The game server's tests include this file too (`server/tests/support`).
//!
//! A suite whose service is missing says so on the terminal (past the test
//! harness's output capture) and passes; with `CITADEL_TEST_REQUIRE_SERVICES=1`
//! (set by `scripts/test`) a missing service fails the suite instead.

#![allow(dead_code, unreachable_pub)]

use std::io::Write;

use citadel_store::s3::S3Config;

pub const ACCESS_KEY: &str = "citadel-test";
pub const SECRET_KEY: &str = "citadel-test-secret";

/// A unique name for this process and call (bucket names, folders).
pub fn unique(what: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{what}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Serves S3 from a temporary folder on 127.0.0.1 for as long as the
/// test's runtime lives; returns a config for a fresh, empty bucket.
pub async fn s3s_fs() -> S3Config {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let root = std::env::temp_dir().join(unique("citadel-s3s"));
    let bucket = unique("players");
    // s3s-fs keeps each bucket as a folder.
    std::fs::create_dir_all(root.join(&bucket)).unwrap();
    let service = {
        let mut b = s3s::service::S3ServiceBuilder::new(s3s_fs::FileSystem::new(&root).unwrap());
        b.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        b.build()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        while let Ok((socket, _)) = listener.accept().await {
            let conn = http.serve_connection(TokioIo::new(socket), service.clone()).into_owned();
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    });
    config(&format!("http://{addr}"), &bucket)
}

/// A fresh bucket on the moto server, or `None` (announced) when no moto
/// server was provisioned.
pub async fn moto(suite: &str) -> Option<S3Config> {
    let endpoint = service("CITADEL_TEST_MOTO_ENDPOINT", suite, "the moto S3 server")?;
    let cfg = config(&endpoint, &unique("players"));
    let store = citadel_store::s3::S3BlobStore::new(&cfg, |_| None).unwrap();
    store.client().create_bucket().bucket(&cfg.bucket).send().await.expect("creating a bucket on moto");
    Some(cfg)
}

/// The service address in `var`, or `None` after saying loudly that
/// `suite` was skipped (or failing, when services are required).
pub fn service(var: &str, suite: &str, what: &str) -> Option<String> {
    if let Ok(v) = std::env::var(var) {
        return Some(v);
    }
    let msg = format!("SKIPPED: {suite}: needs {what} ({var} is not set); `scripts/test` provisions it");
    assert!(std::env::var_os("CITADEL_TEST_REQUIRE_SERVICES").is_none(), "{msg}");
    // Straight to the terminal: the harness captures `eprintln!` of passing tests.
    let _ = writeln!(std::io::stderr().lock(), "\n*** {msg} ***\n");
    None
}

fn config(endpoint: &str, bucket: &str) -> S3Config {
    S3Config {
        endpoint: Some(endpoint.to_string()),
        path_style: true,
        access_key_id: Some(ACCESS_KEY.into()),
        secret_access_key: Some(SECRET_KEY.into()),
        ..S3Config::new(bucket)
    }
}
