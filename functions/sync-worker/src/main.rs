//! Lambda entry point: builds the shared context once, then takes SQS batches.

use conduit::app::App;
use conduit::config::Config;
use lambda_runtime::{Error, LambdaEvent, service_fn};

fn main() -> Result<(), Error> {
    conduit::app::runtime()?.block_on(run())
}

async fn run() -> Result<(), Error> {
    let config = Config::from_env()?;
    conduit::telemetry::init(&config.log_level);
    let app = App::new(config).await?;
    let app = &app;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            sync_worker::handle_event(app, event.payload).await
        },
    ))
    .await
}
