//! The processor image, built without Docker and pushed to a real registry (Docker Distribution
//! with basic auth, as ECR hands out): pulled back with plain HTTP, it is a valid OCI image whose
//! config runs `dqetl process` and whose last layer holds the binary and the config.

use std::io::Read;

use dqetl::target::aws::image::{self, AppFiles, Platform};
use dqetl::target::aws::registry::{ImageReference, RegistryAuth, RegistryClient, Secret};
use sha2::{Digest, Sha256};

use crate::aws_support::{ECR_PASSWORD, Registry, seed_base_image};

fn auth() -> RegistryAuth {
    RegistryAuth::Basic {
        username: "AWS".into(),
        password: Secret::new(ECR_PASSWORD.into()),
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// GET with basic auth, asserting 200.
async fn get(url: &str, accept: &str) -> Vec<u8> {
    let resp = reqwest::Client::new()
        .get(url)
        .basic_auth("AWS", Some(ECR_PASSWORD))
        .header("accept", accept)
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status().as_u16(), 200, "GET {url}");
    resp.bytes().await.expect("body").to_vec()
}

#[tokio::test]
async fn the_pushed_image_pulls_back_as_an_oci_image_running_dqetl_process() {
    let registry = Registry::start(Some(("AWS", ECR_PASSWORD)));
    let base_ref: ImageReference = seed_base_image(&registry, Some(("AWS", ECR_PASSWORD)))
        .await
        .parse()
        .expect("reference");

    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("dqetl");
    let binary_bytes = b"\x7fELF this stands in for the dqetl executable".repeat(1000);
    std::fs::write(&binary, &binary_bytes).unwrap();
    let config_yaml = b"tables:\n  - name: vehicles\n".to_vec();

    let client = RegistryClient::new(&registry.host(), auth()).unwrap();
    let layer = image::build_app_layer(&AppFiles {
        binary: binary.clone(),
        config_yaml: config_yaml.clone(),
    })
    .unwrap();
    let base = image::resolve_base(&client, &base_ref, &Platform::current())
        .await
        .unwrap();
    assert_eq!(base.layers.len(), 1);
    let built = image::assemble(&base, layer).unwrap();
    let report = image::push(&built, &client, &base_ref, &client, "fleet-dqetl", |_| {})
        .await
        .unwrap();
    assert!(!report.already_present);
    assert_eq!(report.blobs_uploaded, 3, "base layer, app layer, config");

    // Pulled back with plain HTTP under the content tag.
    let root = format!("http://{}/v2/fleet-dqetl", registry.host());
    let manifest_bytes = get(
        &format!("{root}/manifests/{}", report.tag),
        "application/vnd.oci.image.manifest.v1+json",
    )
    .await;
    assert_eq!(
        sha256(&manifest_bytes),
        report.manifest_digest,
        "the tag names the pushed manifest"
    );
    let manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes).unwrap();
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);

    let config_bytes = get(
        &format!(
            "{root}/blobs/{}",
            manifest["config"]["digest"].as_str().unwrap()
        ),
        "*/*",
    )
    .await;
    assert_eq!(sha256(&config_bytes), manifest["config"]["digest"]);
    assert_eq!(
        config_bytes.len() as u64,
        manifest["config"]["size"].as_u64().unwrap()
    );
    let config: serde_json::Value = serde_json::from_slice(&config_bytes).unwrap();
    assert_eq!(
        config["architecture"],
        Platform::current().architecture,
        "the platform of this binary was chosen"
    );
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/dqetl"])
    );
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["process"]));
    let env: Vec<&str> = config["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        env.contains(&"DQETL_CONFIG=/etc/dqetl/tables.yaml"),
        "{env:?}"
    );
    assert!(env.contains(&"DQETL_TARGET=aws"), "{env:?}");
    assert!(
        env.iter().any(|e| e.starts_with("PATH=")),
        "the base image's PATH is kept: {env:?}"
    );
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(diff_ids.len(), layers.len(), "one diff id per layer");

    // Every layer downloads with its digest and size; the last one holds dqetl and the config.
    let mut app_files = std::collections::BTreeMap::new();
    for (i, l) in layers.iter().enumerate() {
        let blob = get(
            &format!("{root}/blobs/{}", l["digest"].as_str().unwrap()),
            "*/*",
        )
        .await;
        assert_eq!(sha256(&blob), l["digest"]);
        assert_eq!(blob.len() as u64, l["size"].as_u64().unwrap());
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(blob.as_slice())
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(sha256(&tar), diff_ids[i], "diff id of layer {i}");
        if i == layers.len() - 1 {
            let mut archive = tar::Archive::new(tar.as_slice());
            for entry in archive.entries().unwrap() {
                let mut entry = entry.unwrap();
                let path = entry.path().unwrap().to_string_lossy().to_string();
                let mode = entry.header().mode().unwrap();
                let mut data = Vec::new();
                entry.read_to_end(&mut data).unwrap();
                app_files.insert(path, (mode, data));
            }
        }
    }
    let (mode, data) = &app_files["usr/local/bin/dqetl"];
    assert_eq!(*mode & 0o111, 0o111, "the binary is executable");
    assert!(
        data == &binary_bytes,
        "the layer holds the binary byte for byte"
    );
    assert_eq!(app_files["etc/dqetl/tables.yaml"].1, config_yaml);

    // `latest` names the same image; a second push of the same inputs uploads nothing.
    let latest = get(
        &format!("{root}/manifests/latest"),
        "application/vnd.oci.image.manifest.v1+json",
    )
    .await;
    assert_eq!(sha256(&latest), report.manifest_digest);
    let again = image::build_app_layer(&AppFiles {
        binary,
        config_yaml,
    })
    .unwrap();
    let rebuilt = image::assemble(&base, again).unwrap();
    assert_eq!(
        rebuilt.manifest_digest, built.manifest_digest,
        "the image is reproducible"
    );
    let second = image::push(&rebuilt, &client, &base_ref, &client, "fleet-dqetl", |_| {})
        .await
        .unwrap();
    assert!(second.already_present);
    assert_eq!(second.blobs_uploaded, 0);
}

#[tokio::test]
async fn a_registry_refusing_the_credentials_fails_the_push_with_the_status_and_no_secret() {
    let registry = Registry::start(Some(("AWS", ECR_PASSWORD)));
    let wrong = RegistryAuth::Basic {
        username: "AWS".into(),
        password: Secret::new("wrong-password-123".into()),
    };
    let client = RegistryClient::new(&registry.host(), wrong).unwrap();
    let err = client
        .push_blob("fleet-dqetl", &sha256(b"x"), b"x".to_vec())
        .await
        .unwrap_err();
    let text = format!("{err:#} {err:?}");
    assert!(text.contains("401"), "{text}");
    assert!(
        !text.contains("wrong-password-123"),
        "the password never appears in errors: {text}"
    );
}
