//! Lambda entry point: builds the shared context once, then takes SQS batches and the
//! minute's schedule.

use lambda_runtime::{Error, LambdaEvent, service_fn};

#[global_allocator]
static ALLOCATOR: conduit::app::Allocator = conduit::app::Allocator;

fn main() -> Result<(), Error> {
    conduit::app::serve(|app| async move {
        let app = &app;
        lambda_runtime::run(service_fn(
            move |event: LambdaEvent<serde_json::Value>| async move {
                Box::pin(event_dispatch::handle_event(app, event.payload)).await
            },
        ))
        .await
    })
}
