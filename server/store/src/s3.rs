//! The S3 blob store: player files as objects in a bucket, under a prefix.
//! Works with any S3-compatible endpoint. Conditional writes use
//! `If-None-Match: *` (create only) and `If-Match: <etag>` (replace only
//! that version), so a server holding a stale lock can never overwrite a
//! newer player file.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use serde::{Deserialize, Serialize};

use crate::blob::{valid_key, BlobError, BlobStore, Etag, Precondition, BLOB_BYTES_MAX, LIST_MAX};

/// One S3 call may take this long in all (retries included). Sessions wait
/// on saves and logins on loads; a hung store must turn into an error the
/// session retries, not a hung player.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(20);
/// Connecting to the endpoint may take this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Attempts per call (the SDK's standard retry with backoff): transient
/// errors (throttling, 5xx) are common on S3 and cheap to retry.
const ATTEMPTS_MAX: u32 = 3;

/// Where player files live when they live in S3.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// The bucket (it must exist).
    pub bucket: String,
    /// Prepended to every key, e.g. `prod/` (may be empty).
    #[serde(default)]
    pub prefix: String,
    /// The region to sign for.
    #[serde(default = "default_region")]
    pub region: String,
    /// An S3-compatible endpoint such as `http://127.0.0.1:9000`; AWS when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Path-style URLs (`endpoint/bucket/key`), which most S3-compatible
    /// servers need; AWS itself prefers virtual-hosted style.
    #[serde(default)]
    pub path_style: bool,
    /// Credentials; when absent, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN` are read at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
}

fn default_region() -> String {
    "us-east-1".into()
}

impl S3Config {
    /// `bucket` on AWS in the default region, no prefix.
    pub fn new(bucket: &str) -> S3Config {
        S3Config {
            bucket: bucket.into(),
            prefix: String::new(),
            region: default_region(),
            endpoint: None,
            path_style: false,
            access_key_id: None,
            secret_access_key: None,
        }
    }
}

/// Player files in S3.
#[derive(Debug, Clone)]
pub struct S3BlobStore {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

impl S3BlobStore {
    /// A client for `cfg`. Credentials not in `cfg` come from `env`
    /// (`AWS_ACCESS_KEY_ID`, ...). Makes no request: a wrong bucket or
    /// endpoint shows at the first load or save.
    pub fn new(cfg: &S3Config, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<S3BlobStore> {
        let key_id = cfg.access_key_id.clone().or_else(|| env("AWS_ACCESS_KEY_ID"));
        let secret = cfg.secret_access_key.clone().or_else(|| env("AWS_SECRET_ACCESS_KEY"));
        let (Some(key_id), Some(secret)) = (key_id, secret) else {
            anyhow::bail!("s3: no credentials: set s3.access_key_id and s3.secret_access_key, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY");
        };
        anyhow::ensure!(!cfg.bucket.is_empty(), "s3.bucket is empty");
        anyhow::ensure!(
            cfg.prefix.is_empty() || (cfg.prefix.ends_with('/') && valid_key(cfg.prefix.trim_end_matches('/'))),
            "s3.prefix must be empty or plain path segments ending in `/`, like `prod/`"
        );
        let creds = Credentials::new(key_id, secret, env("AWS_SESSION_TOKEN"), None, "citadel-config");
        let mut b = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(cfg.region.clone()))
            .credentials_provider(creds)
            .force_path_style(cfg.path_style)
            // Checksums only where the API requires them: not every
            // S3-compatible server accepts the newer trailing checksums.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(ATTEMPTS_MAX))
            .timeout_config(
                aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                    .operation_timeout(OPERATION_TIMEOUT)
                    .connect_timeout(CONNECT_TIMEOUT)
                    .build(),
            );
        if let Some(ep) = &cfg.endpoint {
            b = b.endpoint_url(ep);
        }
        Ok(S3BlobStore {
            client: aws_sdk_s3::Client::from_conf(b.build()),
            bucket: cfg.bucket.clone(),
            prefix: cfg.prefix.clone(),
        })
    }

