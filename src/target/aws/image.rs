//! The processor image, assembled without Docker: a base image's layers (pulled through the OCI
//! distribution API) plus one layer holding the dqetl binary and the config, an OCI config that runs
//! `dqetl process`, and an OCI manifest. The app layer is reproducible (fixed owners, modes and
//! times, gzip without a timestamp), so the same binary and config give the same digest and a
//! rerun pushes nothing.

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;

use flate2::{Compression, GzBuilder};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::target::aws::registry::{
    DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, ImageReference, OCI_INDEX, OCI_MANIFEST, RegistryClient,
    RegistryError, digest_of,
};

pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Where the image puts dqetl and its config.
pub const BINARY_PATH: &str = "/usr/local/bin/dqetl";
pub const CONFIG_PATH: &str = "/etc/dqetl/tables.yaml";

/// The default base: Debian 12 slim from ECR Public (no Docker Hub rate limits), whose glibc is at
/// least the build machine's when dqetl is built on Debian 12 or older.
pub const DEFAULT_BASE_IMAGE: &str = "public.ecr.aws/docker/library/debian:bookworm-slim";

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing the image layer")]
    Write(#[source] io::Error),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{what}: {reason}")]
    BadManifest { what: String, reason: String },
    #[error("base image {reference} has no {wanted} variant (it has: {available})")]
    NoPlatform {
        reference: String,
        wanted: String,
        available: String,
    },
}

/// A content descriptor (OCI image spec).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of the running binary (the image carries this very binary).
    pub fn current() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u32,
    #[serde(default)]
    media_type: Option<String>,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

/// A compressed layer with both digests.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Digest of the gzip bytes (what the manifest names).
    pub digest: String,
    /// Digest of the uncompressed tar (what the config's rootfs names).
    pub diff_id: String,
    pub bytes: Vec<u8>,
}

/// What goes into the app layer.
#[derive(Debug, Clone)]
pub struct AppFiles {
    /// The dqetl executable (in production the running one, `std::env::current_exe`).
    pub binary: PathBuf,
    /// The tables.yaml the tasks run with.
    pub config_yaml: Vec<u8>,
}

/// Builds the reproducible app layer: `/usr/local/bin/dqetl` and `/etc/dqetl/tables.yaml`.
pub fn build_app_layer(files: &AppFiles) -> Result<Layer, ImageError> {
    let read_err = |source| ImageError::Read {
        path: files.binary.clone(),
        source,
    };
    let binary = File::open(&files.binary).map_err(read_err)?;
    let binary_len = binary.metadata().map_err(read_err)?.len();

    let gz = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::default());
    let mut hashing = HashingWriter {
        inner: gz,
        hasher: Sha256::new(),
    };
    {
        let mut tar = tar::Builder::new(&mut hashing);
        for dir in ["etc/", "etc/dqetl/", "usr/", "usr/local/", "usr/local/bin/"] {
            let mut h = header(tar::EntryType::Directory, 0o755, 0);
            tar.append_data(&mut h, dir, io::empty())
                .map_err(ImageError::Write)?;
        }
        let mut h = header(
            tar::EntryType::Regular,
            0o644,
            files.config_yaml.len() as u64,
        );
        tar.append_data(&mut h, &CONFIG_PATH[1..], files.config_yaml.as_slice())
            .map_err(ImageError::Write)?;
        let mut h = header(tar::EntryType::Regular, 0o755, binary_len);
        tar.append_data(&mut h, &BINARY_PATH[1..], io::BufReader::new(binary))
            .map_err(read_err)?;
        tar.finish().map_err(ImageError::Write)?;
    }
    let diff_id = format!("sha256:{}", hex::encode(hashing.hasher.finalize()));
    let bytes = hashing.inner.finish().map_err(ImageError::Write)?;
    Ok(Layer {
        digest: digest_of(&bytes),
        diff_id,
        bytes,
    })
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(size);
    h
}

/// Passes bytes through while hashing them (the diff id of the uncompressed tar).
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The base image, resolved to one platform: its config and layers.
#[derive(Debug, Clone)]
pub struct BaseImage {
    pub reference: ImageReference,
    pub config: Value,
    pub layers: Vec<Descriptor>,
}

