//! Which scopes each OAuth stand-in knows, and what a route needs from a token's scopes.
//!
//! A scope a provider does not know is refused at its consent screen (see
//! [`super::flow::authorize`]); a route whose requirement the token's scopes do not meet
//! answers with its provider's own missing-scope error. Requirements are "any of" lists,
//! as the providers' specs state them (HubSpot's OpenAPI `security` alternatives,
//! Google's discovery `scopes`).

use super::OAuthProvider;

/// HubSpot CRM object types with granular scopes the sandbox knows.
const HUBSPOT_OBJECTS: [&str; 10] = [
    "contacts",
    "companies",
    "deals",
    "owners",
    "users",
    "custom",
    "line_items",
    "quotes",
    "products",
    "marketing_events",
];

/// HubSpot scopes outside the `crm.objects`/`crm.schemas` families the sandbox knows.
const HUBSPOT_OTHER: [&str; 14] = [
    "oauth",
    "tickets",
    "timeline",
    "e-commerce",
    "automation",
    "content",
    "files",
    "forms",
    "crm.lists.read",
    "crm.lists.write",
    "crm.import",
    "crm.export",
    "conversations.read",
    "conversations.write",
];

/// Salesforce connected-app scopes (OAuth token scopes).
const SALESFORCE: [&str; 18] = [
    "api",
    "full",
    "web",
    "id",
    "openid",
    "profile",
    "email",
    "address",
    "phone",
    "refresh_token",
    "offline_access",
    "chatter_api",
    "custom_permissions",
    "visualforce",
    "wave_api",
    "content",
    "lightning",
    "cdp_api",
];

/// Pipedrive app scopes.
const PIPEDRIVE: [&str; 25] = [
    "base",
    "deals:read",
    "deals:full",
    "mail:read",
    "mail:full",
    "activities:read",
    "activities:full",
    "contacts:read",
    "contacts:full",
    "products:read",
    "products:full",
    "projects:read",
    "projects:full",
    "users:read",
    "recents:read",
    "search:read",
    "admin",
    "leads:read",
    "leads:full",
    "phone-integration",
    "goals:read",
    "goals:full",
    "video-calls",
    "messengers-integration",
    "webhooks:full",
];

/// Google scopes the sandbox knows (identity, and the APIs it stands in for or that
/// Conduit may ask for next), by their long names.
const GOOGLE: [&str; 27] = [
    "openid",
    "https://www.googleapis.com/auth/userinfo.email",
    "https://www.googleapis.com/auth/userinfo.profile",
    "https://mail.google.com/",
    "https://www.googleapis.com/auth/gmail.send",
    "https://www.googleapis.com/auth/gmail.compose",
    "https://www.googleapis.com/auth/gmail.modify",
    "https://www.googleapis.com/auth/gmail.readonly",
    "https://www.googleapis.com/auth/gmail.metadata",
    "https://www.googleapis.com/auth/gmail.labels",
    "https://www.googleapis.com/auth/gmail.insert",
    "https://www.googleapis.com/auth/gmail.settings.basic",
    "https://www.googleapis.com/auth/gmail.addons.current.action.compose",
    "https://www.googleapis.com/auth/calendar",
    "https://www.googleapis.com/auth/calendar.readonly",
    "https://www.googleapis.com/auth/calendar.events",
    "https://www.googleapis.com/auth/calendar.events.readonly",
    "https://www.googleapis.com/auth/calendar.settings.readonly",
    "https://www.googleapis.com/auth/calendar.addons.execute",
    "https://www.googleapis.com/auth/drive",
    "https://www.googleapis.com/auth/drive.readonly",
    "https://www.googleapis.com/auth/drive.file",
    "https://www.googleapis.com/auth/documents.readonly",
    "https://www.googleapis.com/auth/contacts",
    "https://www.googleapis.com/auth/contacts.readonly",
    "https://www.googleapis.com/auth/spreadsheets",
    "https://www.googleapis.com/auth/spreadsheets.readonly",
];

/// Zendesk resources that take `{resource}:read` / `{resource}:write` scopes.
const ZENDESK_RESOURCES: [&str; 16] = [
    "tickets",
    "users",
    "auditlogs",
    "organizations",
    "hc",
    "apps",
    "triggers",
    "automations",
    "targets",
    "webhooks",
    "macros",
    "requests",
    "satisfaction_ratings",
    "dynamic_content",
    "any_channel",
    "web_widget",
];

/// Genesys Cloud scope families (`{family}` and `{family}:readonly`).
const GENESYS: [&str; 19] = [
    "users",
    "external-contacts",
    "conversations",
    "analytics",
    "routing",
    "presence",
    "notifications",
    "organization",
    "authorization",
    "architect",
    "recordings",
    "quality",
    "knowledge",
    "integrations",
    "scripts",
    "outbound",
    "webchat",
    "messaging",
    "groups",
];

/// Zoho CRM scope groups (`ZohoCRM.{group}.…`).
const ZOHO_GROUPS: [&str; 10] = [
    "modules",
    "settings",
    "users",
    "org",
    "bulk",
    "coql",
    "notifications",
    "files",
    "mass_update",
    "share",
];

/// Zoho CRM operation types.
const ZOHO_OPERATIONS: [&str; 6] = ["ALL", "READ", "CREATE", "UPDATE", "DELETE", "WRITE"];

