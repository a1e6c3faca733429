//! Personal connections (issue 14): a user's own Google Gmail and Calendar. Only the
//! owner sees one in full and uses it; an admin sees that it exists and may delete it,
//! never test, change or reconnect it; other members and other tenants do not see it;
//! one per user and kind (a second connect asks again for the same connection).

use sandbox::{OAuthProvider, OAuthUser};
use scenarios::{Role, TestApp, query_param};
use serde_json::{Value, json};

const RETURN_TO: &str = "http://localhost:5173/settings/integrations";
const SEND: &str = "https://www.googleapis.com/auth/gmail.send";
const READ: &str = "https://www.googleapis.com/auth/gmail.readonly";

fn start(extra: Value) -> Value {
    let mut body = json!({ "return_to": RETURN_TO });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body
}

fn google_user(app: &TestApp, prefix: &str) -> OAuthUser {
    let email = format!(
        "{prefix}-{}@sandbox.test",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    );
    app.sandbox()
        .add_oauth_user(OAuthUser::new(OAuthProvider::Google, email))
        .expect("add sandbox user")
}

fn ids(list: &Value) -> Vec<String> {
    list["connections"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_users_gmail_is_theirs_alone_and_admins_see_only_that_it_exists() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant();
    let alice = app.user_token(&tenant, "alice", Role::Member);
    let bob = app.user_token(&tenant, "bob", Role::Member);
    let admin = app.user_token(&tenant, "carol", Role::Admin);
    let stranger = app.token(&app.tenant(), Role::Admin);
    let u = google_user(&app, "alice");
    let hint = format!("login_hint={}", u.email);

    // A member connects their own Gmail: send only, offline, their connection.
    let out = app
        .oauth_connect(&alice, "google", start(json!({"kind": "gmail"})), &hint)
        .await;
    assert_eq!(out.status, "connected", "{}", out.return_url);
    assert_eq!(
        query_param(&out.authorize_url, "scope").as_deref(),
        Some(&*format!("openid email {SEND}"))
    );
    let id = out.connection_id.expect("connection id").to_string();
    let path = format!("/v1/connections/{id}");

    let (status, mine) = app.get("/v1/me/connections", &alice).await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(ids(&mine), vec![id.clone()]);
    let own = &mine["connections"][0];
    assert_eq!(own["owner"], "alice");
    assert_eq!(own["kind"], "gmail");
    assert_eq!(own["connected_as"]["email"], u.email);
    assert_eq!(own["token"]["has_refresh_token"], true);
    let (status, full) = app.get(&path, &alice).await;
    assert_eq!(status, 200, "{full}");
    assert_eq!(full["owner"], "alice");
    assert!(
        full["scopes"]
            .as_array()
            .is_some_and(|s| s.iter().any(|x| x == SEND)),
        "{full}"
    );

    // Another member: not there at all.
    let (status, _) = app.get(&path, &bob).await;
    assert_eq!(status, 404);
    let (_, list) = app.get("/v1/connections", &bob).await;
    assert!(!ids(&list).contains(&id), "{list}");
    assert_eq!(list["stats"]["total"], 0, "{list}");
    assert!(!list.to_string().contains(&u.email));
    let (_, theirs) = app.get("/v1/me/connections", &bob).await;
    assert_eq!(ids(&theirs), Vec::<String>::new());
    for (method, p) in [
        ("POST", format!("{path}/test")),
        ("POST", format!("{path}/deactivate")),
        ("DELETE", path.clone()),
    ] {
        let (status, body) = app.send(method, &p, &bob, None).await;
        assert_eq!(status, 404, "{method} {p} by another member: {body}");
    }
    let (status, body) = app
        .oauth_start(
            &bob,
            "google",
            start(json!({"kind": "gmail", "connection_id": id})),
        )
        .await;
    assert_eq!(status, 404, "another member reconnecting: {body}");

    // An admin: that it exists (owner, kind, status, address), nothing to use.
    let (status, seen) = app.get(&path, &admin).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["owner"], "alice");
    assert_eq!(seen["kind"], "gmail");
    assert_eq!(seen["status"], "connected");
    assert_eq!(seen["connected_email"], u.email);
    for hidden in ["credentials", "scopes", "token", "label", "connected_as"] {
        assert!(
            seen.get(hidden).is_none(),
            "{hidden} shown to an admin: {seen}"
        );
    }
    let (_, list) = app.get("/v1/connections", &admin).await;
    assert!(ids(&list).contains(&id), "{list}");
    assert_eq!(list["stats"]["total"], 1);
    for (method, p, body) in [
        ("POST", format!("{path}/test"), None),
        ("POST", format!("{path}/activate"), None),
        ("POST", format!("{path}/deactivate"), None),
        ("PATCH", path.clone(), Some(json!({"label": "mine now"}))),
    ] {
        let (status, got) = app.send(method, &p, &admin, body).await;
        assert_eq!(status, 403, "{method} {p} by an admin: {got}");
    }
    let (status, body) = app
        .oauth_start(
            &admin,
            "google",
            start(json!({"kind": "gmail", "connection_id": id})),
        )
        .await;
    assert_eq!(status, 403, "an admin reconnecting someone's Gmail: {body}");
    let denied = app
        .audit_actions(&tenant)
        .await
        .into_iter()
        .filter(|(_, outcome)| outcome == "denied")
        .count();
    assert!(denied >= 5, "each refusal is audited: {denied}");

    // Another tenant: nothing.
    let (status, _) = app.get(&path, &stranger).await;
    assert_eq!(status, 404);

    // The owner manages it: renames and tests it.
    let (status, renamed) = app.patch(&path, &alice, json!({"label": "My Gmail"})).await;
    assert_eq!(status, 200, "{renamed}");
    let (status, tested) = app.post(&format!("{path}/test"), &alice, json!({})).await;
    assert_eq!(status, 200, "{tested}");
    assert_eq!(tested["ok"], true, "{tested}");

    // A second connect of the same kind asks again for the same connection, adding
    // reading to sending (incremental).
    let again = app
        .oauth_connect(
            &alice,
            "google",
            start(json!({"kind": "gmail", "uses": ["action:send_email", "action:read_email"]})),
            &hint,
        )
        .await;
    assert_eq!(again.status, "connected", "{}", again.return_url);
    assert_eq!(again.connection_id.map(|c| c.to_string()), Some(id.clone()));
    assert_eq!(
        query_param(&again.authorize_url, "include_granted_scopes").as_deref(),
        Some("true")
    );
    let scope = query_param(&again.authorize_url, "scope").unwrap_or_default();
    assert!(scope.contains(SEND) && scope.contains(READ), "{scope}");
    let (_, mine) = app.get("/v1/me/connections", &alice).await;
    assert_eq!(ids(&mine), vec![id.clone()], "still one Gmail for alice");
    assert!(
        mine["connections"][0]["scopes"]
            .as_array()
            .is_some_and(|s| s.iter().any(|x| x == READ)),
        "{mine}"
    );

    // Bob may connect the same (shared) mailbox as his own: a connection of his.
    let bobs = app
        .oauth_connect(&bob, "google", start(json!({"kind": "gmail"})), &hint)
        .await;
    assert_eq!(bobs.status, "connected", "{}", bobs.return_url);
    let bobs = bobs.connection_id.expect("bob's").to_string();
    assert_ne!(bobs, id);
    let (_, list) = app.get("/v1/connections", &alice).await;
    assert_eq!(ids(&list), vec![id.clone()], "alice sees only hers: {list}");

    // A member starts only personal connections.
    let (status, body) = app.oauth_start(&alice, "hubspot", start(json!({}))).await;
    assert_eq!(status, 403, "{body}");

    // An admin removes a leaver's connection; it is gone for its owner too.
    let (status, body) = app.delete(&path, &admin).await;
    assert!(status == 204 || status == 200, "{status} {body}");
    let (_, mine) = app.get("/v1/me/connections", &alice).await;
    assert_eq!(ids(&mine), Vec::<String>::new());
    let (_, list) = app.get("/v1/connections", &admin).await;
    assert_eq!(ids(&list), vec![bobs]);
}

