//! Lambda entry point: builds the shared context once, then takes SQS batches.

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[global_allocator]
static ALLOCATOR: conduit::app::Allocator = conduit::app::Allocator;

fn main() -> Result<(), Error> {
    conduit::app::serve(|app| async move {
        let app = &app;
        lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
            sync_worker::handle(app, event).await
        }))
        .await
    })
}
