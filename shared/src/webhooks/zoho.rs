//! Zoho CRM instant notifications (the Notifications API, `actions/watch`), which Conduit
//! enables itself for a realtime config (`sync::subscriptions`): one channel per
//! module, with a channel id and a `token` Conduit made.
//!
//! **Verification**: Zoho signs nothing; each notification carries the channel's
//! `token` (at most 50 characters) and `channel_id` in its body. The token is compared
//! in constant time with the one Conduit sealed for the config, and the channel id must
//! be one of the config's channels — for the module it is about. The body has to be
//! read to find them, so a body that is not JSON is refused (400) before them.
//!
//! **Notifications**: `{"server_time": ms, "query_params": {…}, "module": "Contacts",
//! "resource_uri": "…/crm/v8/Contacts", "ids": ["…"], "affected_fields": […],
//! "operation": "insert"|"update"|"delete", "channel_id": "…", "token": "…"}`. Only
//! the ids are taken: the records are read back from Zoho, never from the body.

use serde_json::Value;
use subtle::ConstantTimeEq;

use super::WebhookError;
use super::hubspot::Change;

/// Ids one notification may carry (Zoho notifies per operation; a mass update of 100
/// records is one notification).
pub const MAX_IDS: usize = 1_000;

/// One notification, as record sync reads it (the token kept aside for the check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The channel it was sent on.
    pub channel_id: String,
    /// The token the channel was enabled with (checked with [`check_token`]).
    pub token: String,
    /// The module (`Contacts`, `Accounts`, …).
    pub module: String,
    /// What happened to the records (`None`: an operation record sync does not read).
    pub change: Option<Change>,
    /// The records' ids.
    pub ids: Vec<String>,
}

fn text(v: Option<&Value>, max: usize) -> Option<String> {
    match v? {
        Value::String(s) if !s.trim().is_empty() && s.len() <= max => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Reads one notification (the whole body).
pub fn parse(body: &[u8]) -> Result<Notification, WebhookError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| WebhookError::Malformed(e.to_string()))?;
    let field = |name: &str, max: usize| {
        text(v.get(name), max).ok_or_else(|| WebhookError::Malformed(format!("{name} is missing")))
    };
    let channel_id = field("channel_id", 32)?;
    if !channel_id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(WebhookError::Malformed("channel_id is not a number".into()));
    }
    // A notification without a token is not one of Conduit's channels.
    let token = text(v.get("token"), 50).unwrap_or_default();
    let module = field("module", 100)?;
    let operation = field("operation", 32)?;
    let ids = v
        .get("ids")
        .and_then(Value::as_array)
        .ok_or_else(|| WebhookError::Malformed("ids is missing".into()))?;
    if ids.len() > MAX_IDS {
        return Err(WebhookError::Malformed(format!("more than {MAX_IDS} ids")));
    }
    let ids = ids
        .iter()
        .map(|id| {
            text(Some(id), 32)
                .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| WebhookError::Malformed("an id is not a Zoho record id".into()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let change = match operation.as_str() {
        "insert" | "update" => Some(Change::Changed),
        "delete" => Some(Change::Deleted),
        _ => None,
    };
    Ok(Notification {
        channel_id,
        token,
        module,
        change,
        ids,
    })
}

/// Checks a notification's token against the channel's, in constant time.
pub fn check_token(given: &str, expected: &str) -> Result<(), WebhookError> {
    if !given.is_empty() && bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(WebhookError::BadCredentials)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn notifications_read_their_ids_and_operation() {
        let body = json!({"server_time": 1_700_000_000_000_i64, "query_params": {},
            "module": "Contacts", "resource_uri": "https://www.zohoapis.com/crm/v8/Contacts",
            "ids": ["4876876000000123001", "4876876000000123002"], "affected_fields": [],
            "operation": "update", "channel_id": "1000000068001", "token": "t0k"});
        let n = parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(n.change, Some(Change::Changed));
        assert_eq!(n.ids.len(), 2);
        assert_eq!(
            (n.module.as_str(), n.channel_id.as_str()),
            ("Contacts", "1000000068001")
        );
        let deleted = json!({"module": "Accounts", "ids": [7], "operation": "delete",
            "channel_id": 5, "token": "t"});
        assert_eq!(
            parse(deleted.to_string().as_bytes()).unwrap().change,
            Some(Change::Deleted)
        );
        for bad in [
            json!({"module": "Contacts", "ids": ["1"], "operation": "insert"}),
            json!({"module": "Contacts", "ids": ["x1"], "operation": "insert", "channel_id": "1"}),
            json!({"module": "Contacts", "operation": "insert", "channel_id": "1"}),
            json!({"module": "Contacts", "ids": ["1"], "operation": "insert", "channel_id": "1; drop"}),
            json!([1]),
        ] {
            assert!(parse(bad.to_string().as_bytes()).is_err(), "{bad}");
        }
        assert!(parse(b"not json").is_err());
    }

    #[test]
    fn tokens_must_match_exactly() {
        assert_eq!(check_token("abc", "abc"), Ok(()));
        assert_eq!(check_token("abd", "abc"), Err(WebhookError::BadCredentials));
        assert_eq!(check_token("ab", "abc"), Err(WebhookError::BadCredentials));
        assert_eq!(check_token("", "abc"), Err(WebhookError::BadCredentials));
        assert_eq!(check_token("", ""), Err(WebhookError::BadCredentials));
    }
}
