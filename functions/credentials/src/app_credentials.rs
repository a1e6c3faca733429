//! `PUT|GET|DELETE /v1/providers/{provider}/app-credentials`: the tenant's own OAuth
//! app for a provider. The client secret is sealed and only ever shown masked.

use conduit::app_credentials::{AppCredentialStore, AppCredentials, seal_context};
use conduit::domain::{mask, now, rfc3339};
use conduit::egress::validate_tenant_url;
use conduit::http::{self, ApiError};
use conduit::providers::{AuthType, FieldError, Provider};
use conduit::store::StoreError;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::Call;

pub(crate) fn store(call: &Call<'_>) -> AppCredentialStore {
    AppCredentialStore::new(call.app.table.clone())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    client_id: String,
    #[serde(default)]
    client_secret: Option<SecretString>,
    #[serde(default)]
    redirect_uri: Option<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    /// The app's settings from the catalogue's `app_fields` (a custom OAuth
    /// provider's endpoints and client authentication).
    #[serde(default)]
    settings: Option<BTreeMap<String, String>>,
}

/// What the API shows of a tenant's app.
#[derive(Serialize)]
struct View<'a> {
    provider: &'a str,
    client_id: &'a str,
    client_secret: &'a str,
    redirect_uri: Option<&'a str>,
    scopes: Option<&'a [String]>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    settings: &'a BTreeMap<String, String>,
    created_at: String,
    updated_at: String,
    updated_by: &'a str,
    version: u64,
}

fn view(a: &AppCredentials) -> View<'_> {
    View {
        provider: &a.provider,
        client_id: &a.client_id,
        client_secret: &a.client_secret_masked,
        redirect_uri: a.redirect_uri.as_deref(),
        scopes: a.scopes.as_deref(),
        settings: &a.settings,
        created_at: rfc3339(a.created_at),
        updated_at: rfc3339(a.updated_at),
        updated_by: a.updated_by.as_str(),
        version: a.version,
    }
}

