//! Chatwoot: private notes, agent bots, inbox assignment.

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::json;

use crate::harness::Harness;

const API: &str = "app.chatwoot.com/api/v1/accounts/1";

fn cw(h: &Harness, method: Method, path: &str) -> RequestBuilder {
    h.request(method, &format!("{API}{path}"))
        .header("api_access_token", "cw-sandbox-token-0001")
}

#[tokio::test]
async fn private_notes_need_content_and_are_listed() {
    let h = Harness::start().await;
    let note = json!({"content": "Summary\nRef: evt_1:int_cw", "message_type": "outgoing", "private": true, "content_type": "text"});
    let anonymous = h
        .send(
            h.request(Method::POST, &format!("{API}/conversations/7/messages"))
                .json(&note),
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.body["error"], "Invalid Access Token");
    let other_account = h
        .send(
            h.request(
                Method::POST,
                "app.chatwoot.com/api/v1/accounts/2/conversations/7/messages",
            )
            .header("api_access_token", "cw-sandbox-token-0001")
            .json(&note),
        )
        .await;
    assert_eq!(other_account.status, StatusCode::UNAUTHORIZED);
    let empty = h
        .send(cw(&h, Method::POST, "/conversations/7/messages").json(&json!({"private": true})))
        .await;
    assert_eq!(empty.status, StatusCode::UNPROCESSABLE_ENTITY);
    let unknown = h
        .send(cw(&h, Method::POST, "/conversations/99999/messages").json(&note))
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.body["error"], "Resource could not be found");
    let created = h
        .send(cw(&h, Method::POST, "/conversations/7/messages").json(&note))
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    assert_eq!(created.body["private"], true);
    let listed = h
        .send(cw(&h, Method::GET, "/conversations/7/messages"))
        .await;
    assert_eq!(listed.body["payload"][0]["id"], created.body["id"]);
}

#[tokio::test]
async fn agent_bots_are_created_listed_and_assigned() {
    let h = Harness::start().await;
    let nameless = h
        .send(
            cw(&h, Method::POST, "/agent_bots")
                .json(&json!({"outgoing_url": "https://x.test/hook"})),
        )
        .await;
    assert_eq!(nameless.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(nameless.body["attributes"][0], "name");
    let bot = h
        .send(cw(&h, Method::POST, "/agent_bots").json(
            &json!({"name": "Front desk", "outgoing_url": "https://x.test/hook", "bot_type": 0}),
        ))
        .await;
    assert_eq!(bot.status, StatusCode::OK, "{}", bot.body);
    let id = bot.body["id"].as_u64().expect("id");
    assert!(bot.body["access_token"].is_string());
    let listed = h.send(cw(&h, Method::GET, "/agent_bots")).await;
    assert_eq!(listed.body[0]["name"], "Front desk");
    let set = h
        .send(cw(&h, Method::POST, "/inboxes/2/set_agent_bot").json(&json!({"agent_bot": id})))
        .await;
    assert_eq!(set.status, StatusCode::NO_CONTENT);
    let unknown_bot = h
        .send(cw(&h, Method::POST, "/inboxes/2/set_agent_bot").json(&json!({"agent_bot": 999})))
        .await;
    assert_eq!(unknown_bot.status, StatusCode::NOT_FOUND);
    let received = h.received("chatwoot").await;
    assert!(
        received
            .iter()
            .all(|r| r["headers"].get("api_access_token").is_none())
    );
    assert!(
        !serde_json::to_string(&received)
            .unwrap_or_default()
            .contains("cw-sandbox-token-0001")
    );

    h.fault(json!({"provider": "chatwoot", "kind": "rate_limit", "retry_after_secs": 4}))
        .await;
    let throttled = h.send(cw(&h, Method::GET, "/agent_bots")).await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(throttled.header("retry-after"), Some("4"));
    assert_eq!(
        throttled.body, "Retry later\n",
        "Rack::Attack's plain-text body"
    );
}
