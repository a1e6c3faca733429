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

/// Pipedrive's "Responses" page and API v2 reference (list and search paging).
const PIPEDRIVE_V2_DOC: &str = "Pipedrive API v2 reference, developers.pipedrive.com/docs/api/v1 (Persons, Organizations: next_cursor 'will be null if you have reached the end'); specs/pipedrive/SOURCES.txt";
/// Pipedrive's v1 field reference (times in `YYYY-MM-DD HH:MM:SS`, the `id` field `int`).
const PIPEDRIVE_FIELDS_DOC: &str = "Pipedrive API v1 reference, PersonFields/OrganizationFields (the file's own example: add_time \"2019-02-04 13:58:03\"); specs/pipedrive/SOURCES.txt";

/// One relaxation of an answer of Pipedrive's descriptions.
const fn pipedrive(
    operation: &'static str,
    pointer: &'static str,
    rule: Rule,
    found: &'static str,
    relaxation: &'static str,
    reason: &'static str,
    doc: &'static str,
) -> Exception {
    Exception {
        operation,
        side: Side::Response,
        pointer,
        rule,
        found: Some(found),
        status: None,
        relaxation,
        reason,
        doc,
    }
}

/// Zoho CRM v8's status-code page (201 insert, 204 no content, 207 multi-status, 400).
const ZOHO_STATUS_DOC: &str = "Zoho CRM API v8, Status Codes (www.zoho.com/crm/developer/docs/api/v8/status-codes.html) and the Insert/Update/Upsert/Delete Records, Get Records and Search Records pages; specs/zoho/SOURCES.txt";
/// Why Zoho's record answers match more than one `oneOf` alternative.
const ZOHO_ONE_OF: &str = "crm-oas v8 gives the answer as oneOf [success wrapper, API_Exception] where neither alternative has a required member, so every object matches both; the live API answers one or the other";

/// A status Zoho answers that crm-oas v8 (which declares only 200) leaves out.
const fn zoho_status(operation: &'static str, status: u16, relaxation: &'static str) -> Exception {
    Exception {
        operation,
        side: Side::Response,
        pointer: "/status",
        rule: Rule::UndeclaredStatus,
        found: None,
        status: Some(status),
        relaxation,
        reason: "crm-oas v8 declares only 200 for every record operation",
        doc: ZOHO_STATUS_DOC,
    }
}