/// Fetches the base image's manifest (choosing the platform from an index) and its config.
pub async fn resolve_base(
    client: &RegistryClient,
    reference: &ImageReference,
    platform: &Platform,
) -> Result<BaseImage, ImageError> {
    let repo = &reference.repository;
    let mut fetched = client.get_manifest(repo, &reference.reference).await?;
    if fetched.media_type == OCI_INDEX || fetched.media_type == DOCKER_MANIFEST_LIST {
        let index: Index = parse_json(&fetched.bytes, &reference.to_string())?;
        let chosen = index
            .manifests
            .iter()
            .find(|m| {
                m.platform
                    .as_ref()
                    .is_some_and(|p| p.os == platform.os && p.architecture == platform.architecture)
            })
            .ok_or_else(|| ImageError::NoPlatform {
                reference: reference.to_string(),
                wanted: format!("{}/{}", platform.os, platform.architecture),
                available: index
                    .manifests
                    .iter()
                    .filter_map(|m| {
                        m.platform
                            .as_ref()
                            .map(|p| format!("{}/{}", p.os, p.architecture))
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        fetched = client.get_manifest(repo, &chosen.digest).await?;
    }
    if fetched.media_type != OCI_MANIFEST && fetched.media_type != DOCKER_MANIFEST {
        return Err(ImageError::BadManifest {
            what: reference.to_string(),
            reason: format!("unsupported manifest type {:?}", fetched.media_type),
        });
    }
    let manifest: Manifest = parse_json(&fetched.bytes, &reference.to_string())?;
    let config_bytes = client.get_blob(repo, &manifest.config.digest).await?;
    let config: Value = parse_json(&config_bytes, &format!("{reference} config"))?;
    Ok(BaseImage {
        reference: reference.clone(),
        config,
        layers: manifest.layers,
    })
}

fn parse_json<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| ImageError::BadManifest {
        what: what.to_string(),
        reason: format!("not a valid manifest: {e}"),
    })
}

/// The finished image: config and manifest bytes, and every layer it names.
#[derive(Debug, Clone)]
pub struct AssembledImage {
    pub config: Vec<u8>,
    pub config_digest: String,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    /// Base layers (descriptors to copy from the base registry) then the app layer.
    pub base_layers: Vec<Descriptor>,
    pub app_layer: Layer,
}

impl AssembledImage {
    /// The content-addressed tag the image is pushed under: `<version>-<12 hex of the digest>`.
    pub fn tag(&self) -> String {
        let hex = self.manifest_digest.trim_start_matches("sha256:");
        format!(
            "{}-{}",
            env!("CARGO_PKG_VERSION"),
            &hex[..12.min(hex.len())]
        )
    }
}

/// Builds the image config and manifest on top of the base (pure).
pub fn assemble(base: &BaseImage, app_layer: Layer) -> Result<AssembledImage, ImageError> {
    let config = image_config(
        &base.config,
        &app_layer.diff_id,
        &base.reference.to_string(),
    )?;
    let config_bytes = serde_json::to_vec(&config).map_err(|e| ImageError::BadManifest {
        what: "image config".into(),
        reason: e.to_string(),
    })?;
    let config_digest = digest_of(&config_bytes);
    let mut layers: Vec<Descriptor> = base
        .layers
        .iter()
        .map(|l| Descriptor {
            // Docker's gzip layers are byte-for-byte OCI gzip layers.
            media_type: if l.media_type == DOCKER_LAYER_GZIP {
                OCI_LAYER_GZIP.into()
            } else {
                l.media_type.clone()
            },
            ..l.clone()
        })
        .collect();
    let base_layers = layers.clone();
    layers.push(Descriptor {
        media_type: OCI_LAYER_GZIP.into(),
        digest: app_layer.digest.clone(),
        size: app_layer.bytes.len() as u64,
        platform: None,
    });
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        config: Descriptor {
            media_type: OCI_CONFIG.into(),
            digest: config_digest.clone(),
            size: config_bytes.len() as u64,
            platform: None,
        },
        layers,
    };
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| ImageError::BadManifest {
        what: "image manifest".into(),
        reason: e.to_string(),
    })?;
    Ok(AssembledImage {
        manifest_digest: digest_of(&manifest_bytes),
        manifest: manifest_bytes,
        config: config_bytes,
        config_digest,
        base_layers,
        app_layer,
    })
}

