use conduit::connections::seal_context;
use conduit::crypto::Sealed;
use conduit::domain::{ConnectionId, TenantId};
use scenarios::{Role, TestApp, zendesk};

#[tokio::test]
async fn stored_secrets_are_sealed_and_bound_to_their_tenant_and_record() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.tenant(), app.tenant());
    let admin_a = app.token(&a, Role::Admin);
    let admin_b = app.token(&b, Role::Admin);
    let (_, one) = app
        .post(
            "/v1/connections",
            &admin_a,
            zendesk("zd-sandbox-token-0001"),
        )
        .await;
    let freshdesk = serde_json::json!({"provider": "freshdesk", "credentials": {"subdomain": "acme", "api_key": "fd-sandbox-key-0001"}});
    let (_, two) = app
        .post("/v1/connections", &admin_a, freshdesk.clone())
        .await;
    let (_, other) = app.post("/v1/connections", &admin_b, freshdesk).await;
    let id = |v: &serde_json::Value| ConnectionId::parse(v["id"].as_str().unwrap()).unwrap();
    let (one, two, other) = (id(&one), id(&two), id(&other));

    // At rest: no plaintext anywhere in the item.
    let raw = app.raw_connection(&a, &one).await;
    assert!(!raw.contains("zd-sandbox-token-0001"), "{raw}");
    let sealed: Sealed = app.sealed_secrets(&a, &one).await;

    let env = app.envelope().await;
    let ta = TenantId::parse(&a).unwrap();
    let tb = TenantId::parse(&b).unwrap();
    let plain = env.open(&seal_context(&ta, &one), &sealed).await.unwrap();
    assert!(String::from_utf8_lossy(&plain).contains("zd-sandbox-token-0001"));
    assert!(
        env.open(&seal_context(&ta, &two), &sealed).await.is_err(),
        "opened under another record"
    );
    assert!(
        env.open(&seal_context(&tb, &one), &sealed).await.is_err(),
        "opened under another tenant"
    );
    assert!(env.open(&seal_context(&tb, &other), &sealed).await.is_err());

    // A ciphertext copied onto another record fails there, loudly and without leaking.
    app.overwrite_sealed_secrets(&a, &two, &sealed).await;
    let (status, resp) = app
        .post(
            &format!("/v1/connections/{two}/test"),
            &admin_a,
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 500, "{resp}");
    assert_eq!(resp["error"]["code"], "internal");
    assert!(!resp.to_string().contains("zd-sandbox-token"));
    app.assert_secret_absent("zd-sandbox-token-0001", &a).await;
    app.assert_secret_absent("fd-sandbox-key-0001", &b).await;
}
