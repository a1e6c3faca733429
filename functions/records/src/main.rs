//! Lambda entry point: builds the shared context once, then serves requests.

use conduit::app::App;
use conduit::config::Config;
use lambda_http::{Error, Request, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let config = Config::from_env()?;
    conduit::telemetry::init(&config.log_level);
    let app = App::new(config).await?;
    let app = &app;
    lambda_http::run(service_fn(move |req: Request| records::handle(app, req))).await
}
