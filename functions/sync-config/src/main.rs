//! Lambda entry point: builds the shared context and the schedule client once, then
//! serves requests.

use lambda_http::{Error, Request, service_fn};
use sync_config::Service;

#[global_allocator]
static ALLOCATOR: conduit::app::Allocator = conduit::app::Allocator;

fn main() -> Result<(), Error> {
    conduit::app::serve(|app| async move {
        let service = Service::new(&app)?;
        let (app, service) = (&app, &service);
        lambda_http::run(service_fn(move |req: Request| {
            sync_config::handle_with(app, service, req)
        }))
        .await
    })
}
