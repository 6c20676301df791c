//! Services for the aws control-plane tests: a moto server (the AWS endpoint) and a
//! `docker-registry` (the image registry), each started by the test that needs it on a free
//! loopback port, with its data in a temporary folder, and killed when dropped.
#![allow(dead_code)] // Each test module uses a part of the harness.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_sts::config::Credentials;
use dqetl::target::aws::clients::AwsClients;
use dqetl::target::aws::outputs::StackOutputs;
use dqetl::target::aws::registry::digest_of;
use dqetl::target::aws::stack::{ParamValue, Stacks};
use dqetl::target::local::ports::{free_port, wait_until_accepting};
use sha2::{Digest, Sha256};

/// moto's account and the region the tests use.
pub const ACCOUNT: &str = "123456789012";
pub const REGION: &str = "us-east-1";
/// The password moto's ECR GetAuthorizationToken hands out (`AWS:<account>-auth-token`).
pub const ECR_PASSWORD: &str = "123456789012-auth-token";

pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/aws")
        .join(rel)
}

pub fn minimal_template() -> String {
    std::fs::read_to_string(fixture("minimal-stack.yaml")).expect("minimal template fixture")
}

/// A child process killed (and reaped) on drop, with its folder removed.
struct Service {
    child: Child,
    name: &'static str,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    fn start(
        name: &'static str,
        mut command: Command,
        port: u16,
        dir: tempfile::TempDir,
    ) -> Service {
        let log = dir.path().join(format!("{name}.log"));
        let log_file = std::fs::File::create(&log).expect("service log file");
        command
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log handle"))
            .stderr(log_file);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({command:?}): {e}; run scripts/setup.sh"));
        let mut service = Service {
            child,
            name,
            log,
            _dir: dir,
        };
        if !wait_until_accepting(port, Duration::from_secs(60)) {
            let log = std::fs::read_to_string(&service.log).unwrap_or_default();
            let _ = service.child.kill();
            panic!("{name} did not listen on 127.0.0.1:{port} within 60 s; its log:\n{log}");
        }
        service
    }
}

/// A moto server on 127.0.0.1.
pub struct Moto {
    service: Service,
    pub port: u16,
}

