//! The S3 requests the load generator issues, each bounded by a timeout and
//! each GET checked byte for byte against the generated contents.

use std::future::Future;
use std::time::Duration;

use anyhow::bail;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, SdkBody};
use aws_sdk_s3::types::{
    BucketLocationConstraint, ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, CreateBucketConfiguration,
};

use crate::data::{GenBody, Verifier, content_key, generate};

pub enum OpError {
    Failed(String),
    Mismatch(String),
}

type OpResult<T> = Result<T, OpError>;

pub struct Endpoint {
    pub url: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
    /// An https endpoint's CA (PEM): the SDK's https client trusts it and
    /// nothing else (`sillok dev --tls` writes it as AWS_CA_BUNDLE).
    pub ca_bundle: Option<std::path::PathBuf>,
}

/// aws-sdk-s3's https client (its default: rustls on aws-lc-rs) trusting
/// only the CAs in `ca`, checked first (the SDK panics on a bad one).
fn https_client_trusting(ca: &std::path::Path) -> anyhow::Result<aws_sdk_s3::config::SharedHttpClient> {
    use anyhow::Context;
    use aws_smithy_http_client::tls;
    sillok_tls::config::root_store(ca).with_context(|| format!("--ca-bundle {}", ca.display()))?;
    let pem = std::fs::read(ca).with_context(|| format!("--ca-bundle {}", ca.display()))?;
    let context =
        tls::TlsContext::builder().with_trust_store(tls::TrustStore::empty().with_pem_certificate(pem)).build()?;
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::AwsLc))
        .tls_context(context)
        .build_https())
}

pub struct S3 {
    client: Client,
    pub bucket: String,
    seed: u64,
    timeout: Duration,
    stream_threshold: u64,
    checksums: bool,
    region: String,
}

fn short(mut s: String) -> String {
    const MAX: usize = 400;
    if s.len() > MAX {
        let mut cut = MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// "PutObject: HTTP 503 SlowDown: message" for an S3 error response; the full
/// error chain for anything else (connection refused, unparsable response...).
fn describe<E>(what: &str, e: &SdkError<E, HttpResponse>) -> String
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
{
    match e {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let hint = if status == 403 { " (check the access key, secret key and region)" } else { "" };
            match e.code() {
                Some(code) => format!("{what}: HTTP {status} {code}: {}{hint}", e.message().unwrap_or("")),
                None => format!("{what}: HTTP {status}{hint}: {}", DisplayErrorContext(se.err())),
            }
        }
        _ => format!("{what}: {}", DisplayErrorContext(e)),
    }
}

pub fn check_endpoint(url: &str) -> anyhow::Result<()> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| anyhow::anyhow!("endpoint {url:?} must start with http:// or https://"))?;
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() || authority.contains(char::is_whitespace) {
        bail!("endpoint {url:?} has no host[:port]");
    }
    if let Some((_, port)) = authority.rsplit_once(':')
        && !authority.ends_with(']')
        && port.parse::<u16>().is_err()
    {
        bail!("endpoint {url:?} has an invalid port {port:?}");
    }
    Ok(())
}

