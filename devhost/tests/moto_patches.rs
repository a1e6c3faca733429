//! The launcher's speed patches change how moto works, never what it answers: the
//! same DynamoDB requests against a patched and an unpatched moto (the same version)
//! get the same answers — items of every attribute type, queries of the table and of a
//! GSI in both orders and across pages, conditions that fail, updates, transactions,
//! batches and scans. Partition limits are counted on the patched one but these few
//! requests are far below them. The SQS patches likewise: the same receives, deletes
//! and counts get the same answers.

use devhost::{DdbKnobs, MotoServer};
use serde_json::{Value, json};

const TABLE: &str = "patches";

/// Status and body of one DynamoDB call.
async fn call(http: &reqwest::Client, endpoint: &str, action: &str, body: &Value) -> (u16, Value) {
    let resp = http
        .post(endpoint)
        .header("x-amz-target", format!("DynamoDB_20120810.{action}"))
        .header("content-type", "application/x-amz-json-1.0")
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=0",
        )
        .body(body.to_string())
        .send()
        .await
        .expect("moto answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

fn item(pk: &str, sk: &str, n: u32) -> Value {
    json!({
        "pk": {"S": pk}, "sk": {"S": sk},
        "gsi1pk": {"S": format!("G#{}", n % 2)}, "gsi1sk": {"S": format!("{n:04}")},
        "num": {"N": format!("{n}.5")}, "flag": {"BOOL": n.is_multiple_of(3)}, "none": {"NULL": true},
        "list": {"L": [{"S": "a"}, {"N": "1"}, {"M": {"x": {"S": "y"}}}]},
        "map": {"M": {"nested": {"S": format!("v{n}")}, "n": {"N": "2"}}},
        "set": {"SS": ["b", "a"]}, "bin": {"B": "AAEC"}, "utf": {"S": "é✓ unicode"},
    })
}

/// The requests, in order; every answer but CreateTable's (timestamps) is compared.
fn requests() -> Vec<(&'static str, Value)> {
    let mut out = Vec::new();
    for n in 0..12 {
        out.push((
            "PutItem",
            json!({"TableName": TABLE, "Item": item("P#1", &format!("S#{n:03}"), n), "ReturnValues": "ALL_OLD"}),
        ));
    }
    out.push((
        "PutItem",
        json!({"TableName": TABLE, "Item": item("P#1", "S#003", 99), "ReturnValues": "ALL_OLD"}),
    ));
    out.push((
        "PutItem",
        json!({"TableName": TABLE, "Item": item("P#1", "S#004", 5), "ConditionExpression": "attribute_not_exists(pk)"}),
    ));
    out.push((
        "GetItem",
        json!({"TableName": TABLE, "Key": {"pk": {"S": "P#1"}, "sk": {"S": "S#003"}}, "ConsistentRead": true}),
    ));
    for (forward, start) in [
        (true, None),
        (false, None),
        (true, Some("S#004")),
        (false, Some("S#008")),
    ] {
        let mut q = json!({
            "TableName": TABLE, "KeyConditionExpression": "pk = :p",
            "ExpressionAttributeValues": {":p": {"S": "P#1"}}, "Limit": 4, "ScanIndexForward": forward,
        });
        if let Some(s) = start {
            q["ExclusiveStartKey"] = json!({"pk": {"S": "P#1"}, "sk": {"S": s}});
        }
        out.push(("Query", q));
    }
    out.push((
        "Query",
        json!({"TableName": TABLE, "KeyConditionExpression": "pk = :p AND begins_with(sk, :s)",
               "FilterExpression": "flag = :t", "ProjectionExpression": "sk, #m.nested",
               "ExpressionAttributeNames": {"#m": "map"},
               "ExpressionAttributeValues": {":p": {"S": "P#1"}, ":s": {"S": "S#00"}, ":t": {"BOOL": true}}}),
    ));
    // Key conditions on the range key, which the patched query seeks to: every
    // comparison, with and without a limit, a start key and descending order.
    let conditions: [(&str, Value); 8] = [
        ("sk = :a", json!({":a": {"S": "S#005"}})),
        ("sk > :a", json!({":a": {"S": "S#004"}})),
        ("sk >= :a", json!({":a": {"S": "S#004"}})),
        ("sk < :a", json!({":a": {"S": "S#007"}})),
        ("sk <= :a", json!({":a": {"S": "S#007"}})),
        (
            "sk BETWEEN :a AND :b",
            json!({":a": {"S": "S#002"}, ":b": {"S": "S#009"}}),
        ),
        ("begins_with(sk, :a)", json!({":a": {"S": "S#00"}})),
        ("sk > :a", json!({":a": {"S": "S#0035"}})),
    ];
    for (condition, values) in conditions {
        for (limit, forward, start) in [
            (None, true, None),
            (Some(3), true, None),
            (Some(3), false, None),
            (Some(2), true, Some("S#006")),
            (Some(2), false, Some("S#006")),
        ] {
            let mut names = values.clone();
            names[":p"] = json!({"S": "P#1"});
            let mut q = json!({
                "TableName": TABLE, "KeyConditionExpression": format!("pk = :p AND {condition}"),
                "ExpressionAttributeValues": names, "ScanIndexForward": forward,
            });
            if let Some(l) = limit {
                q["Limit"] = json!(l);
            }
            if let Some(s) = start {
                q["ExclusiveStartKey"] = json!({"pk": {"S": "P#1"}, "sk": {"S": s}});
            }
            out.push(("Query", q));
        }
    }
    out.push((
        "Query",
        json!({"TableName": TABLE, "KeyConditionExpression": "pk = :p AND sk > :a",
               "FilterExpression": "flag = :t", "Limit": 4,
               "ExpressionAttributeValues": {":p": {"S": "P#1"}, ":a": {"S": "S#001"}, ":t": {"BOOL": true}}}),
    ));
    out.push((
        "Query",
        json!({"TableName": TABLE, "KeyConditionExpression": "pk = :p AND begins_with(sk, :a)",
               "ExpressionAttributeValues": {":p": {"S": "P#1"}, ":a": {"S": "T"}}}),
    ));
    out.push((
        "Query",
        json!({"TableName": TABLE, "IndexName": "gsi1", "KeyConditionExpression": "gsi1pk = :g AND gsi1sk > :s",
               "ExpressionAttributeValues": {":g": {"S": "G#1"}, ":s": {"S": "0002"}}, "Limit": 3}),
    ));
    out.push((
        "UpdateItem",
        json!({"TableName": TABLE, "Key": {"pk": {"S": "P#1"}, "sk": {"S": "S#001"}},
               "UpdateExpression": "SET num = num + :one, gsi1pk = :g REMOVE #l",
               "ExpressionAttributeNames": {"#l": "list"},
               "ExpressionAttributeValues": {":one": {"N": "1"}, ":g": {"S": "G#9"}}, "ReturnValues": "ALL_NEW"}),
    ));
    out.push((
        "UpdateItem",
        json!({"TableName": TABLE, "Key": {"pk": {"S": "P#2"}, "sk": {"S": "new"}},
               "UpdateExpression": "SET v = :v", "ConditionExpression": "attribute_exists(pk)",
               "ExpressionAttributeValues": {":v": {"S": "x"}}}),
    ));
    out.push((
        "DeleteItem",
        json!({"TableName": TABLE, "Key": {"pk": {"S": "P#1"}, "sk": {"S": "S#002"}}, "ReturnValues": "ALL_OLD"}),
    ));
    out.push((
        "TransactWriteItems",
        json!({"TransactItems": [
            {"Put": {"TableName": TABLE, "Item": item("P#3", "a", 1)}},
            {"Update": {"TableName": TABLE, "Key": {"pk": {"S": "P#1"}, "sk": {"S": "S#005"}},
                        "UpdateExpression": "SET v = :v", "ExpressionAttributeValues": {":v": {"S": "tx"}}}},
        ]}),
    ));
    out.push((
        "TransactWriteItems",
        json!({"TransactItems": [
            {"Put": {"TableName": TABLE, "Item": item("P#3", "b", 2)}},
            {"Put": {"TableName": TABLE, "Item": item("P#3", "a", 3), "ConditionExpression": "attribute_not_exists(pk)"}},
        ]}),
    ));
    // A cancelled transaction that had already updated and deleted items: both come
    // back as they were (the patched moto backs up the named items, not the tables).
    out.push((
        "TransactWriteItems",
        json!({"TransactItems": [
            {"Update": {"TableName": TABLE, "Key": {"pk": {"S": "P#1"}, "sk": {"S": "S#007"}},
                        "UpdateExpression": "SET v = :v REMOVE #m", "ExpressionAttributeNames": {"#m": "map"},
                        "ExpressionAttributeValues": {":v": {"S": "lost"}}}},
            {"Delete": {"TableName": TABLE, "Key": {"pk": {"S": "P#1"}, "sk": {"S": "S#008"}}}},
            {"Put": {"TableName": TABLE, "Item": item("P#5", "new", 7)}},
            {"ConditionCheck": {"TableName": TABLE, "Key": {"pk": {"S": "P#9"}, "sk": {"S": "x"}},
                                "ConditionExpression": "attribute_exists(pk)"}},
        ]}),
    ));
    out.push((
        "BatchGetItem",
        json!({"RequestItems": {TABLE: {"Keys": [
            {"pk": {"S": "P#1"}, "sk": {"S": "S#007"}}, {"pk": {"S": "P#1"}, "sk": {"S": "S#008"}},
            {"pk": {"S": "P#5"}, "sk": {"S": "new"}},
        ]}}}),
    ));
    out.push((
        "BatchWriteItem",
        json!({"RequestItems": {TABLE: [
            {"PutRequest": {"Item": item("P#4", "a", 4)}},
            {"PutRequest": {"Item": item("P#4", "b", 5)}},
            {"DeleteRequest": {"Key": {"pk": {"S": "P#1"}, "sk": {"S": "S#006"}}}},
        ]}}),
    ));
    out.push((
        "BatchGetItem",
        json!({"RequestItems": {TABLE: {"Keys": [
            {"pk": {"S": "P#4"}, "sk": {"S": "a"}}, {"pk": {"S": "P#3"}, "sk": {"S": "a"}},
            {"pk": {"S": "P#1"}, "sk": {"S": "S#006"}},
        ]}}}),
    ));
    out.push(("Scan", json!({"TableName": TABLE, "Limit": 50})));
    out.push((
        "Query",
        json!({"TableName": TABLE, "KeyConditionExpression": "pk = :p",
               "ExpressionAttributeValues": {":p": {"S": "P#1"}}}),
    ));
    out
}

/// A moto of its own, served with the launcher's patches.
async fn patched() -> MotoServer {
    tokio::task::spawn_blocking(|| MotoServer::start_with_knobs(&DdbKnobs::default()))
        .await
        .expect("start")
        .expect("patched moto")
}

/// A moto of its own, served as moto is.
async fn unpatched() -> MotoServer {
    tokio::task::spawn_blocking(|| {
        MotoServer::start_with_knobs(&DdbKnobs {
            patched: false,
            partition_limits: false,
            ..DdbKnobs::default()
        })
    })
    .await
    .expect("start")
    .expect("unpatched moto")
}

async fn answers(endpoint: &str) -> Vec<(String, u16, Value)> {
    let http = reqwest::Client::new();
    let (status, body) = call(
        &http,
        endpoint,
        "CreateTable",
        &json!({
            "TableName": TABLE, "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [
                {"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"},
                {"AttributeName": "gsi1pk", "AttributeType": "S"}, {"AttributeName": "gsi1sk", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            "GlobalSecondaryIndexes": [{"IndexName": "gsi1",
                "KeySchema": [{"AttributeName": "gsi1pk", "KeyType": "HASH"}, {"AttributeName": "gsi1sk", "KeyType": "RANGE"}],
                "Projection": {"ProjectionType": "ALL"}}],
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let mut out = Vec::new();
    for (action, body) in requests() {
        let (status, answer) = call(&http, endpoint, action, &body).await;
        out.push((action.to_owned(), status, answer));
    }
    out
}

#[tokio::test]
async fn patched_moto_answers_as_unpatched_moto_does() {
    let (patched, unpatched) = (patched().await, unpatched().await);

    let want = answers(&unpatched.endpoint()).await;
    let got = answers(&patched.endpoint()).await;
    assert_eq!(got.len(), want.len());
    for ((action, status, body), (_, want_status, want_body)) in got.iter().zip(&want) {
        assert_eq!(
            (status, body),
            (want_status, want_body),
            "{action}: patched moto answered differently"
        );
    }
    // The requests did reach every path compared: failures as well as successes.
    assert!(want.iter().any(|(_, s, _)| *s == 400));
    assert!(want.iter().filter(|(_, s, _)| *s == 200).count() > 20);

    // Only the patched one counts capacity, and knows it is patched.
    let counted = patched.capacity().expect("report");
    assert!(counted.patched && counted.key_count > 0, "{counted:?}");
    let plain = unpatched.capacity().expect("report");
    assert!(!plain.patched && plain.key_count == 0, "{plain:?}");
}

/// The SQS requests of [`patched_sqs_answers_as_unpatched_sqs_does`], described as text:
/// what was received, the queue's counts, deletes that succeed, repeat and fail.
async fn sqs_answers(endpoint: &str) -> Vec<String> {
    use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, QueueAttributeName};
    let config = devhost::moto_sdk_config(endpoint).await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let url = sqs
        .create_queue()
        .queue_name("same")
        .attributes(QueueAttributeName::VisibilityTimeout, "30")
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("url");
    for i in 0..6 {
        let mut send = sqs
            .send_message()
            .queue_url(&url)
            .message_body(format!("m{i}"));
        if i == 5 {
            send = send.delay_seconds(60);
        }
        send.send().await.expect("sent");
    }
    let mut out = Vec::new();
    let counts = |sqs: aws_sdk_sqs::Client, url: String| async move {
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .expect("attributes")
            .attributes
            .unwrap_or_default();
        [
            QueueAttributeName::ApproximateNumberOfMessages,
            QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
            QueueAttributeName::ApproximateNumberOfMessagesDelayed,
        ]
        .iter()
        .map(|a| format!("{a}={}", attrs.get(a).map_or("-", String::as_str)))
        .collect::<Vec<_>>()
        .join(" ")
    };
    let receive = |sqs: aws_sdk_sqs::Client, url: String, n: i32| async move {
        sqs.receive_message()
            .queue_url(url)
            .max_number_of_messages(n)
            .send()
            .await
            .expect("received")
            .messages
            .unwrap_or_default()
    };
    out.push(counts(sqs.clone(), url.clone()).await);
    for names in [
        vec!["VisibilityTimeout", "ApproximateNumberOfMessages"],
        vec!["Bogus"],
    ] {
        let answer = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .set_attribute_names(Some(
                names.into_iter().map(QueueAttributeName::from).collect(),
            ))
            .send()
            .await;
        out.push(match answer {
            Ok(a) => format!(
                "{:?}",
                a.attributes
                    .unwrap_or_default()
                    .into_iter()
                    .collect::<std::collections::BTreeMap<_, _>>()
            ),
            Err(e) => format!("refused: {:?}", e.into_service_error().meta().code()),
        });
    }
    let first = receive(sqs.clone(), url.clone(), 3).await;
    out.push(format!(
        "{:?}",
        first.iter().map(|m| m.body()).collect::<Vec<_>>()
    ));
    out.push(counts(sqs.clone(), url.clone()).await);
    let handle =
        |m: &aws_sdk_sqs::types::Message| m.receipt_handle().unwrap_or_default().to_owned();
    for h in [
        handle(&first[0]),
        handle(&first[0]),
        "not-a-handle".to_owned(),
    ] {
        let answer = sqs
            .delete_message()
            .queue_url(&url)
            .receipt_handle(h)
            .send()
            .await;
        out.push(match answer {
            Ok(_) => "deleted".to_owned(),
            Err(e) => format!("refused: {:?}", e.into_service_error().meta().code()),
        });
    }
    sqs.change_message_visibility()
        .queue_url(&url)
        .receipt_handle(handle(&first[1]))
        .visibility_timeout(0)
        .send()
        .await
        .expect("visible again");
    out.push(counts(sqs.clone(), url.clone()).await);
    let second = receive(sqs.clone(), url.clone(), 10).await;
    out.push(format!(
        "{:?}",
        second.iter().map(|m| m.body()).collect::<Vec<_>>()
    ));
    // The first handle of a message received twice still deletes it, as in SQS.
    let entries = [handle(&first[1]), handle(&second[1]), "bogus".to_owned()]
        .into_iter()
        .enumerate()
        .map(|(i, h)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(h)
                .build()
                .expect("entry")
        })
        .collect();
    let batch = sqs
        .delete_message_batch()
        .queue_url(&url)
        .set_entries(Some(entries))
        .send()
        .await
        .expect("batch");
    let mut ok: Vec<&str> = batch.successful().iter().map(|s| s.id()).collect();
    ok.sort();
    let mut failed: Vec<String> = batch
        .failed()
        .iter()
        .map(|f| format!("{} {}", f.id(), f.code()))
        .collect();
    failed.sort();
    out.push(format!("batch ok {ok:?} failed {failed:?}"));
    out.push(counts(sqs.clone(), url.clone()).await);
    out
}

#[tokio::test]
async fn patched_sqs_answers_as_unpatched_sqs_does() {
    let (patched, unpatched) = (patched().await, unpatched().await);
    let want = sqs_answers(&unpatched.endpoint()).await;
    let got = sqs_answers(&patched.endpoint()).await;
    assert_eq!(got, want);
    // The requests reached what the patches change: counts of each kind, a refused
    // delete, a message received twice.
    assert!(want.iter().any(|a| a.contains("Delayed=1")), "{want:?}");
    assert!(want.iter().any(|a| a.starts_with("refused")), "{want:?}");
    assert!(
        want.iter().any(|a| a.contains("VisibilityTimeout")),
        "{want:?}"
    );
}

/// Messages sent while others are deleted, all received: every body each receiver
/// was handed (deleting each batch at once), while `SENDERS` tasks send `SENT`.
const SENDERS: usize = 4;
const SENT: usize = 2000;

async fn sent_while_deleting(endpoint: &str) -> Vec<String> {
    use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, SendMessageBatchRequestEntry};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let config = devhost::moto_sdk_config(endpoint).await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let url = sqs
        .create_queue()
        .queue_name("kept")
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("url");
    let senders_left = Arc::new(AtomicUsize::new(SENDERS));
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let (sqs, url, left) = (sqs.clone(), url.clone(), senders_left.clone());
            tokio::spawn(async move {
                for batch in 0..SENT / SENDERS / 10 {
                    let entries = (0..10)
                        .map(|i| {
                            SendMessageBatchRequestEntry::builder()
                                .id(i.to_string())
                                .message_body(format!("s{s}-{batch}-{i}"))
                                .build()
                                .expect("entry")
                        })
                        .collect();
                    sqs.send_message_batch()
                        .queue_url(&url)
                        .set_entries(Some(entries))
                        .send()
                        .await
                        .expect("sent");
                }
                left.fetch_sub(1, Ordering::SeqCst);
            })
        })
        .collect();
    let receivers: Vec<_> = (0..6)
        .map(|_| {
            let (sqs, url, left) = (sqs.clone(), url.clone(), senders_left.clone());
            tokio::spawn(async move {
                let mut bodies = Vec::new();
                let mut empty = 0;
                while empty < 3 {
                    let sending = left.load(Ordering::SeqCst) > 0;
                    let messages = sqs
                        .receive_message()
                        .queue_url(&url)
                        .max_number_of_messages(10)
                        .send()
                        .await
                        .expect("received")
                        .messages
                        .unwrap_or_default();
                    if messages.is_empty() {
                        empty = if sending { 0 } else { empty + 1 };
                        continue;
                    }
                    let entries = messages
                        .iter()
                        .enumerate()
                        .map(|(i, m)| {
                            DeleteMessageBatchRequestEntry::builder()
                                .id(i.to_string())
                                .receipt_handle(m.receipt_handle().unwrap_or_default())
                                .build()
                                .expect("entry")
                        })
                        .collect();
                    sqs.delete_message_batch()
                        .queue_url(&url)
                        .set_entries(Some(entries))
                        .send()
                        .await
                        .expect("deleted");
                    bodies.extend(messages.into_iter().filter_map(|m| m.body));
                }
                bodies
            })
        })
        .collect();
    for sender in senders {
        sender.await.expect("sender");
    }
    let mut bodies = Vec::new();
    for receiver in receivers {
        bodies.extend(receiver.await.expect("receiver"));
    }
    bodies
}

/// Two races of moto's SQS the launcher closes. Its delete rebuilt the queue's message
/// list without the lock its sends append under, so a message sent during a delete
/// could vanish (57 of 10,000 in a dispatch bench run); and its ReceiveMessage checks a
/// message is visible, then marks it received, with nothing holding other threads off,
/// so two receives could be handed one message (CI once saw a fair-queue message
/// handled twice). Every message sent while others are received and deleted arrives,
/// and once: an unpatched moto handed out 2,003 for 2,000 here in 46 s; the patched one
/// answers in about 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_sent_during_deletes_are_kept() {
    let moto = patched().await;
    let mut bodies = sent_while_deleting(&moto.endpoint()).await;
    let handed_out = bodies.len();
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), SENT, "every message sent was received");
    assert_eq!(handed_out, SENT, "and only once");
}
