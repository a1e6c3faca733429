//! Where a published description is stricter than the live API as its provider
//! documents it: each entry relaxes one rule at one place of one operation, and says why
//! and on which documentation page. A violation no entry covers fails the contract test.

use crate::schema::Keyword;
use crate::{Rule, Side, Violation};

/// One relaxation of a published description.
#[derive(Debug, Clone, Copy)]
pub struct Exception {
    /// `METHOD /path/template`; a `*` segment matches any one segment.
    pub operation: &'static str,
    /// Request or response.
    pub side: Side,
    /// JSON pointer into the exchange (`/body/…`, `/query/name`); `*` matches one segment.
    pub pointer: &'static str,
    /// The rule relaxed there.
    pub rule: Rule,
    /// Only when the value found has this JSON type (`null`, `object`, `missing`, …).
    pub found: Option<&'static str>,
    /// Only in exchanges answered with this status.
    pub status: Option<u16>,
    /// What is allowed instead, in words.
    pub relaxation: &'static str,
    /// Why the live API differs from the description.
    pub reason: &'static str,
    /// The provider's documentation saying so.
    pub doc: &'static str,
}

impl Exception {
    /// Whether this entry covers `v`.
    pub fn covers(&self, v: &Violation) -> bool {
        self.side == v.side
            && self.rule == v.rule
            && self.found.is_none_or(|f| f == v.found)
            && self.status.is_none_or(|s| s == v.status)
            && segments_match(self.operation, &v.operation, ' ')
            && segments_match(self.pointer, &v.pointer, '/')
    }

    /// One line: where, what, why.
    pub fn summary(&self) -> String {
        format!(
            "{} {:?} {} {}{}{}: {} — {} [{}]",
            self.operation,
            self.side,
            self.pointer,
            self.rule,
            self.found
                .map(|f| format!(" (found {f})"))
                .unwrap_or_default(),
            self.status
                .map(|s| format!(" (status {s})"))
                .unwrap_or_default(),
            self.relaxation,
            self.reason,
            self.doc
        )
    }
}

/// `*` in `pattern` matches one segment of `text` (split on `sep` and `/`).
fn segments_match(pattern: &str, text: &str, sep: char) -> bool {
    let p: Vec<&str> = pattern.split([sep, '/']).collect();
    let t: Vec<&str> = text.split([sep, '/']).collect();
    p.len() == t.len() && p.iter().zip(&t).all(|(a, b)| *a == "*" || a == b)
}

/// HubSpot's CRM search guide (the request body is optional as a whole, `sorts` are
/// objects).
const HUBSPOT_SEARCH_GUIDE: &str =
    "HubSpot CRM search guide, developers.hubspot.com/docs/api-reference/legacy/crm/search-the-crm";
/// HubSpot's rate-limit guide (the 429 body).
const HUBSPOT_LIMITS_GUIDE: &str = "HubSpot API usage guidelines and limits, developers.hubspot.com/docs/guides/apps/api-usage/usage-details";
/// Why a 429 body has no `category`.
const HUBSPOT_429: &str = "HubSpot's 429 body is {status, message, errorType: RATE_LIMIT, correlationId, policyName} (DESIGN.md provider facts)";
/// Why a requested property without a value is `null`.
const NULL_PROPERTIES: &str = "HubSpot answers null for a requested property the record has no value for \
     (issue 11 \u{a7}2, seen live); the spec types the map's values as string, not nullable";

/// A read whose requested property values may be `null` (see [`NULL_PROPERTIES`]).
const fn null_property_values(
    operation: &'static str,
    pointer: &'static str,
    doc: &'static str,
) -> Exception {
    Exception {
        operation,
        side: Side::Response,
        pointer,
        rule: Rule::Schema(Keyword::Type),
        found: Some("null"),
        status: None,
        relaxation: "a property value may be null",
        reason: NULL_PROPERTIES,
        doc,
    }
}

