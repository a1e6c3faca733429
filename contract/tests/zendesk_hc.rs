//! The Zendesk Help Center stand-in against Zendesk's Help Center OpenAPI description
//! (`specs/zendesk/`): the localised article, section and category lists and the
//! article show — the test's requests and the stand-in's answers, through the
//! sandbox's recorder. What that older description lacks (the incremental export
//! Conduit imports from, the unlocalised lists) is checked against Zendesk's reference
//! pages in the stand-in's own tests and the import scenarios.

use reqwest::Client;
use sandbox::Sandbox;
use serde_json::{Value, json};

const SUB: &str = "kbcontract";
const TOKEN: &str = "zd-contract-token-0001";
const EMAIL: &str = "admin@kbcontract.test";

async fn get(http: &Client, base: &str, path: &str) -> (u16, Value) {
    let resp = http
        .get(format!("{base}/{SUB}.zendesk.com{path}"))
        .basic_auth(format!("{EMAIL}/token"), Some(TOKEN))
        .send()
        .await
        .expect("send");
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn the_help_center_stand_in_conforms_to_zendesks_help_center_description() {
    let sandbox = Sandbox::start(0).await.expect("sandbox");
    let state = sandbox.state();
    let account: sandbox::Account = serde_json::from_value(json!({
        "provider": "zendesk", "subdomain": SUB, "api_token": TOKEN, "email": EMAIL}))
    .expect("an account");
    state.add_account(account).expect("account");
    let seeded = state.seed_help_center(
        SUB,
        sandbox::HelpCenterSeed {
            articles: 30,
            hostile_article: true,
            ..Default::default()
        },
    );
    let base = sandbox.url();
    let http = Client::builder().no_proxy().build().expect("client");
    state.recorder().start();

    let article = seeded.article_ids[0];
    let translated = state
        .hc_articles(SUB)
        .into_iter()
        .find(|a| a.translation("de").is_some())
        .map(|a| a.id)
        .expect("an article in German");
    for (path, want) in [
        ("/api/v2/help_center/en-us/sections".to_owned(), 200),
        ("/api/v2/help_center/en-us/categories".to_owned(), 200),
        ("/api/v2/help_center/en-us/articles".to_owned(), 200),
        (format!("/api/v2/help_center/en-us/articles/{article}"), 200),
        (format!("/api/v2/help_center/de/articles/{translated}"), 200),
    ] {
        let (status, body) = get(&http, &base, &path).await;
        assert_eq!(status, want, "{path}: {body}");
    }

    let exchanges = state.recorder().stop();
    let specs = contract::Specs::load("zendesk").expect("Zendesk specs");
    let report = contract::check_all(&specs, &exchanges);
    println!("{report}");
    assert!(
        report.unmatched.is_empty(),
        "calls the description lacks: {report}"
    );
    assert!(report.passed(), "{report}");
    assert!(report.exchanges >= 5, "every call was recorded: {report}");
    // Outside the recording: what the description does not declare — the pagination
    // parameters (Zendesk's "Pagination" page) and the 404 (its error model).
    let (status, page) = get(
        &http,
        &base,
        "/api/v2/help_center/en-us/articles?per_page=10&page=2",
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["page"], 2);
    assert_eq!(page["per_page"], 10);
    let (status, missing) = get(&http, &base, "/api/v2/help_center/en-us/articles/999999999").await;
    assert_eq!(status, 404);
    assert_eq!(missing["error"], "RecordNotFound");
    sandbox.shutdown().await;
}