#[tokio::test]
async fn gmail_and_calendar_are_one_each_per_user() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant();
    let alice = app.user_token(&tenant, "alice", Role::Member);
    let u = google_user(&app, "cal");
    let hint = format!("login_hint={}", u.email);
    let mut seen = Vec::new();
    for kind in ["gmail", "calendar", "calendar"] {
        let out = app
            .oauth_connect(&alice, "google", start(json!({"kind": kind})), &hint)
            .await;
        assert_eq!(out.status, "connected", "{kind}: {}", out.return_url);
        seen.push(out.connection_id.expect("id").to_string());
    }
    assert_ne!(seen[0], seen[1], "gmail and calendar are separate");
    assert_eq!(
        seen[1], seen[2],
        "a second calendar connect is the same connection"
    );
    let (_, mine) = app.get("/v1/me/connections", &alice).await;
    assert_eq!(ids(&mine).len(), 2, "{mine}");
    // A reconnect keeps the kind.
    let (status, body) = app
        .oauth_start(
            &alice,
            "google",
            start(json!({"kind": "gmail", "connection_id": seen[1]})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_kind");
}

#[tokio::test]
async fn a_user_sends_mail_as_themselves_and_bad_mail_sends_nothing() {
    use base64::Engine as _;
    let app = TestApp::spawn().await;
    let tenant = app.tenant();
    let alice = app.user_token(&tenant, "alice", Role::Member);
    let bob = app.user_token(&tenant, "bob", Role::Member);
    let u = google_user(&app, "mail");
    let hint = format!("login_hint={}", u.email);
    let notes = "Private notes of the call, body-secret-7731";
    let mail = json!({
        "to": ["Zoë Ü <zoe@example.com>"], "cc": ["c@example.com"], "bcc": ["b@example.com"],
        "subject": "Résumé of your call — 通话摘要",
        "text": notes, "html": format!("<p>{notes}</p>"),
        "attachments": [{"filename": "notes.txt", "content_type": "text/plain",
                         "content": base64::engine::general_purpose::STANDARD.encode("attached-secret-9120")}],
        "in_reply_to": "<earlier@mail.example.com>",
    });

    // Nobody sends before connecting their own Gmail.
    let (status, body) = app.post("/v1/me/gmail/send", &alice, mail.clone()).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "gmail_not_connected");
    let out = app
        .oauth_connect(&alice, "google", start(json!({"kind": "gmail"})), &hint)
        .await;
    assert_eq!(out.status, "connected", "{}", out.return_url);
    let id = out.connection_id.expect("id");

    // Alice's own Gmail sends it; Gmail receives the MIME message Conduit built.
    let (status, sent) = app.post("/v1/me/gmail/send", &alice, mail.clone()).await;
    assert_eq!(status, 200, "{sent}");
    assert!(
        sent["message_id"].as_str().is_some_and(|s| !s.is_empty()),
        "{sent}"
    );
    assert!(
        sent["thread_id"].as_str().is_some_and(|s| !s.is_empty()),
        "{sent}"
    );
    let raw = app.sandbox().gmail_sent(&u.email);
    assert_eq!(raw.len(), 1, "one message reached Gmail");
    let headers = raw[0].split("\r\n\r\n").next().unwrap_or("");
    assert!(
        headers.contains(&format!("From: <{}>", u.email)),
        "{headers}"
    );
    assert!(
        headers.contains("Subject: =?utf-8?"),
        "non-ASCII subject in encoded words: {headers}"
    );
    assert!(
        headers.contains("zoe@example.com") && headers.contains("c@example.com"),
        "{headers}"
    );
    assert!(
        headers.contains("In-Reply-To: <earlier@mail.example.com>"),
        "{headers}"
    );
    assert!(headers.contains("multipart/mixed"), "{headers}");
    assert!(
        raw[0].contains("multipart/alternative"),
        "text and HTML as alternatives"
    );
    assert!(raw[0].contains("filename=\"notes.txt\""), "the attachment");
    // Read as a mail reader reads it: every part as it was sent.
    let parsed = app.sandbox().gmail_sent_parsed(&u.email);
    let m = &parsed[0];
    assert_eq!(m.subject.as_deref(), Some("Résumé of your call — 通话摘要"));
    assert_eq!(m.from, vec![u.email.clone()]);
    assert_eq!(
        (m.to.clone(), m.cc.clone(), m.bcc.clone()),
        (
            vec!["zoe@example.com".to_owned()],
            vec!["c@example.com".to_owned()],
            vec!["b@example.com".to_owned()]
        )
    );
    assert_eq!(m.in_reply_to.as_deref(), Some("earlier@mail.example.com"));
    assert_eq!(m.text.as_deref().map(str::trim), Some(notes));
    assert!(
        m.html.as_deref().is_some_and(|h| h.contains(notes)),
        "{:?}",
        m.html
    );
    assert_eq!(
        m.attachments,
        vec![(
            "notes.txt".to_owned(),
            "text/plain".to_owned(),
            b"attached-secret-9120".to_vec()
        )]
    );

    // A reply in the thread stays in it; an unknown thread is refused.
    let mut reply = mail.clone();
    reply["thread_id"] = sent["thread_id"].clone();
    reply["subject"] = json!("Re: Résumé of your call");
    let (status, replied) = app.post("/v1/me/gmail/send", &alice, reply.clone()).await;
    assert_eq!(status, 200, "{replied}");
    assert_eq!(replied["thread_id"], sent["thread_id"]);
    assert_ne!(replied["message_id"], sent["message_id"]);
    reply["thread_id"] = json!("18cffffffffffff0");
    let (status, body) = app.post("/v1/me/gmail/send", &alice, reply).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(app.sandbox().gmail_sent(&u.email).len(), 2);

    // Bob has no Gmail: Alice's is not his to use.
    let (status, body) = app.post("/v1/me/gmail/send", &bob, mail.clone()).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "gmail_not_connected");

    // Header injection, bad addresses, nothing to say: refused, nothing sent.
    let mut injected = mail.clone();
    injected["subject"] = json!("Hello\r\nBcc: everyone@evil.test");
    let (status, body) = app.post("/v1/me/gmail/send", &alice, injected).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("header_injection")),
        "{body}"
    );
    let mut injected = mail.clone();
    injected["to"] = json!(["zoe@example.com\nBcc: everyone@evil.test"]);
    let (status, body) = app.post("/v1/me/gmail/send", &alice, injected).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("header_injection")),
        "{body}"
    );
    let mut bad = mail.clone();
    bad["to"] = json!(["not an address"]);
    bad["text"] = Value::Null;
    bad["html"] = Value::Null;
    let (status, body) = app.post("/v1/me/gmail/send", &alice, bad).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_fields")),
        "{body}"
    );
    let fields: Vec<&str> = body["error"]["details"]
        .as_array()
        .map(|d| d.iter().filter_map(|f| f["field"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        fields.contains(&"to[0]") && fields.contains(&"text"),
        "{body}"
    );
    assert_eq!(
        app.sandbox().gmail_sent(&u.email).len(),
        2,
        "nothing more reached Gmail"
    );

    // A token due for refresh is refreshed during the send.
    let before = app
        .connection(&tenant, &id)
        .await
        .token
        .map(|t| t.generation);
    app.make_due(&tenant, &id).await;
    let (status, body) = app.post("/v1/me/gmail/send", &alice, mail.clone()).await;
    assert_eq!(status, 200, "{body}");
    let after = app
        .connection(&tenant, &id)
        .await
        .token
        .map(|t| t.generation);
    assert!(after > before, "refreshed: {before:?} → {after:?}");
    assert_eq!(app.sandbox().gmail_sent(&u.email).len(), 3);

    // The profile is the connected address (send only: no mailbox totals).
    let (status, profile) = app.get("/v1/me/gmail/profile", &alice).await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["email_address"], u.email);
    assert!(profile.get("messages_total").is_none(), "{profile}");

    // The dev host counts the google function's invocations and its handler's CPU
    // (what `make bench` reads per send).
    let (status, report) = app.get("/_devhost/functions", "").await;
    assert_eq!(status, 200, "{report}");
    let google = report["functions"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["function"] == "GoogleFunction"))
        .cloned()
        .unwrap_or_default();
    assert!(
        google["invocations"].as_u64().is_some_and(|n| n >= 7),
        "{report}"
    );
    assert!(
        google["cpu_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "{report}"
    );

    // No message body, attachment or token in the logs.
    let logs = app.logs();
    for secret in [
        "body-secret-7731",
        "attached-secret-9120",
        "YXR0YWNoZWQtc2VjcmV0LTkxMjA",
    ] {
        assert!(!logs.contains(secret), "{secret} logged");
    }
    let tokens = app.tokens(&tenant, &id).await;
    if let Some(token) = tokens.get("access_token") {
        assert!(!logs.contains(token.as_str()), "the access token logged");
    }
}

