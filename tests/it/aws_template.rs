//! The aws target's CloudFormation template: cfn-lint finds nothing, no secret is ever plaintext, every output
//! the CLI reads exists, and the original template's bugs stay fixed.

use std::path::PathBuf;
use std::process::Command;

use dqetl::target::aws::outputs::REQUIRED_OUTPUTS;
use dqetl::target::aws::template::{TEMPLATE, interface, parse_template};
use regex::Regex;
use serde_yaml_ng::{Mapping, Value};

const TEMPLATE_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/templates/streaming-etl.yaml");

/// cfn-lint from the project venv (scripts/setup.sh installs it there), else from PATH.
fn cfn_lint() -> PathBuf {
    let venv = std::env::var_os("DQETL_VENV")
        .map_or_else(|| PathBuf::from("/var/cache/dqetl/venv"), PathBuf::from);
    let in_venv = venv.join("bin").join("cfn-lint");
    if in_venv.is_file() {
        return in_venv;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("cfn-lint"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "cfn-lint is neither in {} nor on PATH: run scripts/setup.sh",
                in_venv.display()
            )
        })
}

fn template() -> Value {
    parse_template(TEMPLATE).expect("the embedded template parses")
}

fn resources(doc: &Value) -> &Mapping {
    doc["Resources"]
        .as_mapping()
        .expect("Resources is a mapping")
}

fn resources_of_type<'a>(doc: &'a Value, kind: &str) -> Vec<(&'a str, &'a Value)> {
    resources(doc)
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some(kind))
        .map(|(name, r)| (name.as_str().expect("resource names are strings"), r))
        .collect()
}

/// Calls `visit(path, key, value)` for every mapping entry below `value`.
fn walk(value: &Value, path: &str, visit: &mut impl FnMut(&str, &str, &Value)) {
    match value {
        Value::Mapping(m) => {
            for (k, v) in m {
                let key = k.as_str().unwrap_or("?");
                let here = format!("{path}/{key}");
                visit(&here, key, v);
                walk(v, &here, visit);
            }
        }
        Value::Sequence(items) => {
            for (i, v) in items.iter().enumerate() {
                walk(v, &format!("{path}/{i}"), visit);
            }
        }
        _ => {}
    }
}

fn strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Mapping(m) => m.iter().for_each(|(k, v)| {
            strings(k, out);
            strings(v, out);
        }),
        Value::Sequence(items) => items.iter().for_each(|v| strings(v, out)),
        _ => {}
    }
}

/// The text of a plain string or of an `Fn::Sub` (string or `[string, vars]` form).
fn literal_or_sub(value: &Value) -> Option<&str> {
    match value {
        Value::String(s) => Some(s),
        Value::Mapping(m) => match m.get("Fn::Sub")? {
            Value::String(s) => Some(s),
            Value::Sequence(parts) => parts.first()?.as_str(),
            _ => None,
        },
        _ => None,
    }
}

fn is_secrets_manager_reference(value: &Value) -> bool {
    literal_or_sub(value)
        .is_some_and(|s| s.starts_with("{{resolve:secretsmanager:") && s.ends_with("}}"))
}

#[test]
fn cfn_lint_finds_no_error_and_no_warning() {
    let lint = cfn_lint();
    // Informational checks included, two regions: a resource or instance type missing in a region is an error.
    let output = Command::new(&lint)
        .args([
            "--include-checks",
            "I",
            "--regions",
            "us-east-1",
            "eu-west-1",
            "--format",
            "parseable",
            "--",
        ])
        .arg(TEMPLATE_PATH)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", lint.display()));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // cfn-lint's exit code is a bit set: 2 errors, 4 warnings, 8 informational; anything else (1) is a crash.
    let code = output
        .status
        .code()
        .unwrap_or_else(|| panic!("cfn-lint was killed by a signal:\n{report}"));
    assert_eq!(
        code & !8,
        0,
        "cfn-lint exit code {code} (2 = error, 4 = warning, 1 = failure):\n{report}"
    );
    if code & 8 != 0 {
        eprintln!("cfn-lint informational findings (not failures):\n{report}");
    }
}