impl S3 {
    pub fn new(
        ep: &Endpoint,
        bucket: String,
        seed: u64,
        timeout: Duration,
        retries: u32,
        stream_threshold: u64,
        checksums: bool,
    ) -> anyhow::Result<Self> {
        let creds = Credentials::new(&ep.access_key, &ep.secret_key, None, None, "loadgen");
        let retry =
            if retries == 0 { RetryConfig::disabled() } else { RetryConfig::standard().with_max_attempts(retries + 1) };
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(ep.region.clone()))
            .endpoint_url(&ep.url)
            .credentials_provider(creds)
            .force_path_style(true)
            .retry_config(retry)
            .timeout_config(TimeoutConfig::builder().connect_timeout(Duration::from_secs(5)).build())
            // Our own per-request timeout bounds every call; the SDK's stall
            // detector would only turn a slow server into a different error.
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .request_checksum_calculation(if checksums {
                RequestChecksumCalculation::WhenSupported
            } else {
                RequestChecksumCalculation::WhenRequired
            })
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        let conf = match &ep.ca_bundle {
            Some(ca) => conf.http_client(https_client_trusting(ca)?),
            None => conf,
        };
        Ok(S3 {
            client: Client::from_conf(conf.build()),
            bucket,
            seed,
            timeout,
            stream_threshold,
            checksums,
            region: ep.region.clone(),
        })
    }

    async fn call<T, E>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    ) -> OpResult<T>
    where
        E: std::error::Error + ProvideErrorMetadata + 'static,
    {
        match tokio::time::timeout(self.timeout, fut).await {
            Err(_) => Err(OpError::Failed(format!("{what}: no response within {:?}", self.timeout))),
            Ok(Err(e)) => Err(OpError::Failed(short(describe(what, &e)))),
            Ok(Ok(v)) => Ok(v),
        }
    }

    /// Bytes `[start, end)` of `name` as a request body: in memory when small,
    /// otherwise generated frame by frame while it is sent.
    fn body(&self, name: &str, start: u64, end: u64) -> ByteStream {
        let key = content_key(self.seed, name);
        if end - start <= self.stream_threshold {
            ByteStream::from(generate(key, start, (end - start) as usize))
        } else {
            ByteStream::new(SdkBody::retryable(move || SdkBody::from_body_1_x(GenBody::new(key, start, end))))
        }
    }

    /// Makes sure the bucket exists; errors here mean the endpoint is unusable.
    pub async fn ensure_bucket(&self) -> anyhow::Result<()> {
        let head = tokio::time::timeout(self.timeout, self.client.head_bucket().bucket(&self.bucket).send()).await;
        match head {
            Err(_) => bail!("HeadBucket {}: no response within {:?}", self.bucket, self.timeout),
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(SdkError::ServiceError(e))) if e.raw().status().as_u16() == 404 => {}
            Ok(Err(e @ SdkError::ServiceError(_))) => {
                bail!("{}", describe(&format!("HeadBucket {}", self.bucket), &e))
            }
            Ok(Err(e)) => bail!("cannot reach the endpoint: {}", DisplayErrorContext(&e)),
        }
        let mut req = self.client.create_bucket().bucket(&self.bucket);
        if self.region != "us-east-1" {
            req = req.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(self.region.as_str()))
                    .build(),
            );
        }
        match tokio::time::timeout(self.timeout, req.send()).await {
            Err(_) => bail!("CreateBucket {}: no response within {:?}", self.bucket, self.timeout),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if matches!(e.code(), Some("BucketAlreadyOwnedByYou")) => Ok(()),
            Ok(Err(e)) => bail!("{}", describe(&format!("CreateBucket {}", self.bucket), &e)),
        }
    }

    pub async fn put(&self, name: &str, size: u64, content_type: Option<&str>) -> OpResult<u64> {
        let req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(name)
            .content_length(size as i64)
            .set_content_type(content_type.map(str::to_owned))
            .body(self.body(name, 0, size));
        self.call("PutObject", req.send()).await?;
        Ok(size)
    }

    pub async fn put_multipart(&self, name: &str, size: u64, part_size: u64) -> OpResult<u64> {
        let algo = self.checksums.then_some(ChecksumAlgorithm::Crc32);
        let create = self
            .call(
                "CreateMultipartUpload",
                self.client
                    .create_multipart_upload()
                    .bucket(&self.bucket)
                    .key(name)
                    .set_checksum_algorithm(algo.clone())
                    .send(),
            )
            .await?;
        let Some(upload_id) = create.upload_id().map(str::to_owned) else {
            return Err(OpError::Failed("CreateMultipartUpload: response has no UploadId".into()));
        };
        let parts = async {
            let mut parts = Vec::new();
            let mut start = 0u64;
            let mut number = 1i32;
            while start < size {
                let end = (start + part_size).min(size);
                let out = self
                    .call(
                        "UploadPart",
                        self.client
                            .upload_part()
                            .bucket(&self.bucket)
                            .key(name)
                            .upload_id(&upload_id)
                            .part_number(number)
                            .content_length((end - start) as i64)
                            .set_checksum_algorithm(algo.clone())
                            .body(self.body(name, start, end))
                            .send(),
                    )
                    .await?;
                parts.push(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(out.e_tag().map(str::to_owned))
                        .set_checksum_crc32(out.checksum_crc32().map(str::to_owned))
                        .build(),
                );
                start = end;
                number += 1;
            }
            self.call(
                "CompleteMultipartUpload",
                self.client
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(name)
                    .upload_id(&upload_id)
                    .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
                    .send(),
            )
            .await
        }
        .await;
        match parts {
            Ok(_) => Ok(size),
            Err(e) => {
                // Best effort; the original error is what gets reported.
                let abort =
                    self.client.abort_multipart_upload().bucket(&self.bucket).key(name).upload_id(&upload_id).send();
                let _ = tokio::time::timeout(self.timeout, abort).await;
                Err(e)
            }
        }
    }

    /// GETs `name` (whole, or `[start, end)`) and checks every byte.
    pub async fn get(&self, name: &str, size: u64, range: Option<(u64, u64)>) -> OpResult<u64> {
        let mut req = self.client.get_object().bucket(&self.bucket).key(name);
        if let Some((s, e)) = range {
            req = req.range(format!("bytes={}-{}", s, e - 1));
        }
        let out = self.call("GetObject", req.send()).await?;
        let (start, end) = range.unwrap_or((0, size));
        let want = end - start;
        if let Some(cl) = out.content_length()
            && cl as u64 != want
        {
            return Err(OpError::Mismatch(format!(
                "GET {name} bytes {start}..{end}: Content-Length {cl}, expected {want}"
            )));
        }
        let mut verifier = Verifier::new(content_key(self.seed, name), start, end);
        let mut body = out.body;
        let read = async {
            while let Some(chunk) = body.next().await {
                match chunk {
                    Ok(c) => verifier.feed(&c),
                    Err(e) => return Err(format!("reading body: {}", DisplayErrorContext(&e))),
                }
            }
            Ok(())
        };
        match tokio::time::timeout(self.timeout, read).await {
            Err(_) => {
                return Err(OpError::Failed(format!("GET {name}: body not complete within {:?}", self.timeout)));
            }
            Ok(Err(e)) => return Err(OpError::Failed(short(format!("GET {name}: {e}")))),
            Ok(Ok(())) => {}
        }
        if let Some(off) = verifier.mismatch_at {
            return Err(OpError::Mismatch(format!(
                "GET {name} bytes {start}..{end}: body differs from what was written, first at byte {off}"
            )));
        }
        let got = verifier.received(start);
        if got != want {
            return Err(OpError::Mismatch(format!(
                "GET {name} bytes {start}..{end}: body has {got} bytes, expected {want}"
            )));
        }
        Ok(want)
    }

    pub async fn head(&self, name: &str, size: u64) -> OpResult<u64> {
        let out = self.call("HeadObject", self.client.head_object().bucket(&self.bucket).key(name).send()).await?;
        match out.content_length() {
            Some(cl) if cl as u64 == size => Ok(0),
            other => Err(OpError::Mismatch(format!("HEAD {name}: Content-Length {other:?}, expected {size}"))),
        }
    }

    pub async fn delete(&self, name: &str) -> OpResult<u64> {
        self.call("DeleteObject", self.client.delete_object().bucket(&self.bucket).key(name).send()).await?;
        Ok(0)
    }

    /// One ListObjectsV2 page; returns the number of keys listed.
    pub async fn list(&self, prefix: &str) -> OpResult<u64> {
        let out = self
            .call(
                "ListObjectsV2",
                self.client.list_objects_v2().bucket(&self.bucket).prefix(prefix).max_keys(1000).send(),
            )
            .await?;
        let keys = out.contents();
        if let Some(bad) = keys.iter().filter_map(|o| o.key()).find(|k| !k.starts_with(prefix)) {
            return Err(OpError::Mismatch(format!("LIST prefix {prefix:?} returned key {bad:?}")));
        }
        Ok(keys.len() as u64)
    }
}