#[tokio::test]
async fn a_revoked_grant_stops_that_users_gmail_only() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant();
    let alice = app.user_token(&tenant, "alice", Role::Member);
    let bob = app.user_token(&tenant, "bob", Role::Member);
    let a = google_user(&app, "revoked");
    let b = google_user(&app, "kept");
    let mut ids = Vec::new();
    for (token, u) in [(&alice, &a), (&bob, &b)] {
        let out = app
            .oauth_connect(
                token,
                "google",
                start(json!({"kind": "gmail"})),
                &format!("login_hint={}", u.email),
            )
            .await;
        assert_eq!(out.status, "connected", "{}", out.return_url);
        ids.push(out.connection_id.expect("id"));
    }
    let mail = json!({"to": ["x@example.com"], "subject": "s", "text": "t"});
    // Alice removes Conduit from her Google account; her token is due.
    assert_eq!(
        app.sandbox()
            .revoke_grants_for_user(OAuthProvider::Google, &a.email),
        1
    );
    app.make_due(&tenant, &ids[0]).await;
    let (status, body) = app.post("/v1/me/gmail/send", &alice, mail.clone()).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "needs_reauth", "{body}");
    let (_, mine) = app.get("/v1/me/connections", &alice).await;
    assert_eq!(mine["connections"][0]["status"], "needs_reauth", "{mine}");
    assert!(app.sandbox().gmail_sent(&a.email).is_empty());
    // Bob's Gmail is untouched.
    let (status, body) = app.post("/v1/me/gmail/send", &bob, mail).await;
    assert_eq!(status, 200, "{body}");
    let (_, his) = app.get("/v1/me/connections", &bob).await;
    assert_eq!(his["connections"][0]["status"], "connected", "{his}");
    assert_eq!(app.sandbox().gmail_sent(&b.email).len(), 1);
}

