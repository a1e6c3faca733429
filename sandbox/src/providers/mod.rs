//! Provider stand-ins: which host belongs to which provider, each provider's routes, and
//! the flow every provider request follows:
//! count the call → add latency → serve a forced fault, or run the route's handler →
//! let the provider add its per-response headers.
//!
//! Each provider module owns its hosts, its routes (an `Endpoint` enum plus route-name
//! constants), its credential checks and its own error bodies. Adding an endpoint means
//! adding a variant there; adding a provider means one module and one arm per match here.

pub mod chatwoot;
pub mod custom;
pub mod custom_kb;
pub mod custom_oauth;
pub mod dynamics365;
pub mod dynamics365_crm;
pub mod dynamics365_kb;
pub mod freshdesk;
pub mod freshdesk_kb;
pub mod genesys;
pub mod google;
pub mod google_api;
pub mod hook_delivery;
pub mod hubspot;
pub mod hubspot_associations;
pub mod hubspot_crm;
pub mod hubspot_webhooks;
pub mod pipedrive;
pub mod pipedrive_crm;
pub mod pipedrive_webhooks;
pub mod salesforce;
pub mod salesforce_crm;
pub(crate) mod sample;
pub mod sap;
pub mod technologyone;
pub mod zendesk;
pub mod zendesk_hc;
pub mod zoho;
pub mod zoho_crm;
pub mod zoho_webhooks;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::json;

use crate::oauth::OAuthProvider;
use crate::state::{
    CHATWOOT_CLOUD_HOST, CUSTOM_DEFAULT_HOST, Fault, Provider, ProviderAccount, SandboxState,
    UNKNOWN_HOST_ROUTE,
};
use crate::wire;

/// A request to a provider, with the host segment split off the path.
#[derive(Debug)]
pub(crate) struct ProviderRequest {
    /// HTTP method.
    pub(crate) method: Method,
    /// The provider host (first path segment), lower-cased.
    pub(crate) host: String,
    /// The provider path, starting with `/`.
    pub(crate) path: String,
    /// The raw query string, if any. May carry credentials: never log it.
    pub(crate) query: Option<String>,
    /// Request headers. Carry credentials: never log them.
    pub(crate) headers: HeaderMap,
    /// Request body. Never log it.
    pub(crate) body: Bytes,
}

impl ProviderRequest {
    /// Splits `/{host}/{path…}`; `None` when there is no host segment.
    pub(crate) fn new(method: Method, uri: &Uri, headers: HeaderMap, body: Bytes) -> Option<Self> {
        let rest = uri.path().strip_prefix('/')?;
        let (host, path) = match rest.split_once('/') {
            Some((host, path)) => (host, format!("/{path}")),
            None => (rest, "/".to_owned()),
        };
        if host.is_empty() {
            return None;
        }
        Some(Self {
            method,
            host: host.to_ascii_lowercase(),
            path,
            query: uri.query().map(str::to_owned),
            headers,
            body,
        })
    }
}

/// The provider owning `host` by its public name alone (no registered hosts).
pub(crate) fn fixed_provider_for_host(host: &str) -> Option<Provider> {
    if zendesk::subdomain(host).is_some() {
        Some(Provider::Zendesk)
    } else if freshdesk::subdomain(host).is_some() {
        Some(Provider::Freshdesk)
    } else if pipedrive::is_api_host(host) || host == pipedrive::OAUTH_HOST {
        Some(Provider::Pipedrive)
    } else if hubspot::is_host(host) {
        Some(Provider::Hubspot)
    } else if host == CHATWOOT_CLOUD_HOST {
        Some(Provider::Chatwoot)
    } else if host == CUSTOM_DEFAULT_HOST {
        Some(Provider::Custom)
    } else if salesforce::is_host(host) {
        Some(Provider::Salesforce)
    } else if zoho::host(host).is_some() {
        Some(Provider::Zoho)
    } else if dynamics365::is_host(host) {
        Some(Provider::Dynamics365)
    } else if google::is_host(host) {
        Some(Provider::Google)
    } else if genesys::host(host).is_some() {
        Some(Provider::Genesys)
    } else if host == custom_oauth::HOST {
        Some(Provider::CustomOauth)
    } else if sap::tenant(host).is_some() {
        Some(Provider::Sap)
    } else if technologyone::site(host).is_some() {
        Some(Provider::Technologyone)
    } else {
        None
    }
}

/// The first account whose Basic credentials are the request's: `matches(account, user,
/// password)` says whether an account takes them.
pub(crate) fn basic_account(
    state: &SandboxState,
    req: &ProviderRequest,
    matches: impl Fn(&ProviderAccount, &str, &str) -> bool,
) -> Option<crate::state::Account> {
    let (user, password) = wire::basic_credentials(&req.headers)?;
    state.find_account(|account| matches(&account.provider, &user, &password))
}

