//! The local stack against a real moto: the template bootstrapped twice (idempotent),
//! and the dev host serving the credentials function behind the emulated authorizer.
//! Skipped, with a message, when no `moto_server` is installed.

use std::time::Duration;

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use aws_sdk_sqs::types::QueueAttributeName;
use conduit::config::Config;
use devhost::{LocalEnv, LocalEnvOptions, MotoServer, StackOptions, bootstrap, moto_sdk_config};
use serde_json::{Value, json};

/// The shared moto's endpoint, or `None` (with a message) when moto is not installed.
async fn moto() -> Option<String> {
    if MotoServer::find_binary().is_none() {
        eprintln!("skipping: no moto_server (create .venv with moto[server] or set CONDUIT_VENV)");
        return None;
    }
    let endpoint = tokio::task::spawn_blocking(|| MotoServer::shared().map(MotoServer::endpoint))
        .await
        .expect("the moto start task")
        .expect("moto starts");
    Some(endpoint)
}

#[tokio::test]
async fn the_real_template_bootstraps_twice() {
    let Some(endpoint) = moto().await else { return };
    let aws = moto_sdk_config(&endpoint).await;
    let template = devhost::template::load_repo_template().unwrap();
    let options = StackOptions::new("twice")
        .parameter("JwtIssuer", "http://127.0.0.1:3000/local-issuer")
        .parameter("JwtAudience", "conduit-local")
        .parameter("DashboardOrigins", "http://localhost:5173")
        .parameter("PublicBaseUrl", "http://127.0.0.1:3000")
        .local_env("CONDUIT_PROVIDER_ORIGIN_OVERRIDE", "http://127.0.0.1:9100")
        .local_env("CONDUIT_ALLOW_LOOPBACK_HTTP", "true");
    let first = bootstrap(&template, &aws, &options).await.unwrap();
    let second = bootstrap(&template, &aws, &options).await.unwrap();
    for id in [
        "Table",
        "DataKey",
        "DataKeyAlias",
        "PlatformSecret",
        "SyncQueue",
        "SyncDeadLetterQueue",
        "SyncScheduleGroup",
    ] {
        assert!(first.resource(id).is_some(), "{id} missing");
        assert_eq!(
            first.resource(id),
            second.resource(id),
            "{id} differs on the second run"
        );
    }

    let env = second.function_env("CredentialsFunction").unwrap();
    assert_eq!(env["CONDUIT_TABLE"], "twice-Table");
    assert_eq!(env["CONDUIT_DASHBOARD_ORIGINS"], "http://localhost:5173");
    assert_eq!(env["AWS_LAMBDA_LOG_LEVEL"], "INFO");
    assert_eq!(env["CONDUIT_PUBLIC_BASE_URL"], "http://127.0.0.1:3000");
    assert_eq!(env["CONDUIT_TENANT_CLAIM"], "tenant_id");
    assert_eq!(
        env["CONDUIT_PROVIDER_ORIGIN_OVERRIDE"],
        "http://127.0.0.1:9100"
    );
    assert_eq!(env["CONDUIT_ALLOW_LOOPBACK_HTTP"], "true");
    assert!(
        env["CONDUIT_KMS_KEY_ID"].starts_with("arn:aws:kms:us-east-1:"),
        "{}",
        env["CONDUIT_KMS_KEY_ID"]
    );
    assert!(env["CONDUIT_PLATFORM_SECRET_ID"].starts_with("arn:aws:secretsmanager:"));
    Config::from_map(&env).unwrap();

    // The table: keys, both GSIs, TTL.
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let table = ddb
        .describe_table()
        .table_name(&env["CONDUIT_TABLE"])
        .send()
        .await
        .unwrap()
        .table
        .unwrap();
    let mut gsis: Vec<&str> = table
        .global_secondary_indexes()
        .iter()
        .filter_map(|g| g.index_name())
        .collect();
    gsis.sort();
    assert_eq!(gsis, ["gsi1", "gsi2", "gsi3"]);
    assert_eq!(table.key_schema().len(), 2);
    let ttl = ddb
        .describe_time_to_live()
        .table_name(&env["CONDUIT_TABLE"])
        .send()
        .await
        .unwrap();
    let ttl = ttl.time_to_live_description().unwrap();
    assert_eq!(ttl.attribute_name(), Some("ttl"));
    assert_eq!(
        ttl.time_to_live_status().map(|s| s.as_str()),
        Some("ENABLED")
    );

    // The key issues data keys bound to an encryption context; the alias points at it.
    let kms = aws_sdk_kms::Client::new(&aws);
    let dk = kms
        .generate_data_key()
        .key_id(&env["CONDUIT_KMS_KEY_ID"])
        .key_spec(DataKeySpec::Aes256)
        .encryption_context("tenant", "t1")
        .send()
        .await
        .unwrap();
    assert_eq!(dk.plaintext().unwrap().as_ref().len(), 32);
    let blob = Blob::new(dk.ciphertext_blob().unwrap().as_ref().to_vec());
    let plain = kms
        .decrypt()
        .ciphertext_blob(blob.clone())
        .encryption_context("tenant", "t1")
        .send()
        .await
        .unwrap();
    assert_eq!(
        plain.plaintext().unwrap().as_ref(),
        dk.plaintext().unwrap().as_ref()
    );
    assert!(
        kms.decrypt()
            .ciphertext_blob(blob)
            .encryption_context("tenant", "t2")
            .send()
            .await
            .is_err()
    );
    let aliased = kms
        .describe_key()
        .key_id("alias/twice-data")
        .send()
        .await
        .unwrap();
    assert_eq!(
        aliased.key_metadata().unwrap().key_id(),
        second.ref_value("DataKey").unwrap()
    );
    let rotation = kms
        .get_key_rotation_status()
        .key_id(second.ref_value("DataKey").unwrap())
        .send()
        .await
        .unwrap();
    assert!(rotation.key_rotation_enabled());

    // The secret holds the template's value; an override replaces it.
    let sm = aws_sdk_secretsmanager::Client::new(&aws);
    let value = sm
        .get_secret_value()
        .secret_id(&env["CONDUIT_PLATFORM_SECRET_ID"])
        .send()
        .await
        .unwrap();
    assert_eq!(value.secret_string(), Some(r#"{"oauth_apps":{}}"#));
    let apps = r#"{"oauth_apps":{"hubspot":{"client_id":"c","client_secret":"s"}}}"#;
    let third = bootstrap(
        &template,
        &aws,
        &options.clone().secret_value("PlatformSecret", apps),
    )
    .await
    .unwrap();
    assert_eq!(
        third.resource("PlatformSecret"),
        first.resource("PlatformSecret")
    );
    let value = sm
        .get_secret_value()
        .secret_id(&env["CONDUIT_PLATFORM_SECRET_ID"])
        .send()
        .await
        .unwrap();
    assert_eq!(value.secret_string(), Some(apps));

    // The queues: the main queue redrives into the dead-letter queue.
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(second.ref_value("SyncQueue").unwrap())
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap();
    let attrs = attrs.attributes().unwrap();
    // As the template sets them.
    let declared = |name: &str| {
        let value = &template.resources["SyncQueue"].properties[name];
        value
            .as_u64()
            .map(|n| n.to_string())
            .or_else(|| value.as_str().map(str::to_owned))
            .unwrap()
    };
    assert_eq!(
        attrs[&QueueAttributeName::VisibilityTimeout],
        declared("VisibilityTimeout")
    );
    assert_eq!(
        attrs[&QueueAttributeName::MessageRetentionPeriod],
        declared("MessageRetentionPeriod")
    );
    let redrive: Value = serde_json::from_str(&attrs[&QueueAttributeName::RedrivePolicy]).unwrap();
    assert_eq!(
        redrive["deadLetterTargetArn"],
        second.get_att("SyncDeadLetterQueue", "Arn").unwrap()
    );
    assert_eq!(
        redrive["maxReceiveCount"].to_string().trim_matches('"'),
        "5"
    );
    assert!(
        second
            .ref_value("SyncDeadLetterQueue")
            .unwrap()
            .ends_with("/twice-SyncDeadLetterQueue")
    );
}

#[tokio::test]
async fn the_dev_host_serves_the_template_routes() {
    let Some(endpoint) = moto().await else { return };
    let env = LocalEnv::start(LocalEnvOptions {
        aws_endpoint: Some(endpoint),
        ..LocalEnvOptions::default()
    })
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let url = env.url();
    let admin = env.token("demo", "dev-admin", "admin").unwrap();

    // The authorizer: no token, a bad token, an expired one.
    let resp = http
        .get(format!("{url}/v1/providers"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("apigw-requestid"));
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"message": "Unauthorized"})
    );
    let resp = http
        .get(format!("{url}/v1/providers"))
        .bearer_auth("not-a-jwt")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expired = env
        .jwt
        .mint_claims(&json!({
            "iss": env.jwt.issuer, "aud": env.jwt.audience, "sub": "u", "tenant_id": "demo",
            "role": "admin", "iat": now - 120, "exp": now - 60,
        }))
        .unwrap();
    let resp = http
        .get(format!("{url}/v1/providers"))
        .bearer_auth(expired)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // No route: API Gateway's 404.
    let resp = http
        .get(format!("{url}/v1/nope"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"message": "Not Found"})
    );

    // CORS preflight from the dashboard origin.
    let resp = http
        .request(reqwest::Method::OPTIONS, format!("{url}/v1/connections"))
        .header("origin", "http://localhost:5173")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "http://localhost:5173"
    );

    // The function itself, in-process.
    let resp = http
        .get(format!("{url}/v1/providers"))
        .bearer_auth(&admin)
        .header("origin", "http://localhost:5173")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-request-id"));
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "http://localhost:5173"
    );
    let body: Value = resp.json().await.unwrap();
    assert!(body.to_string().contains("zendesk"), "{body}");

    // The README's demo: a Zendesk connection against the sandbox.
    let resp = http
        .post(format!("{url}/v1/connections"))
        .bearer_auth(&admin)
        .json(&json!({
            "provider": "zendesk",
            "auth_method": "api_token",
            "label": "Acme Zendesk",
            "credentials": {"subdomain": "acme", "email": "admin@acme.test", "api_token": "zd-sandbox-token-0001"},
        }))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let created: Value = resp.json().await.unwrap();
    assert_eq!(status, 201, "{created}");
    assert!(
        !created.to_string().contains("zd-sandbox-token-0001"),
        "{created}"
    );
    let id = created["id"].as_str().unwrap().to_owned();
    let member = env.token("demo", "dev-member", "member").unwrap();
    let resp = http
        .get(format!("{url}/v1/connections/{id}"))
        .bearer_auth(&member)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = http
        .delete(format!("{url}/v1/connections/{id}"))
        .bearer_auth(&member)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = http
        .delete(format!("{url}/v1/connections/{id}"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());

    tokio::time::timeout(Duration::from_secs(10), env.shutdown())
        .await
        .unwrap();
}

