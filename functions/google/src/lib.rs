//! The personal Google function: a user's own Gmail and Calendar through their personal
//! connections (issue 14). `GET /v1/me/gmail/profile`, `POST /v1/me/gmail/send`;
//! `GET|POST /v1/me/calendar/events`, `PATCH|DELETE /v1/me/calendar/events/{id}`,
//! `GET /v1/me/calendar/calendars`, `POST /v1/me/calendar/freebusy`.
//!
//! Every route acts for the caller alone: the connection is the caller's own (one per
//! user and kind, found by its uniqueness marker), never another user's, whatever the
//! role. Without one the answer is 409 `gmail_not_connected` with the start to make;
//! a connection lacking the scope a route needs is 409 `scopes_missing` with the
//! reconnect to make (Gmail is asked for `gmail.send` only unless the user asks for
//! reading). Tokens come through the token lifecycle (refreshed before expiry, and
//! once after a 401).

mod calendar;
mod gmail;

use std::convert::Infallible;

use conduit::app::App;
use conduit::connections::{Connection, Connections};
use conduit::http::{self, Access, ApiError, Route};
use conduit::oauth::lifecycle::TokenError;
use lambda_http::{Body, Request, Response};

/// Handles one HTTP API request routed to this function.
pub async fn handle(app: &App, req: Request) -> Result<Response<Body>, Infallible> {
    http::serve_routes(app, &(), ROUTES, req).await
}

/// Everything a route needs about the call.
pub(crate) type Call<'a> = http::Call<'a>;

/// The function's routes: each acts on the caller's own connection, so any member.
const ROUTES: &[Route] = &[
    Route {
        key: "GET /v1/me/gmail/profile",
        access: Access::Member,
        handler: |c| Box::pin(gmail::profile(c)),
    },
    Route {
        key: "POST /v1/me/gmail/send",
        access: Access::Member,
        handler: |c| Box::pin(gmail::send(c)),
    },
    Route {
        key: "GET /v1/me/calendar/events",
        access: Access::Member,
        handler: |c| Box::pin(calendar::list(c)),
    },
    Route {
        key: "POST /v1/me/calendar/events",
        access: Access::Member,
        handler: |c| Box::pin(calendar::create(c)),
    },
    Route {
        key: "GET /v1/me/calendar/calendars",
        access: Access::Member,
        handler: |c| Box::pin(calendar::calendars(c)),
    },
    Route {
        key: "POST /v1/me/calendar/freebusy",
        access: Access::Member,
        handler: |c| Box::pin(calendar::free_busy(c)),
    },
    Route {
        key: "PATCH /v1/me/calendar/events/{id}",
        access: Access::Member,
        handler: |c| Box::pin(calendar::update(c)),
    },
    Route {
        key: "DELETE /v1/me/calendar/events/{id}",
        access: Access::Member,
        handler: |c| Box::pin(calendar::delete(c)),
    },
];

/// The Google provider's id in the catalogue.
const GOOGLE: &str = "google";

/// The caller's own Google connection of `kind`, or a 409 saying how to make one.
pub(crate) async fn own_connection(call: &Call<'_>, kind: &str) -> Result<Connection, ApiError> {
    let method = call
        .app
        .catalogue
        .provider(GOOGLE)
        .and_then(|p| conduit::oauth::connect::oauth_method(p).ok())
        .ok_or_else(|| ApiError::internal("the catalogue has no Google OAuth method"))?;
    Connections::new(call.app.table.clone())
        .personal(&call.who.tenant, GOOGLE, &method.id, &call.who.user, kind)
        .await?
        .ok_or_else(|| ApiError::Conflict {
            code: if kind == "gmail" {
                "gmail_not_connected"
            } else {
                "calendar_not_connected"
            },
            message: format!(
                "connect your own Google {kind} first: POST /v1/oauth/google/start with \
                 {{\"kind\": \"{kind}\", \"return_to\": …}}"
            ),
        })
}

/// The caller's own Google connection of `kind`, granted what `use_` needs (the
/// catalogue's use, e.g. `action:send_email`), or a 409 `scopes_missing` naming the
/// scopes and the reconnect that adds them.
pub(crate) async fn own_connection_for(
    call: &Call<'_>,
    kind: &str,
    use_: &str,
) -> Result<Connection, ApiError> {
    let conn = own_connection(call, kind).await?;
    if let Err(missing) = conduit::scopes::check(call.app.catalogue, &conn, &[use_.to_owned()]) {
        let mut extra = serde_json::Map::new();
        extra.insert("missing_scopes".into(), serde_json::json!(missing.missing));
        extra.insert(
            "reconnect".into(),
            serde_json::json!({"method": "POST", "path": "/v1/oauth/google/start",
                               "body": {"kind": kind, "uses": missing.uses}}),
        );
        return Err(ApiError::ConflictWith {
            code: "scopes_missing",
            message: format!(
                "your Google {kind} connection lacks a scope this needs; reconnect it"
            ),
            extra,
        });
    }
    Ok(conn)
}

/// A token failure as the caller sees it.
pub(crate) fn token_error(e: TokenError) -> ApiError {
    match e {
        TokenError::NeedsReauth => ApiError::Conflict {
            code: "needs_reauth",
            message: "Google no longer accepts your connection's authorization; reconnect it \
                      (POST /v1/oauth/google/start with its kind)"
                .into(),
        },
        TokenError::NotFound => ApiError::Conflict {
            code: "gmail_not_connected",
            message: "the connection was removed; connect it again".into(),
        },
        TokenError::Unusable(state) => ApiError::Conflict {
            code: "connection_unusable",
            message: format!("your connection is {state}"),
        },
        TokenError::Unavailable(message) => ApiError::BadGateway {
            code: "provider_unavailable",
            message,
        },
        TokenError::Changed => ApiError::Conflict {
            code: "concurrent_update",
            message: "the connection changed concurrently; retry".into(),
        },
        TokenError::Internal(m) => ApiError::internal(m),
        TokenError::Store(e) => e.into(),
    }
}