#[tokio::test]
async fn gmail_holds_each_user_to_googles_per_user_quota() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant();
    let alice = app.user_token(&tenant, "alice", Role::Member);
    let bob = app.user_token(&tenant, "bob", Role::Member);
    let a = google_user(&app, "quota-a");
    let b = google_user(&app, "quota-b");
    for (token, u) in [(&alice, &a), (&bob, &b)] {
        let out = app
            .oauth_connect(
                token,
                "google",
                start(json!({"kind": "gmail"})),
                &format!("login_hint={}", u.email),
            )
            .await;
        assert_eq!(out.status, "connected", "{}", out.return_url);
    }
    let mail = json!({"to": ["x@example.com"], "subject": "s", "text": "t"});
    // 6,000 units a minute at 100 a send: 60 sends, then Google refuses.
    let per_minute = (sandbox::providers::google_api::GMAIL_USER_UNITS_PER_MINUTE / 100) as usize;
    for i in 0..per_minute {
        let (status, body) = app.post("/v1/me/gmail/send", &alice, mail.clone()).await;
        assert_eq!(status, 200, "send {i}: {body}");
    }
    let (status, headers, body) = app
        .send_headed("POST", "/v1/me/gmail/send", &alice, Some(mail.clone()), &[])
        .await;
    assert_eq!(status, 503, "past the user's quota: {body}");
    let wait: u64 = headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_default();
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    assert_eq!(app.sandbox().gmail_sent(&a.email).len(), per_minute);
    // The quota is per user: Bob still sends.
    let (status, body) = app.post("/v1/me/gmail/send", &bob, mail).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_users_calendar_events_are_created_changed_listed_incrementally_and_deleted() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant();
    let alice = app.user_token(&tenant, "alice", Role::Member);
    let bob = app.user_token(&tenant, "bob", Role::Member);
    let u = google_user(&app, "calendar");
    let (status, body) = app.get("/v1/me/calendar/events", &alice).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("calendar_not_connected")),
        "{body}"
    );
    let out = app
        .oauth_connect(
            &alice,
            "google",
            start(json!({"kind": "calendar"})),
            &format!("login_hint={}", u.email),
        )
        .await;
    assert_eq!(out.status, "connected", "{}", out.return_url);

    // Create: a timed event with an attendee and reminders, and an all-day one.
    let (status, call) = app
        .post(
            "/v1/me/calendar/events?send_updates=all",
            &alice,
            json!({"summary": "Call back Zoë",
                   "start": {"date_time": "2026-12-07T10:00:00+01:00", "time_zone": "Europe/Paris"},
                   "end": {"date_time": "2026-12-07T10:30:00+01:00", "time_zone": "Europe/Paris"},
                   "attendees": [{"email": "zoe@example.com", "display_name": "Zoë"}],
                   "reminders": {"use_default": false, "overrides": [{"method": "popup", "minutes": 10}]}}),
        )
        .await;
    assert_eq!(status, 201, "{call}");
    assert_eq!(call["attendees"][0]["email"], "zoe@example.com");
    assert_eq!(call["start"]["timeZone"], "Europe/Paris");
    let id = call["id"].as_str().expect("id").to_owned();
    let etag = call["etag"].as_str().expect("etag").to_owned();
    let (status, offsite) = app
        .post(
            "/v1/me/calendar/events",
            &alice,
            json!({"summary": "Offsite", "start": {"date": "2026-12-08"}, "end": {"date": "2026-12-09"}}),
        )
        .await;
    assert_eq!(status, 201, "{offsite}");
    // Refused before Google sees it: a date against a date_time, no end, a bad zone.
    for bad in [
        json!({"start": {"date": "2026-12-08"}, "end": {"date_time": "2026-12-08T10:00:00Z"}}),
        json!({"start": {"date": "2026-12-08"}}),
        json!({"start": {"date_time": "2026-12-08T10:00:00Z", "time_zone": "Not A Zone!"},
               "end": {"date_time": "2026-12-08T11:00:00Z"}}),
        json!({"start": {"date_time": "tomorrow"}, "end": {"date_time": "2026-12-08T11:00:00Z"}}),
    ] {
        let (status, body) = app
            .post("/v1/me/calendar/events", &alice, bad.clone())
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_fields")),
            "{bad}: {body}"
        );
    }

    // A time range; paging; the last page's sync token.
    let (status, day) = app
        .get(
            "/v1/me/calendar/events?time_min=2026-12-07T00:00:00Z&time_max=2026-12-07T23:59:59Z",
            &alice,
        )
        .await;
    assert_eq!(status, 200, "{day}");
    assert_eq!(ids_of(&day["events"]), vec![id.clone()]);
    let (_, first) = app.get("/v1/me/calendar/events?limit=1", &alice).await;
    assert_eq!(first["events"].as_array().map(Vec::len), Some(1), "{first}");
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_owned();
    assert!(first["next_sync_token"].is_null());
    let (_, second) = app
        .get(
            &format!("/v1/me/calendar/events?limit=1&cursor={cursor}"),
            &alice,
        )
        .await;
    assert_eq!(
        second["events"].as_array().map(Vec::len),
        Some(1),
        "{second}"
    );
    assert!(second["next_cursor"].is_null());
    let sync = second["next_sync_token"]
        .as_str()
        .expect("sync token")
        .to_owned();

    // A change with the ETag read; a second change with the old one is a conflict.
    let path = format!("/v1/me/calendar/events/{id}");
    let (status, _, moved) = app
        .send_headed(
            "PATCH",
            &path,
            &alice,
            Some(json!({"summary": "Call back Zoë (moved)"})),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(status, 200, "{moved}");
    let new_etag = moved["etag"].as_str().expect("etag").to_owned();
    assert_ne!(new_etag, etag);
    let (status, _, stale) = app
        .send_headed(
            "PATCH",
            &path,
            &alice,
            Some(json!({"summary": "overwritten?"})),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(
        (status, stale["error"]["code"].as_str()),
        (409, Some("event_changed")),
        "{stale}"
    );

    // Incremental: only what changed since the token.
    let (_, changes) = app
        .get(&format!("/v1/me/calendar/events?sync_token={sync}"), &alice)
        .await;
    assert_eq!(ids_of(&changes["events"]), vec![id.clone()], "{changes}");
    assert_eq!(changes["events"][0]["summary"], "Call back Zoë (moved)");
    assert_eq!(changes["full_resync"], false);
    let sync = changes["next_sync_token"]
        .as_str()
        .expect("sync")
        .to_owned();

    // Delete with the current ETag; the next incremental list shows it cancelled.
    let (status, _, body) = app
        .send_headed("DELETE", &path, &alice, None, &[("if-match", &new_etag)])
        .await;
    assert_eq!(status, 204, "{body}");
    let (_, changes) = app
        .get(&format!("/v1/me/calendar/events?sync_token={sync}"), &alice)
        .await;
    assert_eq!(changes["events"][0]["status"], "cancelled", "{changes}");
    let sync = changes["next_sync_token"]
        .as_str()
        .expect("sync")
        .to_owned();

    // Google expires the token (410): the listing starts over in full, and says so.
    app.sandbox().expire_calendar_sync_tokens(&u.email);
    let (status, resync) = app
        .get(&format!("/v1/me/calendar/events?sync_token={sync}"), &alice)
        .await;
    assert_eq!(status, 200, "{resync}");
    assert_eq!(resync["full_resync"], true);
    assert_eq!(
        ids_of(&resync["events"]),
        vec![offsite["id"].as_str().unwrap_or("").to_owned()]
    );
    assert!(resync["next_sync_token"].is_string());

    // The calendar by its id (from the calendars' list) is the primary one; another
    // user's is not found.
    let (status, mine) = app
        .get(
            &format!("/v1/me/calendar/events?calendar={}", u.email),
            &alice,
        )
        .await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(ids_of(&mine["events"]), ids_of(&resync["events"]));
    let (status, body) = app
        .get(
            "/v1/me/calendar/events?calendar=someone-else@example.com",
            &alice,
        )
        .await;
    assert_eq!(status, 404, "{body}");

    // Bob has no Calendar connection: Alice's is not his.
    let (status, body) = app.get("/v1/me/calendar/events", &bob).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("calendar_not_connected")),
        "{body}"
    );
    let (status, _, body) = app.send_headed("DELETE", &path, &bob, None, &[]).await;
    assert_eq!(status, 409, "{body}");
}

