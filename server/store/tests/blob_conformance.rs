//! One conformance suite for every blob store backend: the local
//! filesystem, S3 served by `s3s-fs` in process, and the moto S3 server.
//! What sessions rely on: absent is absent, a write conditional on a
//! version fails once the version moved on, create-only fails if present,
//! and (on backends whose conditional writes are atomic: the filesystem and
//! moto, not s3s-fs) of many racing writers exactly one wins; and player
//! files of every format (`citadel_runtime::FileFormat`) and from before
//! headers come back byte for byte.

mod support;

use std::sync::Arc;

use citadel_store::blob::{BlobError, BlobStore, FsBlobStore, Precondition, BLOB_BYTES_MAX};
use citadel_store::s3::S3BlobStore;

async fn conformance(store: Arc<dyn BlobStore>, atomic: bool) {
    let k = "players/mini/ann.json";
    assert!(store.get(k).await.unwrap().is_none(), "absent");
    let e1 = store.put(k, b"{\"v\":1}".to_vec(), Precondition::Absent).await.unwrap();
    assert_eq!(store.get(k).await.unwrap(), Some((b"{\"v\":1}".to_vec(), e1.clone())));
    assert!(matches!(store.put(k, b"x".to_vec(), Precondition::Absent).await, Err(BlobError::PreconditionFailed)));
    let e2 = store.put(k, b"{\"v\":2}".to_vec(), Precondition::Matches(e1.clone())).await.unwrap();
    assert_ne!(e1, e2, "a new version has a new tag");
    assert!(
        matches!(store.put(k, b"stale".to_vec(), Precondition::Matches(e1)).await, Err(BlobError::PreconditionFailed)),
        "a write based on an older version is refused"
    );
    assert_eq!(store.get(k).await.unwrap(), Some((b"{\"v\":2}".to_vec(), e2.clone())), "and changed nothing");
    assert!(
        matches!(
            store.put("players/mini/nobody.json", b"x".to_vec(), Precondition::Matches(e2.clone())).await,
            Err(BlobError::PreconditionFailed)
        ),
        "replacing a file that does not exist is refused"
    );
    assert!(store.get("players/mini/nobody.json").await.unwrap().is_none());
    for bad in ["../x", "/etc/passwd", "a//b", "a/./b", "", "a b"] {
        assert!(matches!(store.put(bad, vec![], Precondition::Absent).await, Err(BlobError::BadKey(_))), "{bad:?}");
        assert!(matches!(store.get(bad).await, Err(BlobError::BadKey(_))), "{bad:?}");
    }
    assert!(matches!(
        store.put("players/mini/big.json", vec![b'x'; BLOB_BYTES_MAX + 1], Precondition::Absent).await,
        Err(BlobError::TooLarge(_))
    ));
    // A realistic large player file round-trips byte for byte.
    let big: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let eb = store.put("players/mini/big.json", big.clone(), Precondition::Absent).await.unwrap();
    assert_eq!(store.get("players/mini/big.json").await.unwrap(), Some((big, eb)));
    // Listing a folder: its own keys in byte order, nothing deeper, nothing
    // of a folder whose name merely starts the same.
    for key in ["snaps/mini/ann/002.json", "snaps/mini/ann/001.json", "snaps/mini/ann/deeper/x.json"] {
        store.put(key, b"{}".to_vec(), Precondition::Absent).await.unwrap();
    }
    store.put("snaps/mini/anna/001.json", b"{}".to_vec(), Precondition::Absent).await.unwrap();
    assert_eq!(store.list("snaps/mini/ann").await.unwrap(), ["snaps/mini/ann/001.json", "snaps/mini/ann/002.json"]);
    assert!(store.list("snaps/mini/nobody").await.unwrap().is_empty(), "an absent folder lists empty");
    store.delete("snaps/mini/ann/001.json").await.unwrap();
    store.delete("snaps/mini/ann/001.json").await.expect("deleting an absent blob is not an error");
    assert!(store.get("snaps/mini/ann/001.json").await.unwrap().is_none());
    assert_eq!(store.list("snaps/mini/ann").await.unwrap(), ["snaps/mini/ann/002.json"]);
    assert!(matches!(store.list("../x").await, Err(BlobError::BadKey(_))));
    assert!(matches!(store.delete("a//b").await, Err(BlobError::BadKey(_))));
    player_files(&*store).await;
    if atomic {
        races(store).await;
    }
}

/// A player state of about `kb` KB of JSON: buildings and flags.
fn player(kb: usize) -> citadel_runtime::PlayerState {
    let mut s = citadel_runtime::PlayerState {
        format_version: citadel_runtime::STATE_FORMAT_VERSION,
        title: "mini".into(),
        content_version: "0123456789abcdef".into(),
        ..Default::default()
    };
    s.resources.insert("gold".into(), 123_456);
    let mut i = 0;
    while s.to_json().len() < kb * 1024 {
        s.buildings.push(citadel_runtime::state::Building::completed(
            i,
            "farm",
            3,
            (i % 40) as i32,
            (i / 40) as i32,
            7,
        ));
        s.flags.insert(format!("flag_{i:05}"));
        i += 1;
    }
    s
}

