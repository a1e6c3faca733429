//! The SQS publisher delivers to the template's queues on the local stack, whose
//! redrive policy points at the dead-letter queue, each message with its tenant as
//! `MessageGroupId` (a fair queue's tenant).

use conduit::queue::{Publisher, TenantWork};
use serde::Serialize;

/// A message of one tenant's.
#[derive(Serialize)]
struct Work {
    tenant: String,
    n: u64,
}

impl TenantWork for Work {
    fn tenant(&self) -> &str {
        &self.tenant
    }
}

fn work(n: u64) -> Work {
    Work {
        tenant: format!("t{}", n % 3),
        n,
    }
}

#[tokio::test]
async fn the_publisher_delivers_batches_to_the_sync_queue() {
    let env = devhost::LocalEnv::start(devhost::LocalEnvOptions {
        poll_queues: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let url = env.stack.ref_value("SyncQueue").unwrap();
    let sqs = aws_sdk_sqs::Client::new(&env.aws);
    let publisher = Publisher::new(sqs.clone(), &url);
    let messages: Vec<_> = (0..23).map(work).collect();
    publisher.send_all(&messages).await.unwrap();
    publisher.send(&work(23)).await.unwrap();

    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let out = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .message_system_attribute_names(
                aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId,
            )
            .send()
            .await
            .unwrap();
        for m in out.messages.unwrap_or_default() {
            let body: serde_json::Value = serde_json::from_str(m.body().unwrap()).unwrap();
            let n = body["n"].as_u64().unwrap();
            assert_eq!(body["tenant"], format!("t{}", n % 3));
            assert_eq!(
                m.attributes().unwrap()
                    [&aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId],
                format!("t{}", n % 3),
                "message {n}'s group is its tenant"
            );
            seen.insert(n);
            sqs.delete_message()
                .queue_url(&url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
        if seen.len() == 24 {
            break;
        }
    }
    assert_eq!(seen, (0..24).collect());
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy)
        .send()
        .await
        .unwrap();
    let redrive =
        attrs.attributes().unwrap()[&aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy].clone();
    assert!(
        redrive.contains("SyncDeadLetterQueue") || redrive.contains("deadLetterTargetArn"),
        "{redrive}"
    );
    env.shutdown().await;
}