fn oauth_provider(call: &Call<'_>) -> Result<&'static Provider, ApiError> {
    let provider = crate::path_provider(call)?;
    if provider.auth.iter().any(|m| m.kind == AuthType::Oauth2) {
        Ok(provider)
    } else {
        Err(ApiError::bad_request(
            "no_oauth",
            format!(
                "{} does not use OAuth; it has no app credentials",
                provider.name
            ),
        ))
    }
}

fn field_error(field: &str, message: &str) -> FieldError {
    FieldError {
        field: field.to_owned(),
        message: message.to_owned(),
    }
}

/// Creates or replaces the tenant's app for a provider.
pub async fn put(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let provider = oauth_provider(call)?;
    let body: PutBody = http::json_body(&call.req)?;
    let expected = http::if_match(&call.req)?;

    let mut errors = Vec::new();
    let client_id = body.client_id.trim().to_owned();
    if client_id.is_empty() || client_id.len() > 512 || client_id.chars().any(char::is_control) {
        errors.push(field_error(
            "client_id",
            "must be 1 to 512 characters without control characters",
        ));
    }
    if let Some(secret) = &body.client_secret {
        let s = secret.expose_secret();
        if s.trim().is_empty() || s.len() > 2048 || s.chars().any(char::is_control) {
            errors.push(field_error(
                "client_secret",
                "must be 1 to 2048 characters without control characters",
            ));
        }
    }
    let redirect_uri = match body.redirect_uri.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(uri) => match validate_tenant_url(uri, &call.app.url_policy()) {
            Ok(u) if u.query().is_none() => Some(u.to_string()),
            Ok(_) => {
                errors.push(field_error("redirect_uri", "may not carry a query string"));
                None
            }
            Err(e) => {
                errors.push(field_error("redirect_uri", &e.to_string()));
                None
            }
        },
    };
    if let Some(scopes) = &body.scopes {
        let bad = scopes.is_empty()
            || scopes.len() > 100
            || scopes.iter().any(|s| {
                s.is_empty()
                    || s.len() > 256
                    || s.chars().any(|c| c.is_whitespace() || c.is_control())
            });
        if bad {
            errors.push(field_error(
                "scopes",
                "must be 1 to 100 scopes without whitespace",
            ));
        }
    }
    let method = provider.auth.iter().find(|m| m.kind == AuthType::Oauth2);
    let settings = match (method, &body.settings) {
        (Some(m), Some(input)) => match m.validate_app_fields(input, &call.app.url_policy()) {
            Ok(s) => s,
            Err(mut field_errors) => {
                for e in &mut field_errors {
                    e.field = format!("settings.{}", e.field);
                }
                errors.append(&mut field_errors);
                BTreeMap::new()
            }
        },
        (Some(m), None) if !m.app_fields.is_empty() => {
            errors.push(field_error(
                "settings",
                "is required: this provider's endpoints come with its app credentials",
            ));
            BTreeMap::new()
        }
        _ => BTreeMap::new(),
    };
    if !errors.is_empty() {
        return Err(ApiError::invalid_fields(errors));
    }

    let store = store(call);
    let current = store.get(&call.who.tenant, &provider.id).await?;
    if let (Some(expected), Some(cur)) = (expected, &current)
        && expected != cur.version
    {
        return Err(ApiError::PreconditionFailed);
    }
    let (client_secret, client_secret_masked) = match (&body.client_secret, &current) {
        (Some(secret), _) => {
            let trimmed = secret.expose_secret().trim();
            let sealed = call
                .app
                .envelope
                .seal(
                    &seal_context(&call.who.tenant, &provider.id),
                    trimmed.as_bytes(),
                )
                .await
                .map_err(ApiError::internal)?;
            (sealed, mask(trimmed))
        }
        (None, Some(cur)) => (cur.client_secret.clone(), cur.client_secret_masked.clone()),
        (None, None) => {
            return Err(ApiError::invalid_fields(vec![field_error(
                "client_secret",
                "is required",
            )]));
        }
    };
    let at = now();
    let next = AppCredentials {
        tenant: call.who.tenant.clone(),
        provider: provider.id.clone(),
        client_id,
        client_secret,
        client_secret_masked,
        redirect_uri,
        scopes: body.scopes,
        settings,
        created_at: current.as_ref().map_or(at, |c| c.created_at),
        updated_at: at,
        updated_by: call.who.user.clone(),
        version: current.as_ref().map_or(1, |c| c.version + 1),
    };
    let audit = call
        .audit(
            "app_credentials.put",
            format!("app-credentials/{}", provider.id),
        )
        .detail("provider", &provider.id)
        .detail("secret_changed", body.client_secret.is_some());
    match store
        .save(&next, current.as_ref().map(|c| c.version), &audit)
        .await
    {
        Ok(()) => {}
        Err(StoreError::ConditionFailed) => {
            return Err(ApiError::concurrent_update(
                "the app credentials changed concurrently; read them and retry",
            ));
        }
        Err(e) => return Err(ApiError::from(e)),
    }
    let status = if current.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    http::json_versioned(status, &view(&next), next.version)
}

/// The tenant's app for a provider, secret masked.
pub async fn get(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let provider = oauth_provider(call)?;
    match store(call).get(&call.who.tenant, &provider.id).await? {
        Some(app) => http::json_versioned(StatusCode::OK, &view(&app), app.version),
        None => Err(ApiError::NotFound(format!(
            "no app credentials for {}; connections use the platform's app if it has one",
            provider.name
        ))),
    }
}

/// Removes the tenant's app for a provider (connections fall back to the platform's).
pub async fn delete(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let provider = oauth_provider(call)?;
    let expected = http::if_match(&call.req)?;
    let store = store(call);
    let Some(current) = store.get(&call.who.tenant, &provider.id).await? else {
        return Err(ApiError::NotFound(format!(
            "no app credentials for {}",
            provider.name
        )));
    };
    if expected.is_some_and(|v| v != current.version) {
        return Err(ApiError::PreconditionFailed);
    }
    let audit = call
        .audit(
            "app_credentials.delete",
            format!("app-credentials/{}", provider.id),
        )
        .detail("provider", &provider.id);
    match store.delete(&call.who.tenant, &provider.id, &audit).await {
        Ok(()) => http::no_content(),
        Err(StoreError::ConditionFailed) => Err(ApiError::NotFound(format!(
            "no app credentials for {}",
            provider.name
        ))),
        Err(e) => Err(ApiError::from(e)),
    }
}