/// Player files of every format (binary ones hold every byte value) go
/// in and come out byte for byte, and a plain JSON file from before
/// headers is read and saved over in each format.
async fn player_files(store: &dyn BlobStore) {
    use citadel_runtime::{FileFormat, PlayerState};
    let every_byte: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let e = store.put("players/mini/bytes.json", every_byte.clone(), Precondition::Absent).await.unwrap();
    assert_eq!(store.get("players/mini/bytes.json").await.unwrap(), Some((every_byte, e)));
    for kb in [1, 50] {
        let state = player(kb);
        for format in FileFormat::ALL {
            let key = format!("players/mini/{kb}kb-{}.json", format.to_string().replace('+', "-"));
            let bytes = state.encode(format);
            let etag = store.put(&key, bytes.clone(), Precondition::Absent).await.unwrap();
            let (got, got_etag) = store.get(&key).await.unwrap().expect("written");
            assert_eq!((&got, &got_etag), (&bytes, &etag), "{format}, {kb} KB: byte for byte");
            assert_eq!(PlayerState::decode(&got).unwrap(), (state.clone(), Some(format)), "{format}, {kb} KB");
            // A file from before headers, saved over in this format.
            let old = format!("players/mini/{kb}kb-old-{}.json", format.to_string().replace('+', "-"));
            let etag = store.put(&old, state.to_json().into_bytes(), Precondition::Absent).await.unwrap();
            let (got, etag2) = store.get(&old).await.unwrap().unwrap();
            assert_eq!(etag, etag2);
            let (read, found) = PlayerState::decode(&got).unwrap();
            assert_eq!((&read, found), (&state, None), "plain JSON, {kb} KB");
            store.put(&old, read.encode(format), Precondition::Matches(etag)).await.unwrap();
            let (got, _) = store.get(&old).await.unwrap().unwrap();
            assert_eq!(PlayerState::decode(&got).unwrap(), (state.clone(), Some(format)), "resaved as {format}");
        }
    }
}

/// Many writers holding the same version (or none) race; one wins.
async fn races(store: Arc<dyn BlobStore>) {
    const WRITERS: usize = 12;
    let k = "players/mini/race.json";
    let base = store.put(k, b"base".to_vec(), Precondition::Absent).await.unwrap();
    for cond in [Precondition::Matches(base), Precondition::Absent] {
        let k = if cond == Precondition::Absent { "players/mini/race-new.json" } else { k };
        let tasks: Vec<_> = (0..WRITERS)
            .map(|i| {
                let (store, cond) = (store.clone(), cond.clone());
                tokio::spawn(async move { (i, store.put(k, format!("writer {i}").into_bytes(), cond).await) })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                (i, Ok(etag)) => winners.push((i, etag)),
                (_, Err(BlobError::PreconditionFailed)) => {}
                (_, Err(e)) => panic!("a losing writer gets PreconditionFailed, not {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one racing writer wins ({cond:?}): {winners:?}");
        let (i, etag) = &winners[0];
        assert_eq!(store.get(k).await.unwrap(), Some((format!("writer {i}").into_bytes(), etag.clone())));
    }
}

#[tokio::test]
async fn filesystem() {
    let root = std::env::temp_dir().join(support::unique("citadel-conformance-fs"));
    conformance(Arc::new(FsBlobStore::new(&root)), true).await;
}

#[tokio::test]
async fn s3_on_s3s_fs() {
    let cfg = support::s3s_fs().await;
    conformance(Arc::new(S3BlobStore::new(&cfg, |_| None).unwrap()), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_on_moto() {
    let Some(cfg) = support::moto("blob conformance on moto").await else { return };
    conformance(Arc::new(S3BlobStore::new(&cfg, |_| None).unwrap()), true).await;
}

#[tokio::test]
async fn s3_prefixes_keep_stores_apart() {
    let cfg = support::s3s_fs().await;
    let a = S3BlobStore::new(&citadel_store::s3::S3Config { prefix: "a/".into(), ..cfg.clone() }, |_| None).unwrap();
    let b = S3BlobStore::new(&citadel_store::s3::S3Config { prefix: "b/".into(), ..cfg.clone() }, |_| None).unwrap();
    a.put("players/t/p.json", b"a".to_vec(), Precondition::Absent).await.unwrap();
    assert!(b.get("players/t/p.json").await.unwrap().is_none());
    let bad = citadel_store::s3::S3Config { prefix: "../".into(), ..cfg.clone() };
    assert!(S3BlobStore::new(&bad, |_| None).is_err(), "a prefix must be plain segments");
    let no_creds = citadel_store::s3::S3Config { access_key_id: None, secret_access_key: None, ..cfg };
    let e = S3BlobStore::new(&no_creds, |_| None).unwrap_err().to_string();
    assert!(e.contains("AWS_ACCESS_KEY_ID"), "{e}");
}
