//! A small OCI distribution client: pull a manifest and blobs, push blobs (HEAD to skip existing,
//! POST + PUT monolithic upload) and a manifest. Enough to assemble an image without Docker.
//!
//! Credentials (ECR's basic auth, a registry's bearer token) live only in memory: they are never
//! logged, never written, and never part of an error message.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use sha2::{Digest, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The manifest kinds asked for, by tag or digest.
fn manifest_accept() -> String {
    [
        OCI_MANIFEST,
        OCI_INDEX,
        DOCKER_MANIFEST,
        DOCKER_MANIFEST_LIST,
    ]
    .join(", ")
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid image reference {reference:?}: {reason}")]
    BadReference {
        reference: String,
        reason: &'static str,
    },
    #[error("{operation} {url}: request failed")]
    Http {
        operation: &'static str,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{operation} {url}: registry answered {status}: {body}")]
    Status {
        operation: &'static str,
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("{what}: expected digest {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{what}: {reason}")]
    BadResponse { what: String, reason: String },
}

/// A secret that never shows up in Debug or Display output.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// How to authenticate to a registry.
#[derive(Debug, Clone)]
pub enum RegistryAuth {
    Anonymous,
    Basic { username: String, password: Secret },
}

/// `registry/repository:tag` or `registry/repository@sha256:...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReference {
    /// Host and optional port.
    pub registry: String,
    pub repository: String,
    /// A tag or a digest.
    pub reference: String,
}

impl FromStr for ImageReference {
    type Err = RegistryError;

    /// Parses Docker-style references; a name without a registry host means Docker Hub.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| RegistryError::BadReference {
            reference: s.to_string(),
            reason,
        };
        if s.is_empty() || s.chars().any(char::is_whitespace) {
            return Err(bad("it is empty or holds whitespace"));
        }
        let (name, reference) = if let Some((name, digest)) = s.split_once('@') {
            if !digest.starts_with("sha256:") || digest.len() != 71 {
                return Err(bad("a digest must be sha256:<64 hex digits>"));
            }
            (name, digest.to_string())
        } else {
            // A colon after the last slash separates the tag (a colon before it is a port).
            let last_slash = s.rfind('/').map(|i| i + 1).unwrap_or(0);
            match s[last_slash..].rfind(':') {
                Some(i) => (&s[..last_slash + i], s[last_slash + i + 1..].to_string()),
                None => (s, "latest".to_string()),
            }
        };
        if reference.is_empty() {
            return Err(bad("the tag is empty"));
        }
        let (registry, repository) = match name.split_once('/') {
            Some((host, rest))
                if host.contains('.') || host.contains(':') || host == "localhost" =>
            {
                (host.to_string(), rest.to_string())
            }
            _ if name.contains('/') => ("registry-1.docker.io".to_string(), name.to_string()),
            _ => (
                "registry-1.docker.io".to_string(),
                format!("library/{name}"),
            ),
        };
        if repository.is_empty() || repository.starts_with('/') || repository.ends_with('/') {
            return Err(bad("the repository name is empty"));
        }
        Ok(ImageReference {
            registry,
            repository,
            reference,
        })
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sep = if self.reference.starts_with("sha256:") {
            '@'
        } else {
            ':'
        };
        write!(
            f,
            "{}/{}{sep}{}",
            self.registry, self.repository, self.reference
        )
    }
}

/// The `sha256:<hex>` digest of some bytes.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The base URL of a registry host: plain HTTP for loopback hosts (a local test registry), HTTPS
/// otherwise. An explicit `http://` or `https://` prefix wins.
pub fn registry_base_url(registry: &str) -> String {
    if registry.starts_with("http://") || registry.starts_with("https://") {
        return registry.trim_end_matches('/').to_string();
    }
    let host = registry
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(registry);
    let loopback = matches!(host, "localhost" | "127.0.0.1" | "[::1]");
    format!("{}://{registry}", if loopback { "http" } else { "https" })
}

/// A manifest as fetched: its media type, raw bytes and digest.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub media_type: String,
    pub bytes: Vec<u8>,
    pub digest: String,
}