/// The base config with dqetl's entrypoint, command, environment and layer added.
pub fn image_config(
    base: &Value,
    app_diff_id: &str,
    base_reference: &str,
) -> Result<Value, ImageError> {
    let bad = |reason: &str| ImageError::BadManifest {
        what: "base image config".into(),
        reason: reason.into(),
    };
    let mut config = base.clone();
    let root = config
        .as_object_mut()
        .ok_or_else(|| bad("not a JSON object"))?;
    let created = root.get("created").cloned().unwrap_or(Value::Null);

    let run = root.entry("config").or_insert_with(|| json!({}));
    let run = run
        .as_object_mut()
        .ok_or_else(|| bad("`config` is not an object"))?;
    let mut env: Vec<Value> = run
        .get("Env")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            e.as_str()
                .is_some_and(|s| !s.starts_with("DQETL_CONFIG=") && !s.starts_with("DQETL_TARGET="))
        })
        .collect();
    env.push(json!(format!("DQETL_CONFIG={CONFIG_PATH}")));
    env.push(json!("DQETL_TARGET=aws"));
    run.insert("Env".into(), Value::Array(env));
    run.insert("Entrypoint".into(), json!([BINARY_PATH]));
    run.insert("Cmd".into(), json!(["process"]));
    // Least privilege: the tasks need no root; /tmp is writable for scratch files.
    run.insert("User".into(), json!("65534:65534"));
    run.insert("WorkingDir".into(), json!("/tmp"));
    let labels = run.entry("Labels").or_insert_with(|| json!({}));
    if let Some(labels) = labels.as_object_mut() {
        labels.insert("org.opencontainers.image.title".into(), json!("dqetl"));
        labels.insert(
            "org.opencontainers.image.version".into(),
            json!(env!("CARGO_PKG_VERSION")),
        );
        labels.insert(
            "org.opencontainers.image.base.name".into(),
            json!(base_reference),
        );
    }

    let rootfs = root
        .entry("rootfs")
        .or_insert_with(|| json!({"type": "layers", "diff_ids": []}));
    let diff_ids = rootfs
        .get_mut("diff_ids")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| bad("`rootfs.diff_ids` is missing"))?;
    diff_ids.push(json!(app_diff_id));

    let history = root.entry("history").or_insert_with(|| json!([]));
    if let Some(h) = history.as_array_mut() {
        h.push(json!({"created": created, "created_by": "dqetl deploy: /usr/local/bin/dqetl and /etc/dqetl/tables.yaml"}));
    }
    Ok(config)
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PushReport {
    pub manifest_digest: String,
    pub tag: String,
    pub blobs_uploaded: usize,
    pub blobs_present: usize,
    /// The registry already had this exact image.
    pub already_present: bool,
}

/// Pushes the image: blobs the target lacks (base layers copied from the base registry), then the
/// manifest under its content tag and `latest`.
pub async fn push(
    image: &AssembledImage,
    base_client: &RegistryClient,
    base: &ImageReference,
    target: &RegistryClient,
    repository: &str,
    mut on_blob: impl FnMut(&str),
) -> Result<PushReport, ImageError> {
    let already_present = target
        .manifest_exists(repository, &image.manifest_digest)
        .await?;
    let mut uploaded = 0;
    let mut present = 0;
    for layer in &image.base_layers {
        if target.blob_exists(repository, &layer.digest).await? {
            present += 1;
            continue;
        }
        on_blob(&format!("copying base layer {}", short(&layer.digest)));
        let bytes = base_client
            .get_blob(&base.repository, &layer.digest)
            .await?;
        target.push_blob(repository, &layer.digest, bytes).await?;
        uploaded += 1;
    }
    for (digest, bytes, what) in [
        (
            &image.app_layer.digest,
            &image.app_layer.bytes,
            "dqetl layer",
        ),
        (&image.config_digest, &image.config, "image config"),
    ] {
        if target.blob_exists(repository, digest).await? {
            present += 1;
            continue;
        }
        on_blob(&format!(
            "uploading {what} {} ({} bytes)",
            short(digest),
            bytes.len()
        ));
        target.push_blob(repository, digest, bytes.clone()).await?;
        uploaded += 1;
    }
    let tag = image.tag();
    for reference in [tag.as_str(), "latest"] {
        target
            .put_manifest(repository, reference, OCI_MANIFEST, &image.manifest)
            .await?;
    }
    Ok(PushReport {
        manifest_digest: image.manifest_digest.clone(),
        tag,
        blobs_uploaded: uploaded,
        blobs_present: present,
        already_present,
    })
}

