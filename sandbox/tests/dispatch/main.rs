//! Dispatch-action stand-ins and the webhook receiver, end to end: reqwest against a
//! started sandbox. One module per provider; `harness` holds the shared client.

mod chain;
mod chatwoot;
mod custom;
mod dynamics;
mod freshdesk;
mod genesys;
mod harness;
mod hubspot;
mod pipedrive;
mod salesforce;
mod sap;
mod technologyone;
mod webhooks;
mod zendesk;
mod zoho;