/// A client for one registry.
pub struct RegistryClient {
    http: reqwest::Client,
    base: String,
    auth: RegistryAuth,
    /// Bearer tokens per scope, for registries that answer 401 with a token challenge.
    tokens: Mutex<HashMap<String, Secret>>,
}

impl RegistryClient {
    /// `registry` is a host\[:port\] or a base URL.
    pub fn new(registry: &str, auth: RegistryAuth) -> Result<Self, RegistryError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("dqetl/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| RegistryError::Http {
                operation: "build HTTP client",
                url: registry.to_string(),
                source,
            })?;
        Ok(RegistryClient {
            http,
            base: registry_base_url(registry),
            auth,
            tokens: Mutex::new(HashMap::new()),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Fetches a manifest (or index) by tag or digest, checking its digest when asked by digest.
    pub async fn get_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        let url = format!("{}/v2/{repository}/manifests/{reference}", self.base);
        let resp = self
            .send("get manifest", repository, Method::GET, &url, |r| {
                r.header(ACCEPT, manifest_accept())
            })
            .await?;
        let resp = expect_status(resp, "get manifest", &url, &[StatusCode::OK]).await?;
        let media_type = header_str(&resp, CONTENT_TYPE.as_str()).unwrap_or_default();
        let bytes = resp
            .bytes()
            .await
            .map_err(|source| RegistryError::Http {
                operation: "get manifest",
                url: url.clone(),
                source,
            })?
            .to_vec();
        let digest = digest_of(&bytes);
        if reference.starts_with("sha256:") && digest != reference {
            return Err(RegistryError::DigestMismatch {
                what: url,
                expected: reference.to_string(),
                actual: digest,
            });
        }
        // Registries may add parameters to the content type; the manifest's own field is the truth.
        let media_type = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| {
                v.get("mediaType")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| {
                media_type
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            });
        Ok(FetchedManifest {
            media_type,
            bytes,
            digest,
        })
    }

    /// True when the registry has a manifest under this tag or digest.
    pub async fn manifest_exists(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<bool, RegistryError> {
        let url = format!("{}/v2/{repository}/manifests/{reference}", self.base);
        let resp = self
            .send("head manifest", repository, Method::HEAD, &url, |r| {
                r.header(ACCEPT, manifest_accept())
            })
            .await?;
        match resp.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => expect_status(resp, "head manifest", &url, &[StatusCode::OK])
                .await
                .map(|_| true),
        }
    }

    /// Downloads a blob and checks its digest.
    pub async fn get_blob(&self, repository: &str, digest: &str) -> Result<Vec<u8>, RegistryError> {
        let url = format!("{}/v2/{repository}/blobs/{digest}", self.base);
        let resp = self
            .send("get blob", repository, Method::GET, &url, |r| r)
            .await?;
        let resp = expect_status(resp, "get blob", &url, &[StatusCode::OK]).await?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|source| RegistryError::Http {
                operation: "get blob",
                url: url.clone(),
                source,
            })?
            .to_vec();
        let actual = digest_of(&bytes);
        if actual != digest {
            return Err(RegistryError::DigestMismatch {
                what: url,
                expected: digest.to_string(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// True when the repository already holds this blob.
    pub async fn blob_exists(&self, repository: &str, digest: &str) -> Result<bool, RegistryError> {
        let url = format!("{}/v2/{repository}/blobs/{digest}", self.base);
        let resp = self
            .send("head blob", repository, Method::HEAD, &url, |r| r)
            .await?;
        match resp.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => expect_status(resp, "head blob", &url, &[StatusCode::OK])
                .await
                .map(|_| true),
        }
    }

    /// Uploads a blob in one request (POST to open the upload, PUT with the content and digest).
    pub async fn push_blob(
        &self,
        repository: &str,
        digest: &str,
        bytes: Vec<u8>,
    ) -> Result<(), RegistryError> {
        let url = format!("{}/v2/{repository}/blobs/uploads/", self.base);
        let resp = self
            .send("start blob upload", repository, Method::POST, &url, |r| r)
            .await?;
        let resp = expect_status(resp, "start blob upload", &url, &[StatusCode::ACCEPTED]).await?;
        let location =
            header_str(&resp, LOCATION.as_str()).ok_or_else(|| RegistryError::BadResponse {
                what: url.clone(),
                reason: "the upload answer has no Location header".into(),
            })?;
        let upload_url = if location.starts_with("http://") || location.starts_with("https://") {
            location
        } else {
            format!("{}{location}", self.base)
        };
        let sep = if upload_url.contains('?') { '&' } else { '?' };
        let put_url = format!("{upload_url}{sep}digest={digest}");
        let len = bytes.len();
        let body = bytes::Bytes::from(bytes);
        let resp = self
            .send("upload blob", repository, Method::PUT, &put_url, |r| {
                r.header(CONTENT_TYPE, "application/octet-stream")
                    .header(reqwest::header::CONTENT_LENGTH, len)
                    .body(body.clone())
            })
            .await?;
        expect_status(
            resp,
            "upload blob",
            &strip_query(&put_url),
            &[StatusCode::CREATED],
        )
        .await?;
        Ok(())
    }

    /// Pushes a manifest under a tag (or its digest) and checks the digest the registry computed.
    pub async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<String, RegistryError> {
        let url = format!("{}/v2/{repository}/manifests/{reference}", self.base);
        let body = bytes::Bytes::copy_from_slice(bytes);
        let resp = self
            .send("put manifest", repository, Method::PUT, &url, |r| {
                r.header(CONTENT_TYPE, media_type).body(body.clone())
            })
            .await?;
        let resp = expect_status(
            resp,
            "put manifest",
            &url,
            &[StatusCode::CREATED, StatusCode::OK],
        )
        .await?;
        let ours = digest_of(bytes);
        if let Some(theirs) = header_str(&resp, "docker-content-digest")
            && theirs != ours
        {
            return Err(RegistryError::DigestMismatch {
                what: url,
                expected: ours,
                actual: theirs,
            });
        }
        Ok(ours)
    }

    /// Sends a request with the configured credentials; on a bearer challenge, fetches a token
    /// for the challenged scope and retries once.
    async fn send(
        &self,
        operation: &'static str,
        repository: &str,
        method: Method,
        url: &str,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let scope_key = format!("{repository} {}", method.as_str());
        let request = |token: Option<&Secret>| {
            let mut r = build(self.http.request(method.clone(), url));
            if let Some(t) = token {
                r = r.header(AUTHORIZATION, format!("Bearer {}", t.expose()));
            } else if let RegistryAuth::Basic { username, password } = &self.auth {
                r = r.basic_auth(username, Some(password.expose()));
            }
            r
        };
        let cached = self
            .tokens
            .lock()
            .ok()
            .and_then(|t| t.get(&scope_key).cloned());
        let http_err = |source| RegistryError::Http {
            operation,
            url: strip_query(url),
            source,
        };
        let resp = request(cached.as_ref()).send().await.map_err(http_err)?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let Some(challenge) =
            header_str(&resp, WWW_AUTHENTICATE.as_str()).and_then(|h| BearerChallenge::parse(&h))
        else {
            return Ok(resp);
        };
        let token = self.fetch_token(&challenge).await?;
        if let Ok(mut t) = self.tokens.lock() {
            t.insert(scope_key, token.clone());
        }
        request(Some(&token)).send().await.map_err(http_err)
    }

    async fn fetch_token(&self, challenge: &BearerChallenge) -> Result<Secret, RegistryError> {
        let mut query = Vec::new();
        if let Some(s) = &challenge.service {
            query.push(("service", s.as_str()));
        }
        if let Some(s) = &challenge.scope {
            query.push(("scope", s.as_str()));
        }
        let mut req = self.http.get(&challenge.realm).query(&query);
        if let RegistryAuth::Basic { username, password } = &self.auth {
            req = req.basic_auth(username, Some(password.expose()));
        }
        let url = challenge.realm.clone();
        let resp = req.send().await.map_err(|source| RegistryError::Http {
            operation: "get registry token",
            url: url.clone(),
            source,
        })?;
        let resp = expect_status(resp, "get registry token", &url, &[StatusCode::OK]).await?;
        let body: serde_json::Value = resp.json().await.map_err(|source| RegistryError::Http {
            operation: "get registry token",
            url: url.clone(),
            source,
        })?;
        body.get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .map(|t| Secret::new(t.to_string()))
            .ok_or_else(|| RegistryError::BadResponse {
                what: url,
                reason: "the token answer holds no token".into(),
            })
    }
}

/// A `WWW-Authenticate: Bearer realm="...",service="...",scope="..."` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BearerChallenge {
    pub realm: String,
    pub service: Option<String>,
    pub scope: Option<String>,
}

impl BearerChallenge {
    pub fn parse(header: &str) -> Option<Self> {
        let rest = header
            .trim()
            .strip_prefix("Bearer ")
            .or_else(|| header.trim().strip_prefix("bearer "))?;
        let mut params = HashMap::new();
        let mut remaining = rest.trim();
        while !remaining.is_empty() {
            let (key, after) = remaining.split_once('=')?;
            let after = after.trim_start();
            let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
                let end = quoted.find('"')?;
                (&quoted[..end], &quoted[end + 1..])
            } else {
                let end = after.find(',').unwrap_or(after.len());
                (&after[..end], &after[end..])
            };
            params.insert(key.trim().to_ascii_lowercase(), value.to_string());
            remaining = next.trim_start().trim_start_matches(',').trim_start();
        }
        Some(BearerChallenge {
            realm: params.remove("realm")?,
            service: params.remove("service"),
            scope: params.remove("scope"),
        })
    }
}

fn header_str(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Upload URLs carry state in their query; error messages keep only the path.
fn strip_query(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_string()
}

async fn expect_status(
    resp: Response,
    operation: &'static str,
    url: &str,
    ok: &[StatusCode],
) -> Result<Response, RegistryError> {
    if ok.contains(&resp.status()) {
        return Ok(resp);
    }
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let body: String = body.chars().take(500).collect();
    Err(RegistryError::Status {
        operation,
        url: strip_query(url),
        status,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_registry_repository_and_tag() {
        let r: ImageReference = "public.ecr.aws/docker/library/debian:bookworm-slim"
            .parse()
            .unwrap();
        assert_eq!(r.registry, "public.ecr.aws");
        assert_eq!(r.repository, "docker/library/debian");
        assert_eq!(r.reference, "bookworm-slim");

        let r: ImageReference = "127.0.0.1:5000/base/tiny".parse().unwrap();
        assert_eq!(
            (
                r.registry.as_str(),
                r.repository.as_str(),
                r.reference.as_str()
            ),
            ("127.0.0.1:5000", "base/tiny", "latest")
        );

        let r: ImageReference = "debian:12".parse().unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("registry-1.docker.io", "library/debian")
        );

        let digest = format!("sha256:{}", "a".repeat(64));
        let r: ImageReference = format!("localhost:5000/x@{digest}").parse().unwrap();
        assert_eq!(r.reference, digest);
        assert_eq!(r.to_string(), format!("localhost:5000/x@{digest}"));
    }

    #[test]
    fn rejects_malformed_references() {
        for bad in ["", "a b", "x@sha256:short", "host.io/x:"] {
            assert!(bad.parse::<ImageReference>().is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback_registries_use_plain_http() {
        assert_eq!(registry_base_url("127.0.0.1:5000"), "http://127.0.0.1:5000");
        assert_eq!(registry_base_url("localhost:5000"), "http://localhost:5000");
        assert_eq!(
            registry_base_url("public.ecr.aws"),
            "https://public.ecr.aws"
        );
        assert_eq!(
            registry_base_url("http://10.0.0.1:5000/"),
            "http://10.0.0.1:5000"
        );
    }

    #[test]
    fn parses_a_bearer_challenge() {
        let c = BearerChallenge::parse(
            r#"Bearer realm="https://public.ecr.aws/token/",service="public.ecr.aws",scope="aws""#,
        )
        .unwrap();
        assert_eq!(c.realm, "https://public.ecr.aws/token/");
        assert_eq!(c.service.as_deref(), Some("public.ecr.aws"));
        assert_eq!(c.scope.as_deref(), Some("aws"));
        assert_eq!(BearerChallenge::parse(r#"Basic realm="x""#), None);
    }

    #[test]
    fn secrets_do_not_print() {
        let auth = RegistryAuth::Basic {
            username: "AWS".into(),
            password: Secret::new("hunter2".into()),
        };
        assert!(!format!("{auth:?}").contains("hunter2"));
    }
}