fn short(digest: &str) -> &str {
    let hex = digest.trim_start_matches("sha256:");
    &hex[..12.min(hex.len())]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &std::path::Path, binary: &[u8], config: &[u8]) -> AppFiles {
        let path = dir.join("dqetl");
        std::fs::write(&path, binary).unwrap();
        AppFiles {
            binary: path,
            config_yaml: config.to_vec(),
        }
    }

    fn entries(layer: &Layer) -> Vec<(String, u32, u64, Vec<u8>)> {
        let gz = flate2::read::GzDecoder::new(layer.bytes.as_slice());
        let mut archive = tar::Archive::new(gz);
        let mut out = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut e = entry.unwrap();
            let path = e.path().unwrap().to_string_lossy().to_string();
            let mode = e.header().mode().unwrap();
            let mtime = e.header().mtime().unwrap();
            let mut data = Vec::new();
            io::Read::read_to_end(&mut e, &mut data).unwrap();
            out.push((path, mode, mtime, data));
        }
        out
    }

    #[test]
    fn the_app_layer_holds_the_binary_and_the_config_at_fixed_paths() {
        let dir = tempfile::tempdir().unwrap();
        let layer =
            build_app_layer(&files(dir.path(), b"\x7fELF fake binary", b"tables: []\n")).unwrap();
        let entries = entries(&layer);
        let binary = entries
            .iter()
            .find(|e| e.0 == "usr/local/bin/dqetl")
            .unwrap();
        assert_eq!(binary.1, 0o755);
        assert_eq!(binary.3, b"\x7fELF fake binary");
        let config = entries
            .iter()
            .find(|e| e.0 == "etc/dqetl/tables.yaml")
            .unwrap();
        assert_eq!(config.1, 0o644);
        assert_eq!(config.3, b"tables: []\n");
        assert!(entries.iter().all(|e| e.2 == 0), "every mtime is fixed");
        assert_eq!(layer.digest, digest_of(&layer.bytes));

        let mut tar = Vec::new();
        io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(layer.bytes.as_slice()),
            &mut tar,
        )
        .unwrap();
        assert_eq!(
            layer.diff_id,
            digest_of(&tar),
            "diff id is the digest of the uncompressed tar"
        );
    }

    #[test]
    fn the_same_inputs_give_the_same_layer_and_a_config_change_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let a = build_app_layer(&files(dir.path(), b"bin", b"a: 1\n")).unwrap();
        let b = build_app_layer(&files(dir.path(), b"bin", b"a: 1\n")).unwrap();
        let c = build_app_layer(&files(dir.path(), b"bin", b"a: 2\n")).unwrap();
        assert_eq!(a.digest, b.digest);
        assert_ne!(a.digest, c.digest);
    }

    #[test]
    fn a_missing_binary_is_named() {
        let err = build_app_layer(&AppFiles {
            binary: "/nonexistent/dqetl".into(),
            config_yaml: vec![],
        })
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/dqetl"), "{err}");
    }

    #[test]
    fn the_config_runs_dqetl_process_on_top_of_the_base() {
        let base = json!({
            "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
            "config": {"Env": ["PATH=/usr/bin", "DQETL_TARGET=local"], "Cmd": ["bash"]},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:base"]},
            "history": [{"created_by": "base"}]
        });
        let c = image_config(&base, "sha256:app", "r/base:1").unwrap();
        assert_eq!(c["config"]["Entrypoint"], json!(["/usr/local/bin/dqetl"]));
        assert_eq!(c["config"]["Cmd"], json!(["process"]));
        assert_eq!(
            c["config"]["Env"],
            json!([
                "PATH=/usr/bin",
                "DQETL_CONFIG=/etc/dqetl/tables.yaml",
                "DQETL_TARGET=aws"
            ])
        );
        assert_eq!(
            c["rootfs"]["diff_ids"],
            json!(["sha256:base", "sha256:app"])
        );
        assert_eq!(c["history"].as_array().unwrap().len(), 2);
        assert_eq!(c["architecture"], "amd64");
    }

    #[test]
    fn assembling_converts_docker_layers_and_appends_the_app_layer() {
        let base = BaseImage {
            reference: "127.0.0.1:5000/base:1".parse().unwrap(),
            config: json!({"rootfs": {"type": "layers", "diff_ids": ["sha256:d"]}, "config": {}}),
            layers: vec![Descriptor {
                media_type: DOCKER_LAYER_GZIP.into(),
                digest: "sha256:b".into(),
                size: 10,
                platform: None,
            }],
        };
        let app = Layer {
            digest: "sha256:a".into(),
            diff_id: "sha256:ad".into(),
            bytes: vec![1, 2, 3],
        };
        let image = assemble(&base, app).unwrap();
        let manifest: Value = serde_json::from_slice(&image.manifest).unwrap();
        assert_eq!(manifest["mediaType"], OCI_MANIFEST);
        assert_eq!(manifest["config"]["digest"], image.config_digest);
        assert_eq!(manifest["layers"][0]["mediaType"], OCI_LAYER_GZIP);
        assert_eq!(manifest["layers"][1]["digest"], "sha256:a");
        assert_eq!(manifest["layers"][1]["size"], 3);
        assert_eq!(image.manifest_digest, digest_of(&image.manifest));
        assert!(
            image
                .tag()
                .starts_with(concat!(env!("CARGO_PKG_VERSION"), "-"))
        );
    }
}
