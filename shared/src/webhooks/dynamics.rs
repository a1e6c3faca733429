//! Dynamics 365 (Dataverse) webhooks, which Conduit registers itself for a realtime
//! config (`sync::subscriptions`): a service endpoint with `authtype` HttpHeader and
//! asynchronous post-operation steps for Create, Update and Delete of the table.
//!
//! **Verification**: Dataverse signs nothing; each request carries the header Conduit
//! set on the endpoint (`x-conduit-webhook-key`, the config's sealed password),
//! compared in constant time before the body is read.
//!
//! **Body**: the `RemoteExecutionContext` as JSON — `MessageName`, `PrimaryEntityName`,
//! `PrimaryEntityId`, `OperationId`, `RequestId`, `CorrelationId`, `OrganizationId`,
//! `InputParameters` (the `Target`), `Depth`, `Stage`, `UserId`, … Only the message,
//! table and id are taken: the row is read back from Dataverse, never from the body.

use serde_json::Value;
use subtle::ConstantTimeEq;

use super::WebhookError;
use super::hubspot::Change;

/// Checks the webhook's secret header.
pub fn check_key(header: Option<&str>, expected: &str) -> Result<(), WebhookError> {
    let given =
        header
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .ok_or(WebhookError::MissingHeader(
                crate::sync::crm::dynamics::HOOK_HEADER,
            ))?;
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(WebhookError::BadCredentials)
    }
}

/// One execution, as record sync reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execution {
    /// The table's logical name (`contact`, `account`).
    pub table: String,
    /// The row's id (a GUID, lower case).
    pub id: String,
    /// What happened to it (`None`: a message record sync does not read).
    pub change: Option<Change>,
    /// The operation's id (a retry of the same operation carries it again).
    pub operation: String,
}

fn text<'v>(v: &'v Value, name: &str, max: usize) -> Result<&'v str, WebhookError> {
    v.get(name)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.len() <= max)
        .ok_or_else(|| WebhookError::Malformed(format!("{name} is missing")))
}

fn is_guid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| {
            matches!(i, 8 | 13 | 18 | 23) == (b == b'-') && (b == b'-' || b.is_ascii_hexdigit())
        })
}

/// Reads one execution context (the whole body).
pub fn parse(body: &[u8]) -> Result<Execution, WebhookError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| WebhookError::Malformed(e.to_string()))?;
    let message = text(&v, "MessageName", 100)?;
    let table = text(&v, "PrimaryEntityName", 100)?;
    let id = text(&v, "PrimaryEntityId", 36)?;
    if !is_guid(id) {
        return Err(WebhookError::Malformed(
            "PrimaryEntityId is not a GUID".into(),
        ));
    }
    let operation = text(&v, "OperationId", 36)
        .or_else(|_| text(&v, "RequestId", 36))
        .unwrap_or_default();
    let change = match message {
        "Create" | "Update" => Some(Change::Changed),
        "Delete" => Some(Change::Deleted),
        _ => None,
    };
    Ok(Execution {
        table: table.to_ascii_lowercase(),
        id: id.to_ascii_lowercase(),
        change,
        operation: operation.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn executions_read_message_table_and_id() {
        let body = json!({"MessageName": "Update", "PrimaryEntityName": "contact",
            "PrimaryEntityId": "9F2B3C4D-0000-4000-8000-000000000001", "OperationId": "op-1",
            "InputParameters": [], "Depth": 1});
        let e = parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(e.change, Some(Change::Changed));
        assert_eq!(e.id, "9f2b3c4d-0000-4000-8000-000000000001");
        assert_eq!(e.table, "contact");
        let other = json!({"MessageName": "Assign", "PrimaryEntityName": "contact",
            "PrimaryEntityId": "9f2b3c4d-0000-4000-8000-000000000001"});
        assert_eq!(parse(other.to_string().as_bytes()).unwrap().change, None);
        for bad in [
            json!({"MessageName": "Update", "PrimaryEntityName": "contact"}),
            json!({"MessageName": "Update", "PrimaryEntityName": "contact", "PrimaryEntityId": "x' or 1"}),
            json!({"PrimaryEntityName": "contact", "PrimaryEntityId": "9f2b3c4d-0000-4000-8000-000000000001"}),
            json!([1]),
        ] {
            assert!(parse(bad.to_string().as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_key_must_match_exactly() {
        assert_eq!(check_key(Some("k3y"), "k3y"), Ok(()));
        assert_eq!(
            check_key(Some("k3z"), "k3y"),
            Err(WebhookError::BadCredentials)
        );
        assert!(matches!(
            check_key(None, "k3y"),
            Err(WebhookError::MissingHeader(_))
        ));
    }
}
