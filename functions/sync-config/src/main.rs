//! Lambda entry point: builds the shared context and the schedule client once, then
//! serves requests.

use conduit::app::App;
use conduit::config::Config;
use lambda_http::{Error, Request, service_fn};
use sync_config::Service;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let config = Config::from_env()?;
    conduit::telemetry::init(&config.log_level);
    let app = App::new(config).await?;
    let service = Service::new(&app)?;
    let (app, service) = (&app, &service);
    lambda_http::run(service_fn(move |req: Request| {
        sync_config::handle_with(app, service, req)
    }))
    .await
}
