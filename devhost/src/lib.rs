//! Conduit's local stack: the AWS services of `template.yaml` on moto, the provider
//! sandbox, and a dev host that serves every HTTP function at its template route behind
//! an emulated JWT authorizer — the same handlers a deployed Lambda runs, in-process.
//!
//! Non-HTTP functions run through event handlers: `devhost invoke` on an event file,
//! the template's `Schedule` events through the local [`Scheduler`], its `SQS` events
//! through pollers that play Lambda's event source mappings ([`sqs`]: batches, partial
//! batch failures, redrive to the dead-letter queue, `GET /_devhost/queues`), and the
//! EventBridge Scheduler schedules the functions create in the stack's schedule groups
//! through [`scheduler`]. The template's EventBridge rules are created on moto with their
//! targets ([`rules`]), so an event put on the bus reaches the queue a rule names (the
//! dispatch rules: `DispatchQueue`, polled into the event dispatcher). What the stack
//! publishes on EventBridge is captured ([`EventCapture`], `GET /_devhost/events`).
//!
//! Each piece works alone ([`MotoServer`], [`bootstrap`], [`DevHost`], [`LocalJwt`]);
//! [`LocalEnv`] starts them all for scenario tests:
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let env = devhost::LocalEnv::start(devhost::LocalEnvOptions::default()).await?;
//! let token = env.jwt.mint("demo", "dev-admin", "admin", std::time::Duration::from_secs(600))?;
//! let url = format!("{}/v1/providers", env.url());
//! let sweep = env.run_schedule("TokenRefreshFunction").await?;
//! let published = env.events().drain().await?;
//! env.wait_queues_idle(std::time::Duration::from_secs(10)).await?;
//! let dead = env.dead_letters("SyncQueue").await?;
//! # let _ = (token, url, sweep, published, dead);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod aws;
pub mod capture;
pub mod cron;
pub mod ddb_capacity;
pub mod env;
pub mod event;
pub mod invoke;
pub mod invoker;
pub mod jwt;
pub mod moto;
pub mod paths;
pub mod registry;
pub mod routes;
pub mod rules;
pub mod schedule;
pub mod scheduler;
pub mod server;
pub mod sqs;
pub mod stack;
pub mod state;
pub mod template;
pub mod trace;

pub use aws::moto_sdk_config;
pub use capture::EventCapture;
pub use ddb_capacity::CapacityReport;
pub use env::{LocalEnv, LocalEnvOptions};
pub use jwt::LocalJwt;
pub use moto::{DdbKnobs, MotoServer};
pub use registry::FunctionRegistry;
pub use schedule::{Scheduler, SchedulerOptions};
pub use scheduler::SchedulerSchedule;
pub use server::{DevHost, DevHostOptions};
pub use sqs::{QueueDepth, QueueOptions};
pub use stack::{LocalStack, StackOptions, bootstrap};
pub use template::Template;