/// A Zoho answer body matching both of crm-oas's loose `oneOf` alternatives.
const fn zoho_one_of(operation: &'static str) -> Exception {
    Exception {
        operation,
        side: Side::Response,
        pointer: "/body",
        rule: Rule::Schema(Keyword::Alternatives),
        found: Some("object"),
        status: None,
        relaxation: "the body may match more than one alternative",
        reason: ZOHO_ONE_OF,
        doc: "crm-oas v8.0 record.json (components/schemas/API_Exception has no required member)",
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
    Exception {
        operation: "POST /api/v2/*",
        side: Side::Request,
        pointer: "/body/title",
        rule: Rule::Schema(Keyword::Required),
        found: Some("missing"),
        status: None,
        relaxation: "persons and organizations are created without title (name is what they need)",
        reason: "the v2 file's create bodies of persons and organizations require title, copied from deals",
        doc: PIPEDRIVE_V2_DOC,
    },
    pipedrive(
        "GET /api/v2/*",
        "/body/additional_data/next_cursor",
        Rule::Schema(Keyword::Type),
        "null",
        "next_cursor is null on the last page",
        "the file describes next_cursor as null at the end but types it as a non-nullable string",
        PIPEDRIVE_V2_DOC,
    ),
    pipedrive(
        "GET /api/v2/*/search",
        "/body/additional_data/next_cursor",
        Rule::Schema(Keyword::Type),
        "null",
        "next_cursor is null on the last page",
        "the file describes next_cursor as null at the end but types it as a non-nullable string",
        PIPEDRIVE_V2_DOC,
    ),
    pipedrive(
        "GET /api/v2/persons",
        "/body/data/*/org_id",
        Rule::Schema(Keyword::Type),
        "null",
        "a person without an organization has org_id null",
        "nullable members are not marked nullable in the v2 file",
        PIPEDRIVE_V2_DOC,
    ),
    pipedrive(
        "GET /api/v2/deals",
        "/body/data/*/org_id",
        Rule::Schema(Keyword::Type),
        "null",
        "a deal without an organization has org_id null",
        "nullable members are not marked nullable in the v2 file",
        PIPEDRIVE_V2_DOC,
    ),
    pipedrive(
        "GET /api/v2/deals",
        "/body/data/*/person_id",
        Rule::Schema(Keyword::Type),
        "null",
        "a deal without a person has person_id null",
        "nullable members are not marked nullable in the v2 file",
        PIPEDRIVE_V2_DOC,
    ),
    pipedrive(
        "* /api/v2/deals/*",
        "/body/data/person_id",
        Rule::Schema(Keyword::Type),
        "null",
        "a deal without a person has person_id null",
        "nullable members are not marked nullable in the v2 file",
        PIPEDRIVE_V2_DOC,
    ),
    pipedrive(
        "POST /api/v2/deals",
        "/body/data/person_id",
        Rule::Schema(Keyword::Type),
        "null",
        "a deal without a person has person_id null",
        "nullable members are not marked nullable in the v2 file",
        PIPEDRIVE_V2_DOC,
    ),
    pipedrive(
        "GET /api/v2/persons",
        "/body/data/*/last_name",
        Rule::Schema(Keyword::Type),
        "null",
        "a one-word name has last_name null",
        "nullable members are not marked nullable in the v2 file",
        PIPEDRIVE_V2_DOC,
    ),
    pipedrive(
        "* /api/v2/*/*",
        "/body/data/org_id",
        Rule::Schema(Keyword::Type),
        "null",
        "a person without an organization has org_id null",
        "nullable members are not marked nullable in the v2 file",
        PIPEDRIVE_V2_DOC,
    ),
    pipedrive(
        "POST /api/v2/*",
        "/body/data/org_id",
        Rule::Schema(Keyword::Type),
        "null",
        "a person without an organization has org_id null",
        "nullable members are not marked nullable in the v2 file",
        PIPEDRIVE_V2_DOC,
    ),
    pipedrive(
        "* /api/v2/*/*",
        "/body/data/last_name",
        Rule::Schema(Keyword::Type),
        "null",
        "a one-word name has last_name null",
        "nullable members are not marked nullable in the v2 file",
        PIPEDRIVE_V2_DOC,
    ),
    pipedrive(
        "POST /api/v2/*",
        "/body/data/last_name",
        Rule::Schema(Keyword::Type),
        "null",
        "a one-word name has last_name null",
        "nullable members are not marked nullable in the v2 file",
        PIPEDRIVE_V2_DOC,
    ),
    pipedrive(
        "GET /api/v2/organizations",
        "/body/data/*/address",
        Rule::Schema(Keyword::Type),
        "null",
        "an organization without an address has address null",
        "nullable members are not marked nullable in the v2 file",
        PIPEDRIVE_V2_DOC,
    ),
    pipedrive(
        "* /api/v2/*/*",
        "/body/data/address",
        Rule::Schema(Keyword::Type),
        "null",
        "an organization without an address has address null",
        "nullable members are not marked nullable in the v2 file",
        PIPEDRIVE_V2_DOC,
    ),
    pipedrive(
        "POST /api/v2/*",
        "/body/data/address",
        Rule::Schema(Keyword::Type),
        "null",
        "an organization without an address has address null",
        "nullable members are not marked nullable in the v2 file",
        PIPEDRIVE_V2_DOC,
    ),
    pipedrive(
        "GET /api/v2/persons/search",
        "/body/data/items/*/item/organization",
        Rule::Schema(Keyword::Type),
        "null",
        "a person without an organization has organization null",
        "nullable members are not marked nullable in the v2 file",
        PIPEDRIVE_V2_DOC,
    ),
    pipedrive(
        "GET /api/v2/organizations/search",
        "/body/data/items/*/item/address",
        Rule::Schema(Keyword::Type),
        "null",
        "an organization without an address has address null",
        "nullable members are not marked nullable in the v2 file",
        PIPEDRIVE_V2_DOC,
    ),
    pipedrive(
        "GET /v1/*",
        "/body/data/*/add_time",
        Rule::Schema(Keyword::Format),
        "string",
        "YYYY-MM-DD HH:MM:SS (UTC)",
        "v1 times are not RFC 3339; the file types them date-time while its example shows v1's format",
        PIPEDRIVE_FIELDS_DOC,
    ),
    pipedrive(
        "GET /v1/*",
        "/body/data/*/update_time",
        Rule::Schema(Keyword::Format),
        "string",
        "YYYY-MM-DD HH:MM:SS (UTC)",
        "v1 times are not RFC 3339; the file types them date-time while its example shows v1's format",
        PIPEDRIVE_FIELDS_DOC,
    ),
    pipedrive(
        "POST /v1/*",
        "/body/data/add_time",
        Rule::Schema(Keyword::Format),
        "string",
        "YYYY-MM-DD HH:MM:SS (UTC)",
        "v1 times are not RFC 3339; the file types them date-time while its example shows v1's format",
        PIPEDRIVE_FIELDS_DOC,
    ),
    pipedrive(
        "POST /v1/*",
        "/body/data/update_time",
        Rule::Schema(Keyword::Format),
        "string",
        "YYYY-MM-DD HH:MM:SS (UTC)",
        "v1 times are not RFC 3339; the file types them date-time while its example shows v1's format",
        PIPEDRIVE_FIELDS_DOC,
    ),
    pipedrive(
        "GET /v1/*",
        "/body/data/*/field_type",
        Rule::Schema(Keyword::Enum),
        "string",
        "field_type int (the built-in id and count fields)",
        "the file's field_type enum lists only the types a custom field may be created with",
        PIPEDRIVE_FIELDS_DOC,
    ),
    zoho_one_of("* /crm/v8/{module_api_name}"),
    zoho_one_of("* /crm/v8/{module_api_name}/*"),
    zoho_status(
        "GET /crm/v8/{module_api_name}",
        204,
        "204 with no body: no record matches",
    ),
    zoho_status(
        "GET /crm/v8/{module_api_name}",
        304,
        "304 with no body: nothing modified after If-Modified-Since",
    ),
    zoho_status(
        "GET /crm/v8/{module_api_name}/deleted",
        304,
        "304 with no body: nothing deleted after If-Modified-Since",
    ),
    zoho_status(
        "GET /crm/v8/{module_api_name}/*",
        204,
        "204 with no body: no record, search hit or deleted record",
    ),
    zoho_status(
        "POST /crm/v8/{module_api_name}",
        201,
        "201: every record inserted",
    ),
    zoho_status(
        "* /crm/v8/{module_api_name}",
        207,
        "207: some records of the write failed (each answered in data)",
    ),
    zoho_status(
        "* /crm/v8/{module_api_name}",
        400,
        "400: every record of the write failed, or the request itself did",
    ),
    zoho_status(
        "POST /crm/v8/{module_api_name}/upsert",
        207,
        "207: some records of the upsert failed",
    ),
    zoho_status(
        "POST /crm/v8/{module_api_name}/upsert",
        400,
        "400: every record of the upsert failed, or the request itself did",
    ),
    Exception {
        operation: "POST /crm/v8/settings/fields",
        side: Side::Request,
        pointer: "/body/fields/*/*",
        rule: Rule::Schema(Keyword::Required),
        found: Some("missing"),
        status: None,
        relaxation: "a new field names only what it sets (field_label, data_type, length, unique…)",
        reason: "fields.json uses one schema, with 70 required members, for the metadata Zoho answers and the field a client creates",
        doc: "Zoho CRM API v8, Create Custom Fields (www.zoho.com/crm/developer/docs/api/v8/create-custom-fields.html): the sample request sends field_label, data_type, length",
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