/// The provider owning `host`, including self-hosted Chatwoot and custom API hosts.
fn provider_for_host(state: &SandboxState, host: &str) -> Option<Provider> {
    fixed_provider_for_host(host).or_else(|| {
        state
            .find_account(|account| match &account.provider {
                ProviderAccount::Chatwoot { host: h, .. }
                | ProviderAccount::Custom { host: h, .. } => h == host,
                _ => false,
            })
            .map(|account| account.provider())
    })
}

/// A matched route of some provider.
#[derive(Debug)]
enum Endpoint {
    Zendesk(zendesk::Endpoint),
    Freshdesk(freshdesk::Endpoint),
    Pipedrive(pipedrive::Endpoint),
    Hubspot(hubspot::Endpoint),
    Chatwoot(chatwoot::Endpoint),
    Custom(custom::Endpoint),
    Salesforce(salesforce::Endpoint),
    Zoho(zoho::Endpoint),
    Dynamics365(dynamics365::Endpoint),
    Google(google::Endpoint),
    Genesys(genesys::Endpoint),
    CustomOauth(custom_oauth::Endpoint),
}

impl Endpoint {
    fn name(&self) -> &'static str {
        match self {
            Endpoint::Zendesk(e) => e.name(),
            Endpoint::Freshdesk(e) => e.name(),
            Endpoint::Pipedrive(e) => e.name(),
            Endpoint::Hubspot(e) => e.name(),
            Endpoint::Chatwoot(e) => e.name(),
            Endpoint::Custom(e) => e.name(),
            Endpoint::Salesforce(e) => e.name(),
            Endpoint::Zoho(e) => e.name(),
            Endpoint::Dynamics365(e) => e.name(),
            Endpoint::Google(e) => e.name(),
            Endpoint::Genesys(e) => e.name(),
            Endpoint::CustomOauth(e) => e.name(),
        }
    }

    fn handle(self, state: &SandboxState, req: &ProviderRequest) -> Response {
        match self {
            Endpoint::Zendesk(e) => zendesk::handle(e, state, req),
            Endpoint::Freshdesk(e) => freshdesk::handle(e, state, req),
            Endpoint::Pipedrive(e) => pipedrive::handle(e, state, req),
            Endpoint::Hubspot(e) => hubspot::handle(e, state, req),
            Endpoint::Chatwoot(e) => chatwoot::handle(e, state, req),
            Endpoint::Custom(e) => custom::handle(e, state, req),
            Endpoint::Salesforce(e) => salesforce::handle(e, state, req),
            Endpoint::Zoho(e) => zoho::handle(e, state, req),
            Endpoint::Dynamics365(e) => dynamics365::handle(e, state, req),
            Endpoint::Google(e) => google::handle(e, state, req),
            Endpoint::Genesys(e) => genesys::handle(e, state, req),
            Endpoint::CustomOauth(e) => custom_oauth::handle(e, state, req),
        }
    }
}

fn route(provider: Provider, state: &SandboxState, req: &ProviderRequest) -> Option<Endpoint> {
    match provider {
        Provider::Zendesk => zendesk::route(req).map(Endpoint::Zendesk),
        Provider::Freshdesk => freshdesk::route(req).map(Endpoint::Freshdesk),
        Provider::Pipedrive => pipedrive::route(req).map(Endpoint::Pipedrive),
        Provider::Hubspot => hubspot::route(req).map(Endpoint::Hubspot),
        Provider::Chatwoot => chatwoot::route(req).map(Endpoint::Chatwoot),
        Provider::Custom => custom::route(state, req).map(Endpoint::Custom),
        Provider::Salesforce => salesforce::route(req).map(Endpoint::Salesforce),
        Provider::Zoho => zoho::route(req).map(Endpoint::Zoho),
        Provider::Dynamics365 => dynamics365::route(req).map(Endpoint::Dynamics365),
        Provider::Google => google::route(req).map(Endpoint::Google),
        Provider::Genesys => genesys::route(req).map(Endpoint::Genesys),
        Provider::CustomOauth => custom_oauth::route(req).map(Endpoint::CustomOauth),
        // Every route of these two is a dispatch action (`crate::actions`).
        Provider::Sap | Provider::Technologyone => None,
    }
}

/// Route name counted for a provider's unmatched paths, e.g. `zendesk.unknown`.
pub fn unknown_route(provider: Provider) -> &'static str {
    match provider {
        Provider::Zendesk => zendesk::UNKNOWN,
        Provider::Freshdesk => freshdesk::UNKNOWN,
        Provider::Pipedrive => pipedrive::UNKNOWN,
        Provider::Hubspot => hubspot::UNKNOWN,
        Provider::Chatwoot => chatwoot::UNKNOWN,
        Provider::Custom => custom::UNKNOWN,
        Provider::Salesforce => salesforce::UNKNOWN,
        Provider::Zoho => zoho::UNKNOWN,
        Provider::Dynamics365 => dynamics365::UNKNOWN,
        Provider::Google => google::UNKNOWN,
        Provider::Genesys => genesys::UNKNOWN,
        Provider::CustomOauth => custom_oauth::UNKNOWN,
        Provider::Sap => sap::UNKNOWN,
        Provider::Technologyone => technologyone::UNKNOWN,
    }
}