    /// The configured client, for operations outside the blob store
    /// (tests create their buckets with it).
    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    fn object(&self, key: &str) -> Result<String, BlobError> {
        if !valid_key(key) {
            return Err(BlobError::BadKey(key.to_string()));
        }
        Ok(format!("{}{key}", self.prefix))
    }
}

/// The HTTP status of a service error, if the call got that far.
fn status<E>(e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

fn backend<E: std::error::Error + 'static>(what: &str, key: &str, e: E) -> BlobError {
    // The SDK's Display is terse ("service error"); the source chain says what happened.
    let mut msg = format!("s3 {what} {key}: {e}");
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    BlobError::Backend(msg)
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, Etag)>, BlobError> {
        let object = self.object(key)?;
        let resp = match self.client.get_object().bucket(&self.bucket).key(&object).send().await {
            Ok(r) => r,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) || status(&e) == Some(404) => {
                return Ok(None)
            }
            Err(e) => return Err(backend("get", &object, e)),
        };
        if resp.content_length().is_some_and(|n| n > BLOB_BYTES_MAX as i64) {
            return Err(BlobError::TooLarge(key.to_string()));
        }
        let etag = resp.e_tag().map(str::to_string).ok_or_else(|| {
            BlobError::Backend(format!("s3 get {object}: the answer has no ETag, so writes could not be conditional"))
        })?;
        let bytes = resp.body.collect().await.map_err(|e| backend("get", &object, e))?.into_bytes();
        if bytes.len() > BLOB_BYTES_MAX {
            return Err(BlobError::TooLarge(key.to_string()));
        }
        Ok(Some((bytes.to_vec(), etag)))
    }

    async fn put(&self, key: &str, bytes: Vec<u8>, cond: Precondition) -> Result<Etag, BlobError> {
        let object = self.object(key)?;
        if bytes.len() > BLOB_BYTES_MAX {
            return Err(BlobError::TooLarge(key.to_string()));
        }
        let req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&object)
            .content_type("application/json")
            .body(ByteStream::from(bytes));
        let replacing = matches!(cond, Precondition::Matches(_));
        let req = match cond {
            Precondition::Absent => req.if_none_match("*"),
            Precondition::Matches(etag) => req.if_match(etag),
        };
        match req.send().await {
            Ok(r) => r.e_tag().map(str::to_string).ok_or_else(|| {
                BlobError::Backend(format!(
                    "s3 put {object}: the answer has no ETag, so the next write could not be conditional"
                ))
            }),
            // 412: the condition failed. 409: a concurrent conditional write
            // to the same key is in progress; one of the two must lose, and
            // S3 makes it this one. 404 on `If-Match`: the version to
            // replace is gone altogether.
            Err(e) if matches!(status(&e), Some(412 | 409)) || (replacing && status(&e) == Some(404)) => {
                Err(BlobError::PreconditionFailed)
            }
            Err(e) => Err(backend("put", &object, e)),
        }
    }

    async fn list(&self, dir: &str) -> Result<Vec<String>, BlobError> {
        let object = self.object(dir)?;
        let resp = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(format!("{object}/"))
            .delimiter("/")
            .max_keys(LIST_MAX as i32)
            .send()
            .await
            .map_err(|e| backend("list", &object, e))?;
        let mut keys: Vec<String> = resp
            .contents()
            .iter()
            .filter_map(|o| o.key())
            .filter_map(|k| k.strip_prefix(self.prefix.as_str()))
            .map(str::to_string)
            .collect();
        keys.sort();
        keys.truncate(LIST_MAX);
        Ok(keys)
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        let object = self.object(key)?;
        match self.client.delete_object().bucket(&self.bucket).key(&object).send().await {
            Ok(_) => Ok(()),
            Err(e) if status(&e) == Some(404) => Ok(()),
            Err(e) => Err(backend("delete", &object, e)),
        }
    }
}