#[tokio::test]
async fn other_resource_kinds_and_unregistered_functions() {
    let Some(endpoint) = moto().await else { return };
    let aws = moto_sdk_config(&endpoint).await;
    let template = devhost::Template::parse(
        r#"
Resources:
  Bus:
    Type: AWS::Events::EventBus
    Properties: { Name: !Sub "${AWS::StackName}-bus" }
  Generated:
    Type: AWS::SecretsManager::Secret
    Properties:
      GenerateSecretString: { SecretStringTemplate: '{"user":"svc"}', GenerateStringKey: password, PasswordLength: 40 }
  Ordered:
    Type: AWS::SQS::Queue
    Properties: { FifoQueue: true, ContentBasedDeduplication: true }
  Logs:
    Type: AWS::Logs::LogGroup
  Fn:
    Type: AWS::Serverless::Function
    Metadata: { BuildProperties: { Binary: not-registered } }
    Properties:
      Environment:
        Variables:
          BUS: !GetAtt Bus.Arn
          SECRET: !Ref Generated
          QUEUE: !GetAtt Ordered.QueueName
          GONE: !Ref AWS::NoValue
"#,
    )
    .unwrap();
    let options = StackOptions::new("kinds");
    let first = bootstrap(&template, &aws, &options).await.unwrap();
    let second = bootstrap(&template, &aws, &options).await.unwrap();
    assert_eq!(first.resource("Bus"), second.resource("Bus"));
    assert_eq!(first.resource("Generated"), second.resource("Generated"));
    let env = second.function_env("Fn").unwrap();
    assert!(
        env["BUS"].ends_with(":event-bus/kinds-bus"),
        "{}",
        env["BUS"]
    );
    assert_eq!(env["QUEUE"], "kinds-Ordered.fifo");
    assert!(!env.contains_key("GONE"));
    let secret = aws_sdk_secretsmanager::Client::new(&aws)
        .get_secret_value()
        .secret_id(&env["SECRET"])
        .send()
        .await
        .unwrap();
    let secret: Value = serde_json::from_str(secret.secret_string().unwrap()).unwrap();
    assert_eq!(secret["user"], "svc");
    assert_eq!(secret["password"].as_str().unwrap().len(), 40);

    // A function whose binary has no handler: its routes answer 501, clearly.
    let local = LocalEnv::start(LocalEnvOptions {
        aws_endpoint: Some(endpoint),
        functions: Some(devhost::FunctionRegistry::new()),
        ..LocalEnvOptions::default()
    })
    .await
    .unwrap();
    let token = local.token("demo", "dev-admin", "admin").unwrap();
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/providers", local.url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 501);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("credentials"),
        "{body}"
    );
    local.shutdown().await;
}