/// A Python that has moto installed: the venv of scripts/setup.sh first, then PATH.
fn moto_python() -> PathBuf {
    let mut candidates = Vec::new();
    if let Ok(venv) = std::env::var("DQETL_VENV") {
        candidates.push(PathBuf::from(venv).join("bin/python"));
    }
    candidates.push(PathBuf::from("/var/cache/dqetl/venv/bin/python"));
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|p| p.join("python3")));
    }
    candidates
        .into_iter()
        .filter(|p| p.is_file())
        .find(|p| {
            Command::new(p)
                .args(["-c", "import moto.server"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .expect("no Python with moto[server] (DQETL_VENV, /var/cache/dqetl/venv or PATH); run scripts/setup.sh")
}

impl Moto {
    pub fn start() -> Moto {
        let port = free_port().expect("free port");
        let dir = tempfile::tempdir().expect("temp dir");
        // moto_server through a launcher that fixes DMS's date format (see the script).
        let mut command = Command::new(moto_python());
        command
            .arg(fixture("moto_server.py"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        Moto {
            service: Service::start("moto_server", command, port, dir),
            port,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An SDK configuration pointing every service at this server, with dummy credentials.
    pub async fn sdk(&self) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(self.endpoint())
            .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
            .load()
            .await
    }

    pub async fn clients(&self) -> AwsClients {
        AwsClients::new(self.sdk().await).expect("clients")
    }

    /// Environment for a dqetl process talking to this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_REGION", REGION.to_string()),
            ("AWS_ACCESS_KEY_ID", "testing".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Queues Athena results (moto does not run SQL): each entry answers one query, in order.
    pub async fn queue_athena_results(&self, results: serde_json::Value) {
        let resp = reqwest::Client::new()
            .post(format!(
                "{}/moto-api/static/athena/query-results",
                self.endpoint()
            ))
            .json(&serde_json::json!({"account_id": ACCOUNT, "region": REGION, "results": results}))
            .send()
            .await
            .expect("moto api");
        assert_eq!(resp.status().as_u16(), 201, "queueing athena results");
    }
}

/// A `docker-registry` (Docker Distribution) on 127.0.0.1, optionally with basic auth.
pub struct Registry {
    service: Service,
    pub port: u16,
}

impl Registry {
    /// `basic_auth` is (user, password); the registry then refuses anonymous requests.
    pub fn start(basic_auth: Option<(&str, &str)>) -> Registry {
        let port = free_port().expect("free port");
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).expect("registry storage");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            storage.display()
        );
        if let Some((user, password)) = basic_auth {
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{}\n", bcrypt_hash(password)))
                .expect("htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: dqetl-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("registry config");
        let mut command = Command::new("/usr/bin/docker-registry");
        command.arg("serve").arg(&config_path);
        Registry {
            service: Service::start("docker-registry", command, port, dir),
            port,
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// A bcrypt hash for the registry's htpasswd file (python's crypt module; Debian's libxcrypt
/// implements bcrypt).
fn bcrypt_hash(password: &str) -> String {
    let out = Command::new("python3")
        .args([
            "-W",
            "ignore",
            "-c",
            "import crypt,sys; print(crypt.crypt(sys.stdin.read(), crypt.mksalt(crypt.METHOD_BLOWFISH)))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().expect("stdin").write_all(password.as_bytes())?;
            child.wait_with_output()
        })
        .expect("python3 for the bcrypt hash");
    let hash = String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string();
    assert!(hash.starts_with("$2"), "not a bcrypt hash: {hash:?}");
    hash
}

/// A gzip tar layer holding the given files, and its diff id.
pub fn tar_gz_layer(files: &[(&str, &[u8])]) -> (Vec<u8>, String) {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        tar.append_data(&mut h, path, *data).expect("tar entry");
    }
    let tar = tar.into_inner().expect("tar");
    let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(&tar)));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    (gz.finish().expect("gzip"), diff_id)
}

/// Pushes a tiny multi-platform base image (`base/tiny:1`: an index with linux/amd64 and
/// linux/arm64, each one layer) and returns its reference. Uses plain HTTP requests, not dqetl's
/// registry client.
pub async fn seed_base_image(registry: &Registry, auth: Option<(&str, &str)>) -> String {
    let http = reqwest::Client::new();
    let base = format!("http://{}", registry.host());
    let with_auth = |r: reqwest::RequestBuilder| match auth {
        Some((u, p)) => r.basic_auth(u, Some(p)),
        None => r,
    };
    let push_blob = |bytes: Vec<u8>| {
        let http = http.clone();
        let base = base.clone();
        async move {
            let digest = digest_of(&bytes);
            let resp = with_auth(http.post(format!("{base}/v2/base/tiny/blobs/uploads/")))
                .send()
                .await
                .expect("post");
            assert_eq!(resp.status().as_u16(), 202, "start upload");
            let location = resp.headers()["location"]
                .to_str()
                .expect("location")
                .to_string();
            let url = if location.starts_with("http") {
                location
            } else {
                format!("{base}{location}")
            };
            let sep = if url.contains('?') { '&' } else { '?' };
            let resp = with_auth(http.put(format!("{url}{sep}digest={digest}")))
                .header("content-type", "application/octet-stream")
                .body(bytes.clone())
                .send()
                .await
                .expect("put");
            assert_eq!(resp.status().as_u16(), 201, "upload blob");
            (digest, bytes.len())
        }
    };
    let put_manifest = |reference: String, media_type: &'static str, body: Vec<u8>| {
        let http = http.clone();
        let base = base.clone();
        async move {
            let resp = with_auth(http.put(format!("{base}/v2/base/tiny/manifests/{reference}")))
                .header("content-type", media_type)
                .body(body)
                .send()
                .await
                .expect("put manifest");
            assert_eq!(resp.status().as_u16(), 201, "put manifest");
        }
    };
    let mut platform_manifests = Vec::new();
    for arch in ["arm64", "amd64"] {
        let (layer, diff_id) = tar_gz_layer(&[(
            "etc/os-release",
            format!("ID=tiny\nARCH={arch}\n").as_bytes(),
        )]);
        let (layer_digest, layer_size) = push_blob(layer).await;
        let config = serde_json::json!({
            "architecture": arch, "os": "linux", "created": "2024-06-01T00:00:00Z",
            "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": "2024-06-01T00:00:00Z", "created_by": "tiny base"}]
        });
        let (config_digest, config_size) =
            push_blob(serde_json::to_vec(&config).expect("json")).await;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer_size}]
        });
        let body = serde_json::to_vec(&manifest).expect("json");
        let digest = digest_of(&body);
        put_manifest(
            digest.clone(),
            "application/vnd.oci.image.manifest.v1+json",
            body.clone(),
        )
        .await;
        platform_manifests.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": body.len(),
            "platform": {"os": "linux", "architecture": arch}
        }));
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": platform_manifests
    });
    put_manifest(
        "1".into(),
        "application/vnd.oci.image.index.v1+json",
        serde_json::to_vec(&index).expect("json"),
    )
    .await;
    format!("{}/base/tiny:1", registry.host())
}