/// An operation whose 429 answer carries HubSpot's rate-limit body.
const fn rate_limited(operation: &'static str) -> Exception {
    Exception {
        operation,
        side: Side::Response,
        pointer: "/body/category",
        rule: Rule::Schema(Keyword::Required),
        found: Some("missing"),
        status: Some(429),
        relaxation: "a 429 body has errorType and policyName instead of category",
        reason: HUBSPOT_429,
        doc: HUBSPOT_LIMITS_GUIDE,
    }
}

/// Every listed exception.
pub const EXCEPTIONS: &[Exception] = &[
    null_property_values(
        "GET /crm/v3/objects/*",
        "/body/results/*/properties/*",
        "HubSpot CRM objects guide (properties=…: requested properties are returned), developers.hubspot.com/docs/api-reference/latest/crm/objects/contacts/guide",
    ),
    null_property_values(
        "POST /crm/v3/objects/*/search",
        "/body/results/*/properties/*",
        HUBSPOT_SEARCH_GUIDE,
    ),
    null_property_values(
        "POST /crm/v3/objects/*/batch/read",
        "/body/results/*/properties/*",
        "HubSpot CRM objects guide, batch read, developers.hubspot.com/docs/api-reference/latest/crm/objects/objects/batch/get-objects",
    ),
    null_property_values(
        "GET /crm/v3/objects/*/*",
        "/body/properties/*",
        "HubSpot CRM objects guide (retrieve one record with properties=…), developers.hubspot.com/docs/api-reference/latest/crm/objects/contacts/guide",
    ),
    rate_limited("GET /crm/v3/objects/*"),
    rate_limited("POST /crm/v3/objects/*/search"),
    Exception {
        operation: "POST /oauth/v1/token",
        side: Side::Response,
        pointer: "/body/category",
        rule: Rule::Schema(Keyword::Required),
        found: Some("missing"),
        status: Some(400),
        relaxation: "a token error is {status, message, correlationId}",
        reason: "OAuth v1 token errors name the failure in status (BAD_AUTH_CODE, BAD_REFRESH_TOKEN, BAD_CLIENT_ID…), not in category",
        doc: "HubSpot OAuth guide, refreshing tokens and errors, developers.hubspot.com/docs/api/oauth/tokens",
    },
    Exception {
        operation: "POST /crm/v3/objects/*",
        side: Side::Request,
        pointer: "/body/associations",
        rule: Rule::Schema(Keyword::Required),
        found: Some("missing"),
        status: None,
        relaxation: "optional (no associations to make)",
        reason: "the guide: 'you can also add an associations object'; its create examples send properties only",
        doc: "HubSpot contacts guide, developers.hubspot.com/docs/api-reference/latest/crm/objects/contacts/guide",
    },
    Exception {
        operation: "POST /crm/v3/objects/*/search",
        side: Side::Request,
        pointer: "/body/after",
        rule: Rule::Schema(Keyword::Required),
        found: Some("missing"),
        status: None,
        relaxation: "optional (the first page has no cursor)",
        reason: "the guide's requests leave it out; a basic search may send only {}",
        doc: HUBSPOT_SEARCH_GUIDE,
    },
    Exception {
        operation: "POST /crm/v3/objects/*/search",
        side: Side::Request,
        pointer: "/body/filterGroups",
        rule: Rule::Schema(Keyword::Required),
        found: Some("missing"),
        status: None,
        relaxation: "optional (no filter: every record, used to count them)",
        reason: "'to make a basic search with no additional filtering or sorting, include only an empty object in the request body'",
        doc: HUBSPOT_SEARCH_GUIDE,
    },
    Exception {
        operation: "POST /crm/v3/objects/*/search",
        side: Side::Request,
        pointer: "/body/sorts",
        rule: Rule::Schema(Keyword::Required),
        found: Some("missing"),
        status: None,
        relaxation: "optional (default order)",
        reason: "'a basic search with no additional filtering or sorting' sends no sorts",
        doc: HUBSPOT_SEARCH_GUIDE,
    },
    Exception {
        operation: "POST /crm/v3/objects/*/search",
        side: Side::Request,
        pointer: "/body/sorts/*",
        rule: Rule::Schema(Keyword::Type),
        found: Some("object"),
        status: None,
        relaxation: "a sort may be {propertyName, direction}",
        reason: "the spec types sorts as strings; the guide documents object-form sorts, e.g. {\"propertyName\":\"createdate\",\"direction\":\"DESCENDING\"}",
        doc: HUBSPOT_SEARCH_GUIDE,
    },
    Exception {
        operation: "POST /crm/v3/objects/*/batch/create",
        side: Side::Request,
        pointer: "/body/inputs/*/associations",
        rule: Rule::Schema(Keyword::Required),
        found: Some("missing"),
        status: None,
        relaxation: "optional (no associations to make)",
        reason: "the guide: 'you can also add an associations object'; its create examples send properties only",
        doc: "HubSpot contacts guide, developers.hubspot.com/docs/api-reference/latest/crm/objects/contacts/guide",
    },
    Exception {
        operation: "POST /crm/v3/objects/*/batch/read",
        side: Side::Request,
        pointer: "/body/propertiesWithHistory",
        rule: Rule::Schema(Keyword::Required),
        found: Some("missing"),
        status: None,
        relaxation: "optional (no property history wanted)",
        reason: "history is opt-in: the v3 read endpoints return it only for properties named there",
        doc: "HubSpot batch read reference, developers.hubspot.com/docs/api-reference/latest/crm/objects/objects/batch/get-objects; specs/hubspot/SOURCES.txt",
    },
    Exception {
        operation: "POST /gmail/v1/users/{userId}/messages/send",
        side: Side::Request,
        pointer: "/content-type",
        rule: Rule::ContentType,
        found: Some("application/json"),
        status: None,
        relaxation: "a JSON Message body ({raw}) is accepted",
        reason: "the discovery document's request is a Message resource in JSON; the OpenAPI conversion kept only the media-upload (message/*) types",
        doc: "Gmail API reference, users.messages.send: 'The request body contains an instance of Message', developers.google.com/gmail/api/reference/rest/v1/users.messages/send",
    },
    Exception {
        operation: "DELETE /calendar/v3/calendars/{calendarId}/events/{eventId}",
        side: Side::Response,
        pointer: "/status",
        rule: Rule::UndeclaredStatus,
        found: Some("204"),
        status: None,
        relaxation: "204 with an empty body",
        reason: "the discovery document declares no response for a delete and the conversion wrote 200; Google answers 204 No Content",
        doc: "Calendar API reference, events.delete: 'If successful, this method returns an empty response body', developers.google.com/calendar/api/v3/reference/events/delete",
    },
];