/// Whether `provider` knows `scope` (so an app may be configured with it).
pub(crate) fn known(provider: OAuthProvider, scope: &str) -> bool {
    match provider {
        OAuthProvider::Hubspot => hubspot_known(scope),
        OAuthProvider::Salesforce => SALESFORCE.contains(&scope),
        OAuthProvider::Zoho => zoho_known(scope),
        OAuthProvider::Pipedrive => PIPEDRIVE.contains(&scope),
        OAuthProvider::Dynamics365 => microsoft_known(scope),
        OAuthProvider::Google => GOOGLE.contains(&scope),
        OAuthProvider::Zendesk => zendesk_known(scope),
        OAuthProvider::Genesys => genesys_known(scope),
        OAuthProvider::CustomOauth => rfc6749_scope_token(scope),
    }
}

fn hubspot_known(scope: &str) -> bool {
    if HUBSPOT_OTHER.contains(&scope) {
        return true;
    }
    let granular = |family: &str| {
        scope
            .strip_prefix(family)
            .and_then(|rest| rest.rsplit_once('.'))
            .is_some_and(|(object, access)| {
                HUBSPOT_OBJECTS.contains(&object) && matches!(access, "read" | "write")
            })
    };
    granular("crm.objects.") || granular("crm.schemas.")
}

/// `ZohoCRM.{group}.{OP}`, `ZohoCRM.{group}.{item}.{OP}` and Zoho's profile scope.
fn zoho_known(scope: &str) -> bool {
    if matches!(scope, "AaaServer.profile.READ" | "aaaserver.profile.READ") {
        return true;
    }
    let Some(rest) = scope.strip_prefix("ZohoCRM.") else {
        return false;
    };
    let parts: Vec<&str> = rest.split('.').collect();
    let (group, operation) = match parts.as_slice() {
        [group, operation] => (*group, *operation),
        [group, item, operation] if is_identifier(item) => (*group, *operation),
        _ => return false,
    };
    ZOHO_GROUPS.contains(&group) && ZOHO_OPERATIONS.contains(&operation)
}

fn is_identifier(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// OpenID scopes, `offline_access`, and `https://{resource}/{permission}` resource scopes
/// (Microsoft identity platform v2.0).
fn microsoft_known(scope: &str) -> bool {
    if matches!(scope, "openid" | "profile" | "email" | "offline_access") {
        return true;
    }
    scope
        .strip_prefix("https://")
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(host, permission)| {
            !host.is_empty() && !permission.is_empty() && !permission.contains('/')
        })
}

fn zendesk_known(scope: &str) -> bool {
    if matches!(scope, "read" | "write" | "impersonate") {
        return true;
    }
    scope.split_once(':').is_some_and(|(resource, access)| {
        ZENDESK_RESOURCES.contains(&resource) && matches!(access, "read" | "write")
    })
}

/// RFC 6749 §3.3 `scope-token`: the generic server defines no vocabulary of its own, so
/// any well-formed token is known.
fn rfc6749_scope_token(scope: &str) -> bool {
    !scope.is_empty()
        && scope
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

fn genesys_known(scope: &str) -> bool {
    let family = scope.strip_suffix(":readonly").unwrap_or(scope);
    GENESYS.contains(&family)
}

/// Whether `granted` holds at least one of `any_of`.
pub(crate) fn satisfies(granted: &[String], any_of: &[String]) -> bool {
    any_of.iter().any(|needed| granted.contains(needed))
}

/// Every granular CRM scope of the objects the HubSpot stand-in serves, plus `oauth`: a
/// private app's default scope set.
pub fn hubspot_crm_scopes() -> Vec<String> {
    let mut scopes = vec!["oauth".to_owned()];
    for object in ["contacts", "companies", "deals"] {
        for family in ["objects", "schemas"] {
            for access in ["read", "write"] {
                scopes.push(format!("crm.{family}.{object}.{access}"));
            }
        }
    }
    scopes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_catalogues() {
        let hubspot = OAuthProvider::Hubspot;
        assert!(known(hubspot, "crm.objects.contacts.write"));
        assert!(known(hubspot, "crm.schemas.companies.read"));
        assert!(!known(hubspot, "crm.objects.contacts.delete"));
        assert!(!known(hubspot, "contacts"));
        assert!(known(OAuthProvider::Zoho, "ZohoCRM.modules.contacts.ALL"));
        assert!(known(OAuthProvider::Zoho, "ZohoCRM.users.READ"));
        assert!(known(OAuthProvider::Zoho, "ZohoCRM.settings.fields.READ"));
        assert!(!known(
            OAuthProvider::Zoho,
            "ZohoCRM.modules.contacts.EVERYTHING"
        ));
        assert!(known(
            OAuthProvider::Dynamics365,
            "https://acme.crm.dynamics.com/user_impersonation"
        ));
        assert!(!known(OAuthProvider::Dynamics365, "user_impersonation"));
        assert!(known(OAuthProvider::Zendesk, "tickets:write"));
        assert!(!known(OAuthProvider::Zendesk, "tickets:delete"));
        assert!(known(OAuthProvider::Genesys, "users:readonly"));
        assert!(!known(
            OAuthProvider::Google,
            "https://www.googleapis.com/auth/unknown"
        ));
        assert_eq!(hubspot_crm_scopes().len(), 13);
        assert!(hubspot_crm_scopes().iter().all(|s| known(hubspot, s)));
    }
}