#[test]
fn no_secret_is_a_parameter_or_a_plaintext_property() {
    let doc = template();
    let iface = interface(TEMPLATE).expect("interface");
    for p in &iface.parameters {
        assert!(
            !p.no_echo,
            "parameter {} is NoEcho: secrets are generated in Secrets Manager, not passed",
            p.name
        );
        let lower = p.name.to_lowercase();
        assert!(
            !["password", "secret", "token"]
                .iter()
                .any(|w| lower.contains(w)),
            "parameter {} looks like a secret",
            p.name
        );
    }

    let mut problems = Vec::new();
    let mut password_properties = 0;
    walk(&doc["Resources"], "Resources", &mut |path, key, value| {
        if key.to_lowercase().ends_with("password") && key != "ManageMasterUserPassword" {
            password_properties += 1;
            if !is_secrets_manager_reference(value) {
                problems.push(format!(
                    "{path} is not a {{{{resolve:secretsmanager:...}}}} reference: {value:?}"
                ));
            }
        }
        // Containers get credentials through `Secrets` (injected by ECS), never through `Environment`.
        if key == "Environment"
            && let Some(vars) = value.as_sequence()
        {
            for var in vars {
                let name = var["Name"].as_str().unwrap_or_default().to_uppercase();
                if ["PASSWORD", "SECRET", "TOKEN"]
                    .iter()
                    .any(|w| name.contains(w))
                {
                    problems.push(format!("{path}: {name} is a plain environment variable"));
                }
            }
        }
    });
    // RDS master, DMS source, DMS Kafka SASL: the three credentials the stack hands to AWS services.
    if password_properties != 3 {
        problems.push(format!(
            "expected the 3 password properties the template consumes, found {password_properties}"
        ));
    }
    let rds = &doc["Resources"]["RdsInstance"]["Properties"];
    if rds["ManageMasterUserPassword"].as_bool() != Some(true)
        && !is_secrets_manager_reference(&rds["MasterUserPassword"])
    {
        problems.push("the RDS master password does not come from Secrets Manager".to_string());
    }
    let sasl = literal_or_sub(
        &doc["Resources"]["DmsTargetEndpoint"]["Properties"]["KafkaSettings"]["SaslPassword"],
    );
    if !sasl.is_some_and(|s| s.contains("${MskScramSecret}")) {
        problems.push(format!(
            "the DMS Kafka password does not reference the MSK SCRAM secret: {sasl:?}"
        ));
    }

    let mut all = Vec::new();
    strings(&doc, &mut all);
    let secret_like = Regex::new(
        r"(?i)((AKIA|ASIA)[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY|aws_secret_access_key|Amazon123|KafkaAdmin1234|password\s*[=:]\s*[^:\s}])",
    )
    .expect("regex");
    for s in &all {
        if let Some(m) = secret_like.find(s) {
            problems.push(format!("a literal looks like a secret: {:?}", m.as_str()));
        }
    }
    assert!(
        problems.is_empty(),
        "plaintext secrets:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_output_the_cli_reads_exists_and_is_described() {
    let iface = interface(TEMPLATE).expect("interface");
    let missing: Vec<_> = REQUIRED_OUTPUTS
        .iter()
        .filter(|name| iface.output(name).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "outputs missing from the template: {missing:?}"
    );
    let undescribed: Vec<_> = iface
        .outputs
        .iter()
        .filter(|o| o.description.is_none())
        .map(|o| &o.name)
        .collect();
    assert!(
        undescribed.is_empty(),
        "outputs without a Description: {undescribed:?}"
    );
}

/// Reads the names of a top-level section straight from the text (two-space indented keys), independently of the
/// YAML parser the interface function uses.
fn section_names_in_text(section: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut inside = false;
    for line in TEMPLATE.lines() {
        if !line.starts_with(' ') && !line.is_empty() && !line.starts_with('#') {
            inside = line.trim_end() == format!("{section}:");
            continue;
        }
        if inside
            && let Some(name) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(':'))
            && !name.starts_with([' ', '#'])
        {
            names.push(name.to_string());
        }
    }
    names
}

#[test]
fn the_interface_lists_every_parameter_and_output_of_the_template() {
    let iface = interface(TEMPLATE).expect("interface");
    let parameters: Vec<_> = iface.parameters.iter().map(|p| p.name.clone()).collect();
    let outputs: Vec<_> = iface.outputs.iter().map(|o| o.name.clone()).collect();
    assert_eq!(parameters, section_names_in_text("Parameters"));
    assert_eq!(outputs, section_names_in_text("Outputs"));

    let default = |name: &str| {
        iface
            .parameter(name)
            .unwrap_or_else(|| panic!("parameter {name} is missing"))
            .default
            .clone()
    };
    // Safe defaults: single-AZ (a failover loses the logical slot), no processor before its image and topics
    // exist, and the account-wide DMS roles only on request.
    assert_eq!(default("MultiAZ").as_deref(), Some("false"));
    assert_eq!(default("ProcessorDesiredCount").as_deref(), Some("0"));
    assert_eq!(default("CreateDMSVPCRole").as_deref(), Some("false"));
    for name in [
        "DBInstanceClass",
        "DBAllocatedStorage",
        "DMSInstanceClass",
        "MSKBrokerInstanceType",
        "ProcessorCpu",
        "ProcessorMemory",
        "ProcessorImageUri",
        "ConfigS3Key",
        "KafkaPartitions",
    ] {
        assert!(default(name).is_some(), "parameter {name} needs a default");
    }
    let required: Vec<_> = iface
        .required_parameters()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(
        required,
        ["DMSTableMappings"],
        "deploy passes exactly the compiled table mappings"
    );
}