fn ids_of(events: &Value) -> Vec<String> {
    events
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn calendars_and_free_busy_need_reading_asked_for_incrementally() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant();
    let alice = app.user_token(&tenant, "alice", Role::Member);
    let u = google_user(&app, "freebusy");
    let hint = format!("login_hint={}", u.email);
    let out = app
        .oauth_connect(&alice, "google", start(json!({"kind": "calendar"})), &hint)
        .await;
    assert_eq!(out.status, "connected", "{}", out.return_url);
    for (at, end) in [("10:00", "10:30"), ("14:00", "15:00")] {
        let (status, body) = app
            .post(
                "/v1/me/calendar/events",
                &alice,
                json!({"summary": "busy",
                       "start": {"date_time": format!("2026-12-07T{at}:00Z")},
                       "end": {"date_time": format!("2026-12-07T{end}:00Z")}}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let query = json!({"time_min": "2026-12-07T00:00:00Z", "time_max": "2026-12-08T00:00:00Z"});
    // Events only were granted: calendars and free/busy ask for more, with the way.
    for (method, path, body) in [
        ("GET", "/v1/me/calendar/calendars", None),
        ("POST", "/v1/me/calendar/freebusy", Some(query.clone())),
    ] {
        let (status, err) = app.send(method, path, &alice, body).await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (409, Some("scopes_missing")),
            "{path}: {err}"
        );
        assert!(err.to_string().contains("calendar.readonly"), "{err}");
    }
    let again = app
        .oauth_connect(
            &alice,
            "google",
            start(json!({"kind": "calendar",
                         "uses": ["action:create_event", "action:list_calendars", "action:free_busy"]})),
            &hint,
        )
        .await;
    assert_eq!(again.status, "connected", "{}", again.return_url);
    assert_eq!(
        again.connection_id, out.connection_id,
        "the same connection, more scopes"
    );

    let (status, cals) = app.get("/v1/me/calendar/calendars", &alice).await;
    assert_eq!(status, 200, "{cals}");
    assert_eq!(cals["calendars"][0]["id"], u.email);
    assert_eq!(cals["calendars"][0]["primary"], true);

    let mut both = query.clone();
    both["calendars"] = json!(["primary", "someone-else@example.com"]);
    let (status, fb) = app.post("/v1/me/calendar/freebusy", &alice, both).await;
    assert_eq!(status, 200, "{fb}");
    let busy = fb["calendars"]["primary"]["busy"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(busy.len(), 2, "{fb}");
    assert!(
        busy[0]["start"]
            .as_str()
            .is_some_and(|s| s.starts_with("2026-12-07T10:00")),
        "{fb}"
    );
    assert_eq!(
        fb["calendars"]["someone-else@example.com"]["errors"][0], "notFound",
        "{fb}"
    );

    let (status, err) = app
        .post(
            "/v1/me/calendar/freebusy",
            &alice,
            json!({"time_min": "2026-12-08T00:00:00Z", "time_max": "2026-12-07T00:00:00Z"}),
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("invalid_fields")),
        "{err}"
    );
}

/// A contact request from `email`, handled by an assistant `owner` owns (if any).
fn contact_request(tenant: &str, n: &str, email: &str, owner: Option<&str>) -> Value {
    let mut event = json!({
        "schema_version": 1, "type": "contact_request", "event_id": format!("evt_personal_{n}"),
        "tenant_id": tenant, "assistant_id": "asst_frontdesk",
        "occurred_at": "2026-12-06T09:00:00Z",
        "conversation": {"id": format!("conv_{n}"), "channel": "voice",
                         "started_at": "2026-12-06T08:55:00Z",
                         "summary": format!("Wants the bin day moved, private-summary-{n}"),
                         "transcript_url": "https://app.example.com/t/1"},
        "contact": {"name": "Jane Citizen", "email": email, "phone": "+61412345678"},
    });
    if let Some(o) = owner {
        event["assistant_owner_id"] = json!(o);
    }
    event
}

/// Alice (`alice`) connects her own Gmail and Calendar as Google user `email` and, when
/// `lend`, lets the tenant's automations use both; their connection ids.
async fn connect_both(app: &TestApp, alice: &str, email: &str, lend: bool) -> (String, String) {
    let hint = format!("login_hint={email}");
    let mut ids = Vec::new();
    for kind in ["gmail", "calendar"] {
        let out = app
            .oauth_connect(alice, "google", start(json!({"kind": kind})), &hint)
            .await;
        assert_eq!(out.status, "connected", "{}", out.return_url);
        let id = out.connection_id.expect("connection id").to_string();
        if lend {
            let (status, body) = app
                .patch(
                    &format!("/v1/connections/{id}"),
                    alice,
                    json!({"allow_automations": true}),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["allow_automations"], true, "{body}");
        }
        ids.push(id);
    }
    (ids.remove(0), ids.remove(0))
}

/// Two Google steps act as a user only with that user's consent: Alice owns the
/// assistant and lends her Gmail and Calendar to automations; then a contact request
/// runs the chain — a follow-up on her calendar with the contact invited, then the
/// summary from her Gmail to the contact. An admin never names or sends through her
/// connections; withdrawing the consent stops the next run.
#[tokio::test]
async fn the_gmail_and_calendar_steps_act_as_a_user_who_lets_them_in_a_chain() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant();
    let alice = app.user_token(&tenant, "alice", Role::Member);
    let admin = app.user_token(&tenant, "carol", Role::Admin);
    let u = google_user(&app, "owner");
    let (gmail, calendar) = connect_both(&app, &alice, &u.email, false).await;
    let integration = |action: &str, priority: u32, who: Value| {
        json!({"name": action, "provider": "google", "action": action, "acting_user": who,
               "triggers": [{"event": "contact_request"}], "priority": priority,
               "retry": {"max_attempts": 2, "initial_backoff_seconds": 1, "max_backoff_seconds": 1}})
    };

    // Not before Alice lets automations use them; an admin never names them.
    let mut named = integration("gmail.send_summary", 20, Value::Null);
    named["connection_id"] = json!(gmail);
    named.as_object_mut().map(|o| o.remove("acting_user"));
    let (status, body) = app.post("/v1/integrations", &admin, named).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("only its owner"), "{body}");
    let (status, body) = app
        .post(
            "/v1/integrations",
            &admin,
            integration("calendar.create_follow_up", 10, json!({"user_id": "alice"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("acting_user.user_id"), "{body}");
    let (status, body) = app
        .post(
            "/v1/integrations",
            &admin,
            integration("log_call", 10, json!({"user_id": "alice"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    for (who, why) in [
        (json!({}), "exactly one"),
        (
            json!({"user_id": "alice", "assistant_owner": true}),
            "exactly one",
        ),
    ] {
        let (status, body) = app
            .post(
                "/v1/integrations",
                &admin,
                integration("gmail.send_summary", 20, who),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        assert!(body.to_string().contains(why), "{body}");
    }

    // Only Alice lends them; an admin sees that she did.
    let (status, body) = app
        .patch(
            &format!("/v1/connections/{gmail}"),
            &admin,
            json!({"allow_automations": true}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    for id in [&gmail, &calendar] {
        let (status, body) = app
            .patch(
                &format!("/v1/connections/{id}"),
                &alice,
                json!({"allow_automations": true}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["allow_automations"], true, "{body}");
    }
    let (_, seen) = app.get(&format!("/v1/connections/{gmail}"), &admin).await;
    assert_eq!(seen["allow_automations"], true, "{seen}");
    assert!(
        seen.get("scopes").is_none(),
        "an admin sees existence only: {seen}"
    );

    let (status, follow_up) = app
        .post(
            "/v1/integrations",
            &admin,
            integration("calendar.create_follow_up", 10, json!({"user_id": "alice"})),
        )
        .await;
    assert_eq!(status, 201, "{follow_up}");
    assert_eq!(follow_up["acting_user"]["user_id"], "alice");
    let (status, summary) = app
        .post(
            "/v1/integrations",
            &admin,
            integration("gmail.send_summary", 20, json!({"assistant_owner": true})),
        )
        .await;
    assert_eq!(status, 201, "{summary}");
    let summary_id = summary["id"].as_str().expect("id").to_owned();
    let follow_up_id = follow_up["id"].as_str().expect("id").to_owned();

    // The chain: the follow-up on Alice's calendar, then the summary from her Gmail.
    let contact = format!("jane-{}@example.com", &u.email[6..20]);
    let d = app
        .dispatched(
            &admin,
            contact_request(&tenant, "1", &contact, Some("alice")),
        )
        .await;
    assert_eq!(d["status"], "succeeded", "{d}");
    let steps = d["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 2, "{d}");
    assert_eq!(steps[0]["integration_id"], follow_up_id.as_str());
    let event_id = steps[0]["external_id"]
        .as_str()
        .expect("event id")
        .to_owned();
    assert_eq!(event_id.len(), 64, "a base32hex id of the key: {event_id}");
    let message_id = steps[1]["external_id"].as_str().expect("message id");
    let (status, listed) = app
        .get(
            "/v1/me/calendar/events?time_min=2026-12-07T00:00:00Z&time_max=2026-12-08T00:00:00Z",
            &alice,
        )
        .await;
    assert_eq!(status, 200, "{listed}");
    let events = listed["events"].as_array().expect("events");
    let made: Vec<&Value> = events
        .iter()
        .filter(|e| e["id"] == event_id.as_str())
        .collect();
    assert_eq!(made.len(), 1, "{listed}");
    assert_eq!(made[0]["summary"], "Follow up: Jane Citizen");
    assert_eq!(made[0]["attendees"][0]["email"], contact.as_str());
    assert_eq!(made[0]["start"]["dateTime"], "2026-12-07T09:00:00Z");
    assert_eq!(made[0]["end"]["dateTime"], "2026-12-07T09:30:00Z");
    assert!(
        made[0]["htmlLink"]
            .as_str()
            .is_some_and(|l| steps[0]["external_url"] == l),
        "{d}"
    );
    let sent = app.sandbox().gmail_sent_parsed(&u.email);
    assert_eq!(sent.len(), 1, "one message");
    let m = &sent[0];
    assert_eq!(m.from, vec![u.email.clone()]);
    assert_eq!(m.to, vec![contact.clone()]);
    assert_eq!(
        m.subject.as_deref(),
        Some("Summary of your voice conversation on 2026-12-06")
    );
    assert!(
        m.text
            .as_deref()
            .is_some_and(|t| t.contains("private-summary-1")
                && t.contains("Hello Jane,")
                && t.contains("https://app.example.com/t/1")),
        "{:?}",
        m.text
    );
    assert!(
        m.html
            .as_deref()
            .is_some_and(|h| h.contains("<blockquote>"))
    );
    assert!(!message_id.is_empty());

    // An admin does not send through them by hand; nor does the test preview use them
    // beyond saying whose they are.
    for path in [
        format!("/v1/integrations/{summary_id}/send"),
        format!("/v1/integrations/{follow_up_id}/send"),
    ] {
        let event = contact_request(&tenant, "2", &contact, Some("alice"));
        let (status, body) = app.post(&path, &admin, json!({"event": event})).await;
        assert_eq!(status, 403, "{path}: {body}");
    }
    let (status, preview) = app
        .post(
            &format!("/v1/integrations/{follow_up_id}/test"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["connection"]["status"], "ok", "{preview}");
    assert_eq!(preview["connection"]["acting_user"], "alice", "{preview}");
    assert_eq!(app.sandbox().gmail_sent_parsed(&u.email).len(), 1);

    // An event naming no assistant owner: the summary cannot act as anyone.
    let d = app
        .dispatched(&admin, contact_request(&tenant, "3", &contact, None))
        .await;
    assert_eq!(d["status"], "partial", "{d}");
    assert_eq!(d["steps"][1]["error"]["code"], "missing_fields", "{d}");

    // Alice withdraws her Gmail: the next summary fails, her calendar still serves.
    let (status, body) = app
        .patch(
            &format!("/v1/connections/{gmail}"),
            &alice,
            json!({"allow_automations": false}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let d = app
        .dispatched(
            &admin,
            contact_request(&tenant, "4", &contact, Some("alice")),
        )
        .await;
    assert_eq!(d["steps"][0]["status"], "succeeded", "{d}");
    assert_eq!(d["steps"][1]["status"], "failed", "{d}");
    assert_eq!(
        d["steps"][1]["error"]["code"], "automations_not_allowed",
        "{d}"
    );
    assert_eq!(
        app.sandbox().gmail_sent_parsed(&u.email).len(),
        1,
        "nothing more sent"
    );

    // No summary, token or address book content in the logs.
    let logs = app.logs();
    for n in ["1", "3", "4"] {
        let secret = format!("private-summary-{n}");
        assert!(!logs.contains(&secret), "{secret} logged");
    }
    assert!(!logs.contains(&contact), "the contact's address logged");
    for (_, token) in app
        .tokens(
            &tenant,
            &conduit::domain::ConnectionId::parse(&gmail).expect("id"),
        )
        .await
    {
        assert!(!logs.contains(token.as_str()), "a token logged");
    }
}

/// Neither step makes a second copy when an answer is lost: the calendar's follow-up is
/// looked up by its key-derived id before a retry; Gmail, which has nothing to look up
/// with a send-only grant, is not sent again by itself (`maybe_sent`) until an operator
/// retries the dispatch.
#[tokio::test]
async fn a_lost_answer_makes_no_second_event_or_message() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant();
    let alice = app.user_token(&tenant, "alice", Role::Member);
    let admin = app.user_token(&tenant, "carol", Role::Admin);
    let u = google_user(&app, "lost");
    connect_both(&app, &alice, &u.email, true).await;
    for (action, priority) in [
        ("calendar.create_follow_up", 10),
        ("gmail.send_summary", 20),
    ] {
        let (status, body) = app
            .post(
                "/v1/integrations",
                &admin,
                json!({"name": action, "provider": "google", "action": action,
                       "acting_user": {"assistant_owner": true},
                       "triggers": [{"event": "contact_request"}], "priority": priority,
                       "retry": {"max_attempts": 3, "initial_backoff_seconds": 1, "max_backoff_seconds": 1}}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    // Both effects happen and their answers are lost (502).
    app.sandbox()
        .google_fail_after_effect(&u.email, "google.calendar_events_insert", 502, 1);
    app.sandbox()
        .google_fail_after_effect(&u.email, "google.gmail_send", 502, 1);
    let contact = "jane-lost@example.com";
    let d = app
        .dispatched(
            &admin,
            contact_request(&tenant, "lost1", contact, Some("alice")),
        )
        .await;
    assert_eq!(d["status"], "partial", "{d}");
    let steps = d["steps"].as_array().expect("steps");
    assert_eq!(steps[0]["status"], "succeeded", "the lookup found it: {d}");
    assert!(steps[0]["attempts"].as_u64() >= Some(2), "{d}");
    let event_id = steps[0]["external_id"].as_str().expect("event id");
    let (_, listed) = app
        .get(
            "/v1/me/calendar/events?time_min=2026-12-07T00:00:00Z&time_max=2026-12-08T00:00:00Z",
            &alice,
        )
        .await;
    let ids = ids_of(&listed["events"]);
    assert_eq!(ids, vec![event_id.to_owned()], "one follow-up: {listed}");
    assert_eq!(steps[1]["status"], "failed", "{d}");
    assert_eq!(steps[1]["error"]["code"], "maybe_sent", "{d}");
    assert_eq!(steps[1]["attempts"], 1, "not sent again by itself: {d}");
    assert_eq!(app.sandbox().gmail_sent_parsed(&u.email).len(), 1);

    // An operator who decides it did not arrive retries: sent again, once.
    let id = d["id"].as_str().expect("dispatch id");
    let (status, body) = app
        .post(&format!("/v1/dispatches/{id}/retry"), &admin, json!({}))
        .await;
    assert!(status == 200 || status == 202, "{status}: {body}");
    let d = app.dispatch_settled(&admin, id).await;
    assert_eq!(d["status"], "succeeded", "{d}");
    assert_eq!(app.sandbox().gmail_sent_parsed(&u.email).len(), 2);
    let (_, listed) = app
        .get(
            "/v1/me/calendar/events?time_min=2026-12-07T00:00:00Z&time_max=2026-12-08T00:00:00Z",
            &alice,
        )
        .await;
    assert_eq!(ids_of(&listed["events"]).len(), 1, "{listed}");
}

/// Mail over 1 MiB goes to Gmail's upload URI as the message itself (multipart/related:
/// the thread as JSON, then `message/rfc822`), and arrives whole — a reply in its thread
/// included.
#[tokio::test]
async fn large_mail_goes_through_gmails_upload_uri_whole() {
    use base64::Engine as _;
    let app = TestApp::spawn().await;
    let tenant = app.tenant();
    let alice = app.user_token(&tenant, "alice", Role::Member);
    let u = google_user(&app, "large");
    let out = app
        .oauth_connect(
            &alice,
            "google",
            start(json!({"kind": "gmail"})),
            &format!("login_hint={}", u.email),
        )
        .await;
    assert_eq!(out.status, "connected", "{}", out.return_url);
    let big: Vec<u8> = (0..2_500_000u32).map(|i| (i % 251) as u8).collect();
    let content = base64::engine::general_purpose::STANDARD.encode(&big);
    let mut thread = Value::Null;
    for n in 0..2 {
        let before = app.sandbox().calls("google.gmail_send_upload");
        let (status, sent) = app
            .post(
                "/v1/me/gmail/send",
                &alice,
                json!({"to": ["zoe@example.com"], "subject": format!("The plans ({n})"),
                       "text": "Attached.", "thread_id": thread,
                       "attachments": [{"filename": "plans.bin",
                                        "content_type": "application/octet-stream",
                                        "content": content}]}),
            )
            .await;
        assert_eq!(status, 200, "{sent}");
        assert_eq!(
            app.sandbox().calls("google.gmail_send_upload"),
            before + 1,
            "through the upload URI"
        );
        if n == 1 {
            assert_eq!(sent["thread_id"], thread, "the reply stays in its thread");
        }
        thread = sent["thread_id"].clone();
    }
    let parsed = app.sandbox().gmail_sent_parsed(&u.email);
    assert_eq!(parsed.len(), 2);
    for m in &parsed {
        assert_eq!(m.to, vec!["zoe@example.com".to_owned()]);
        assert_eq!(m.attachments.len(), 1);
        assert!(m.attachments[0].2 == big, "the attachment arrived whole");
    }
}
