//! The CRM as this API sees it: a client for a config's connection, what its errors
//! mean to the caller, and which CRM fields are the CRM's or Conduit's own
//! bookkeeping rather than data to map.

use std::collections::BTreeMap;

use conduit::connections::{Connection, Connections};
use conduit::domain::{ConnectionId, ConnectionStatus};
use conduit::http::ApiError;
use conduit::sync::crm::{CrmClient, CrmError, CrmKind};
use conduit::sync::schema::{CrmField, Entity, FieldType};

use crate::Call;

/// A CRM error as an API error.
pub fn api_error(e: CrmError) -> ApiError {
    match e {
        CrmError::Auth(why) => ApiError::Conflict {
            code: "connection_unusable",
            message: format!("the connection cannot be used: {why}"),
        },
        CrmError::Transient(why) | CrmError::Malformed(why) => ApiError::BadGateway {
            code: "provider_unavailable",
            message: format!("the CRM is unavailable: {why}"),
        },
        CrmError::LimitExhausted(why) => ApiError::BadGateway {
            code: "provider_rate_limited",
            message: format!("the CRM's request allowance is used up: {why}"),
        },
        CrmError::Rejected {
            status: 400 | 404 | 422,
            message,
        } => ApiError::bad_request(
            "provider_rejected",
            format!("the CRM refused the request: {message}"),
        ),
        CrmError::Rejected { status, message } => ApiError::BadGateway {
            code: "provider_rejected",
            message: format!("the CRM refused the request ({status}): {message}"),
        },
        CrmError::ScopesMissing(missing) => {
            let mut extra = serde_json::Map::new();
            extra.insert("missing_scopes".into(), serde_json::json!(missing));
            ApiError::ConflictWith {
                code: "scopes_missing",
                message: format!(
                    "the CRM refused: the connection lacks {}; reconnect it to add them",
                    missing.join(", ")
                ),
                extra,
            }
        }
        CrmError::Internal(why) => ApiError::internal(why),
        CrmError::Store(e) => e.into(),
    }
}

/// The kind of CRM of a provider, or the 400 for a provider Conduit does not sync.
pub fn kind_of(provider: &str) -> Result<CrmKind, ApiError> {
    CrmKind::of(provider).ok_or_else(|| {
        ApiError::bad_request(
            "provider_not_syncable",
            format!(
                "record sync works with {} connections, not {:?}",
                CrmKind::all()
                    .iter()
                    .map(|k| k.provider())
                    .collect::<Vec<_>>()
                    .join(", "),
                provider.chars().take(64).collect::<String>()
            ),
        )
    })
}

/// A tenant's connection that a config may sync with: it exists (else `None`), its
/// provider syncs records (else 400) and it is connected (else 409).
pub async fn usable_connection(
    call: &Call<'_>,
    id: &ConnectionId,
) -> Result<Option<(Connection, CrmKind)>, ApiError> {
    let Some(conn) = Connections::new(call.app.table.clone())
        .get(&call.who.tenant, id)
        .await?
    else {
        return Ok(None);
    };
    let kind = kind_of(&conn.provider)?;
    if conn.status != ConnectionStatus::Connected {
        return Err(ApiError::Conflict {
            code: "connection_unusable",
            message: format!(
                "connection {} is {}, not connected; reconnect or activate it first",
                conn.id,
                conn.status.as_str()
            ),
        });
    }
    Ok(Some((conn, kind)))
}

/// A client for `connection`, acting for the caller.
pub fn client<'a>(
    call: &'a Call<'_>,
    kind: CrmKind,
    connection: &ConnectionId,
) -> Result<CrmClient<'a>, ApiError> {
    CrmClient::new(
        call.app,
        kind,
        call.who.tenant.clone(),
        connection.clone(),
        call.who.user.as_str(),
        &call.meta.request_id,
    )
    .map_err(api_error)
}

/// The fields of each entity.
pub async fn describe_all(
    client: &mut CrmClient<'_>,
    entities: &[Entity],
) -> Result<BTreeMap<Entity, Vec<CrmField>>, ApiError> {
    let mut out = BTreeMap::new();
    for &e in entities {
        out.insert(e, client.describe(e).await.map_err(api_error)?);
    }
    Ok(out)
}

/// Whether a CRM field is bookkeeping (ids, timestamps the CRM sets, Conduit's link
/// field) rather than data a mapping or an auto-map should offer.
pub fn is_system(kind: CrmKind, entity: Entity, field: &CrmField) -> bool {
    kind.is_system_field(entity, &field.name) || (field.kind == FieldType::Id && !field.writable)
}