/// The provider's answer to a path it does not serve.
fn not_found(provider: Provider, state: &SandboxState, req: &ProviderRequest) -> Response {
    match provider {
        Provider::Zendesk => zendesk::not_found(state, req),
        Provider::Freshdesk => freshdesk::not_found(state, req),
        Provider::Pipedrive => pipedrive::not_found(),
        Provider::Hubspot => hubspot::not_found(),
        Provider::Chatwoot => chatwoot::not_found(),
        Provider::Custom => custom::not_found(),
        Provider::Salesforce => salesforce::not_found(),
        Provider::Zoho => zoho::not_found(),
        Provider::Dynamics365 => dynamics365::not_found(),
        Provider::Google => google::not_found(),
        Provider::Genesys => genesys::not_found(),
        Provider::CustomOauth => custom_oauth::not_found(),
        Provider::Sap => sap::not_found(),
        Provider::Technologyone => technologyone::not_found(),
    }
}

/// The provider's own error answer for a forced status (its OAuth error shape at its
/// token endpoint).
pub(crate) fn fault_response(provider: Provider, route_name: &str, fault: &Fault) -> Response {
    let status = StatusCode::from_u16(fault.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let retry_after = fault.retry_after_secs;
    if route_name.ends_with(".oauth_token")
        && let Some(oauth_provider) = OAuthProvider::of(provider)
    {
        let response = crate::oauth::forced_status(oauth_provider, status);
        return if retry_after != 1 && response.headers().contains_key("retry-after") {
            wire::with_retry_after(response, retry_after)
        } else {
            response
        };
    }
    match provider {
        Provider::Zendesk => zendesk::error_for_status(status, retry_after),
        Provider::Freshdesk => freshdesk::error_for_status(status, retry_after),
        Provider::Pipedrive => pipedrive::error_for_status(status, retry_after),
        Provider::Hubspot => hubspot::error_for_status(status),
        Provider::Chatwoot => chatwoot::error_for_status(status),
        Provider::Custom => custom::error_for_status(status, retry_after),
        Provider::Salesforce => salesforce::error_for_status(status, retry_after),
        Provider::Zoho => zoho::error_for_status(status, retry_after),
        Provider::Dynamics365 => dynamics365::error_for_status(status, retry_after),
        Provider::Google => google::error_for_status(status, retry_after),
        Provider::Genesys => genesys::error_for_status(status, retry_after),
        Provider::CustomOauth => custom_oauth::error_for_status(status, retry_after),
        Provider::Sap => sap::error_for_status(status, retry_after),
        Provider::Technologyone => technologyone::error_for_status(status, retry_after),
    }
}

/// Headers a provider puts on every response (HubSpot's rate-limit headers,
/// Salesforce's `Sforce-Limit-Info`).
pub(crate) fn finish(
    provider: Provider,
    state: &SandboxState,
    req: &ProviderRequest,
    response: Response,
) -> Response {
    match provider {
        Provider::Hubspot => hubspot::finish(state, req, response),
        Provider::Salesforce => salesforce::finish(state, req, response),
        _ => response,
    }
}

/// Serves one provider request.
pub(crate) async fn dispatch(state: &SandboxState, req: ProviderRequest) -> Response {
    if req.host == crate::webhooks::HOST {
        return crate::webhooks::receive(state, &req).await;
    }
    let Some(provider) = provider_for_host(state, &req.host) else {
        state.record_call(UNKNOWN_HOST_ROUTE);
        tracing::debug!(host = %req.host, "request for a host the sandbox does not serve");
        return unknown_host(&req.host);
    };
    if let Some(action) = crate::actions::route(provider, state, &req) {
        let response = crate::actions::serve(state, &req, provider, action).await;
        return finish(provider, state, &req, response);
    }
    let endpoint = route(provider, state, &req);
    let route_name = endpoint
        .as_ref()
        .map_or_else(|| unknown_route(provider), Endpoint::name);
    state.record_call(route_name);

    let latency = state.latency_for(provider);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }

    let (response, forced) = match endpoint {
        None => (not_found(provider, state, &req), false),
        Some(endpoint) => match state.take_fault(provider, route_name) {
            Some(fault) => (fault_response(provider, route_name, &fault), true),
            None => (endpoint.handle(state, &req), false),
        },
    };
    let response = finish(provider, state, &req, response);
    let response = crate::actions::record_other(state, &req, provider, route_name, response);
    // Only names and numbers: never the query, headers or body, which carry credentials.
    tracing::debug!(
        provider = provider.as_str(),
        route = route_name,
        status = response.status().as_u16(),
        forced,
        "provider request"
    );
    response
}

/// Answer for a host no provider owns (sandbox-level error shape).
pub(crate) fn unknown_host(host: &str) -> Response {
    wire::json(
        StatusCode::NOT_FOUND,
        json!({"error": {
            "code": "unknown_host",
            "message": format!("the sandbox does not serve host {host:?}; register an account for it first if it is a self-hosted or custom API"),
        }}),
    )
}