#[test]
fn the_account_wide_dms_roles_are_created_only_on_request_and_never_deleted() {
    let doc = template();
    let roles: Vec<_> = resources_of_type(&doc, "AWS::IAM::Role")
        .into_iter()
        .filter(|(_, r)| {
            r["Properties"]["RoleName"]
                .as_str()
                .is_some_and(|n| n.starts_with("dms-"))
        })
        .collect();
    let names: Vec<_> = roles
        .iter()
        .map(|(_, r)| r["Properties"]["RoleName"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, ["dms-vpc-role", "dms-cloudwatch-logs-role"]);
    for (id, role) in roles {
        assert_eq!(
            role["Condition"].as_str(),
            Some("CreateDMSServiceRoles"),
            "{id} must be conditional"
        );
        assert_eq!(
            role["DeletionPolicy"].as_str(),
            Some("Retain"),
            "{id} must survive stack deletion"
        );
        assert_eq!(
            role["UpdateReplacePolicy"].as_str(),
            Some("Retain"),
            "{id} must survive replacement"
        );
    }
    assert_eq!(
        doc["Conditions"]["CreateDMSServiceRoles"],
        serde_yaml_ng::from_str::<Value>(
            r#"{"Fn::Equals": [{"Ref": "CreateDMSVPCRole"}, "true"]}"#
        )
        .expect("yaml")
    );
}

#[test]
fn the_database_accepts_each_client_exactly_once() {
    let doc = template();
    let rds_group = &doc["Resources"]["RdsSecurityGroup"]["Properties"];
    assert!(
        rds_group["SecurityGroupIngress"].is_null(),
        "RDS ingress rules are separate resources, never inline"
    );
    let rds_ref = serde_yaml_ng::from_str::<Value>("{Ref: RdsSecurityGroup}").expect("yaml");
    let mut sources: Vec<String> = resources_of_type(&doc, "AWS::EC2::SecurityGroupIngress")
        .into_iter()
        .filter(|(_, r)| r["Properties"]["GroupId"] == rds_ref)
        .map(|(_, r)| {
            let p = &r["Properties"];
            assert_eq!(
                (p["FromPort"].as_u64(), p["ToPort"].as_u64()),
                (Some(5432), Some(5432))
            );
            format!("{:?}", p["SourceSecurityGroupId"])
        })
        .collect();
    let all = sources.len();
    sources.sort();
    sources.dedup();
    assert_eq!(
        sources.len(),
        all,
        "a duplicate RDS ingress rule (the original's stack-create failure)"
    );
    assert_eq!(all, 2, "RDS is reached by DMS and the one-off jobs only");
}

#[test]
fn every_bucket_is_versioned_kms_encrypted_private_and_tls_only() {
    let doc = template();
    let buckets = resources_of_type(&doc, "AWS::S3::Bucket");
    assert_eq!(buckets.len(), 3, "delta, quarantine and assets");
    let policies = resources_of_type(&doc, "AWS::S3::BucketPolicy");
    for (id, bucket) in buckets {
        let p = &bucket["Properties"];
        assert_eq!(
            p["VersioningConfiguration"]["Status"].as_str(),
            Some("Enabled"),
            "{id} versioning"
        );
        let sse = &p["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"];
        assert_eq!(
            sse["SSEAlgorithm"].as_str(),
            Some("aws:kms"),
            "{id} encryption"
        );
        let block = &p["PublicAccessBlockConfiguration"];
        for flag in [
            "BlockPublicAcls",
            "BlockPublicPolicy",
            "IgnorePublicAcls",
            "RestrictPublicBuckets",
        ] {
            assert_eq!(block[flag].as_bool(), Some(true), "{id} {flag}");
        }
        let bucket_ref = serde_yaml_ng::from_str::<Value>(&format!("{{Ref: {id}}}")).expect("yaml");
        let denies_plain_http = policies.iter().any(|(_, policy)| {
            let pp = &policy["Properties"];
            pp["Bucket"] == bucket_ref
                && pp["PolicyDocument"]["Statement"]
                    .as_sequence()
                    .is_some_and(|statements| {
                        statements.iter().any(|s| {
                            s["Effect"].as_str() == Some("Deny")
                                && s["Condition"]["Bool"]["aws:SecureTransport"].as_str()
                                    == Some("false")
                        })
                    })
        });
        assert!(
            denies_plain_http,
            "{id} needs a bucket policy denying aws:SecureTransport false"
        );
    }
}

#[test]
fn the_broker_never_auto_creates_topics_and_keeps_a_week_of_data() {
    let doc = template();
    let properties = doc["Resources"]["MskConfiguration"]["Properties"]["ServerProperties"]
        .as_str()
        .expect("text");
    let settings: Vec<_> = properties.lines().map(str::trim).collect();
    assert!(
        settings.contains(&"auto.create.topics.enable=false"),
        "{settings:?}"
    );
    assert!(
        settings.contains(&"log.retention.hours=168"),
        "{settings:?}"
    );
    let scram = &doc["Resources"]["MskCluster"]["Properties"]["ClientAuthentication"];
    assert_eq!(scram["Sasl"]["Scram"]["Enabled"].as_bool(), Some(true));
    assert_eq!(scram["Unauthenticated"]["Enabled"].as_bool(), Some(false));
}

#[test]
fn the_processor_runs_dqetl_process_in_private_subnets_with_injected_kafka_credentials() {
    let doc = template();
    let service = &doc["Resources"]["ProcessorService"]["Properties"];
    assert_eq!(
        service["NetworkConfiguration"]["AwsvpcConfiguration"]["AssignPublicIp"].as_str(),
        Some("DISABLED")
    );
    assert_eq!(
        service["DesiredCount"],
        serde_yaml_ng::from_str::<Value>("{Ref: ProcessorDesiredCount}").unwrap()
    );
    let container =
        &doc["Resources"]["ProcessorTaskDefinition"]["Properties"]["ContainerDefinitions"][0];
    assert_eq!(container["Name"].as_str(), Some("dqetl"));
    assert_eq!(
        container["Command"],
        serde_yaml_ng::from_str::<Value>("[process]").unwrap()
    );
    let injected: Vec<_> = container["Secrets"]
        .as_sequence()
        .expect("Secrets")
        .iter()
        .map(|s| {
            (
                s["Name"].as_str().unwrap_or_default(),
                literal_or_sub(&s["ValueFrom"]).unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        injected.contains(&("DQETL_KAFKA_PASSWORD", "${MskScramSecret}:password::")),
        "{injected:?}"
    );
    // Its execution role may read the MSK secret and nothing else.
    let statements = &doc["Resources"]["ProcessorExecutionRole"]["Properties"]["Policies"][0]["PolicyDocument"]
        ["Statement"];
    let secret_reads: Vec<_> = statements
        .as_sequence()
        .expect("statements")
        .iter()
        .filter(|s| s["Action"].as_str() == Some("secretsmanager:GetSecretValue"))
        .map(|s| s["Resource"].clone())
        .collect();
    assert_eq!(
        secret_reads,
        [serde_yaml_ng::from_str::<Value>("{Ref: MskScramSecret}").unwrap()]
    );
}

#[test]
fn the_jobs_reach_the_database_over_tls_with_injected_credentials() {
    let doc = template();
    let parameters = &doc["Resources"]["DbParameterGroup"]["Properties"]["Parameters"];
    assert_eq!(parameters["rds.force_ssl"].as_str(), Some("1"));
    let container =
        &doc["Resources"]["JobsTaskDefinition"]["Properties"]["ContainerDefinitions"][0];
    let pairs = |key: &str, value: &str| -> Vec<(String, String)> {
        container[key]
            .as_sequence()
            .unwrap_or_else(|| panic!("{key}"))
            .iter()
            .map(|e| {
                (
                    e["Name"].as_str().unwrap_or_default().to_string(),
                    literal_or_sub(&e[value]).unwrap_or_default().to_string(),
                )
            })
            .collect()
    };
    let environment = pairs("Environment", "Value");
    // `dqetl sql` and `dqetl generate-data` read these; RDS refuses them without TLS.
    assert!(
        environment.contains(&("DQETL_PG_SSLMODE".into(), "require".into())),
        "{environment:?}"
    );
    for name in ["DQETL_PG_HOST", "DQETL_PG_PORT", "DQETL_PG_DATABASE"] {
        assert!(
            environment.iter().any(|(n, _)| n == name),
            "{name} missing: {environment:?}"
        );
    }
    let secrets = pairs("Secrets", "ValueFrom");
    assert!(
        secrets.contains(&("DQETL_PG_USER".into(), "${RdsSecret}:username::".into())),
        "{secrets:?}"
    );
    assert!(
        secrets.contains(&("DQETL_PG_PASSWORD".into(), "${RdsSecret}:password::".into())),
        "{secrets:?}"
    );
}