/// The exception table as text, one entry a line (printed by the contract tests).
pub fn table() -> String {
    EXCEPTIONS
        .iter()
        .map(|e| format!("- {}\n", e.summary()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violation(operation: &str, pointer: &str, found: &str) -> Violation {
        Violation {
            operation: operation.into(),
            side: Side::Response,
            pointer: pointer.into(),
            rule: Rule::Schema(Keyword::Type),
            found: found.into(),
            status: 200,
            expected: "string".into(),
        }
    }

    #[test]
    fn an_exception_covers_one_place_one_rule_one_found_type() {
        let e = &EXCEPTIONS[1];
        assert!(e.covers(&violation(
            "POST /crm/v3/objects/contacts/search",
            "/body/results/3/properties/phone",
            "null"
        )));
        assert!(
            !e.covers(&violation(
                "POST /crm/v3/objects/contacts/search",
                "/body/results/3/properties/phone",
                "integer"
            )),
            "only null"
        );
        assert!(
            !e.covers(&violation(
                "POST /crm/v3/objects/contacts/search",
                "/body/results/3/id",
                "null"
            )),
            "only property values"
        );
        assert!(
            !e.covers(&violation(
                "POST /crm/v3/objects/contacts/batch/create",
                "/body/results/3/properties/phone",
                "null"
            )),
            "only that operation"
        );
    }

    #[test]
    fn every_exception_says_why_and_where_from() {
        for e in EXCEPTIONS {
            assert!(
                !e.reason.is_empty() && !e.doc.is_empty() && !e.relaxation.is_empty(),
                "{}",
                e.summary()
            );
        }
        assert_eq!(table().lines().count(), EXCEPTIONS.len());
    }
}