/// Creates the minimal stack (no image, no assets) and returns its outputs.
pub async fn create_minimal_stack(clients: &AwsClients, stack: &str) -> StackOutputs {
    let mut stacks = Stacks::new(clients, true);
    stacks.poll = Duration::from_millis(50);
    let params = BTreeMap::from([(
        "DMSTableMappings".to_string(),
        ParamValue::Value("{\"rules\":[]}".into()),
    )]);
    stacks
        .apply(stack, &minimal_template(), &params, None)
        .await
        .expect("create the minimal stack");
    let outputs = stacks
        .outputs(stack)
        .await
        .expect("outputs of the minimal stack");
    // moto's CloudFormation has no AWS::Athena::WorkGroup; the real template creates it.
    clients
        .athena
        .create_work_group()
        .name(&outputs.athena_work_group)
        .send()
        .await
        .expect("create the athena workgroup");
    outputs
}

/// Creates, through the DMS API, what the real template creates through CloudFormation, under the
/// identifiers the minimal template outputs: replication instance, both endpoints, the task.
pub async fn create_dms(clients: &AwsClients, stack: &str) {
    use aws_sdk_databasemigration::types::{
        DmsSslModeValue, MigrationTypeValue, ReplicationEndpointTypeValue,
    };
    let dms = &clients.dms;
    let instance = dms
        .create_replication_instance()
        .replication_instance_identifier(format!("{stack}-dms"))
        .replication_instance_class("dms.t3.small")
        .send()
        .await
        .expect("create replication instance");
    let instance_arn = instance
        .replication_instance()
        .and_then(|i| i.replication_instance_arn())
        .expect("arn")
        .to_string();
    let source = dms
        .create_endpoint()
        .endpoint_identifier(format!("{stack}-source-postgres"))
        // The ARN suffix, as the minimal template outputs it.
        .resource_identifier(format!("{stack}-source-postgres"))
        .endpoint_type(ReplicationEndpointTypeValue::Source)
        .engine_name("postgres")
        .server_name("rds.example.internal")
        .port(5432)
        .database_name("etldb")
        .ssl_mode(DmsSslModeValue::Require)
        .send()
        .await
        .expect("create source endpoint");
    let target = dms
        .create_endpoint()
        .endpoint_identifier(format!("{stack}-target-msk"))
        // The ARN suffix, as the minimal template outputs it.
        .resource_identifier(format!("{stack}-target-msk"))
        .endpoint_type(ReplicationEndpointTypeValue::Target)
        .engine_name("kafka")
        .send()
        .await
        .expect("create target endpoint");
    dms.create_replication_task()
        .replication_task_identifier(format!("{stack}-cdc-task"))
        .source_endpoint_arn(
            source
                .endpoint()
                .and_then(|e| e.endpoint_arn())
                .expect("source arn"),
        )
        .target_endpoint_arn(
            target
                .endpoint()
                .and_then(|e| e.endpoint_arn())
                .expect("target arn"),
        )
        .replication_instance_arn(instance_arn)
        .migration_type(MigrationTypeValue::FullLoadAndCdc)
        .table_mappings("{\"rules\":[]}")
        .send()
        .await
        .expect("create replication task");
}

/// Writes an object with a body.
pub async fn put(clients: &AwsClients, bucket: &str, key: &str, body: &[u8]) {
    clients
        .s3
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(body.to_vec().into())
        .send()
        .await
        .unwrap_or_else(|e| panic!("put s3://{bucket}/{key}: {e:?}"));
}
