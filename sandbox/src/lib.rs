//! Conduit's provider sandbox: a local HTTP server standing in for the CRM providers' APIs,
//! faithful to their documented wire formats, for tests, benchmarks and the local demo.
//!
//! # Addressing
//! Production code reaches the sandbox through one deployment setting that rewrites every
//! catalogue URL `https://HOST/PATH?Q` to `http://127.0.0.1:PORT/HOST/PATH?Q`: the first
//! path segment is the provider's real host, the rest its real path. A tenant's custom API
//! base URL points straight at it, e.g. `http://127.0.0.1:PORT/custom.example/api`.
//!
//! # Provider routes (this milestone: "who am I" / credential checks)
//! | Route name | Request |
//! |---|---|
//! | `zendesk.users_me` | `GET /{sub}.zendesk.com/api/v2/users/me.json` — Basic `{email}/token:{api_token}` |
//! | `freshdesk.agents_me` | `GET /{sub}.freshdesk.com/api/v2/agents/me` — Basic `{api_key}:X` |
//! | `pipedrive.users_me` | `GET /api.pipedrive.com/v1/users/me?api_token=…` (or header `x-api-token`) |
//! | `hubspot.account_info` | `GET /api.hubapi.com/account-info/v3/details` — `Authorization: Bearer` |
//! | `chatwoot.profile` | `GET /app.chatwoot.com/api/v1/profile` — header `api_access_token` |
//! | `custom.me`, `custom.get` | `GET /custom.example/api/me`, any other `GET /custom.example/api/…` — Bearer, `X-Api-Key` or Basic |
//!
//! Unmatched paths of a provider count as `{provider}.unknown` and get that provider's
//! 404; hosts no provider owns count as `unknown_host`.
//!
//! # HubSpot CRM records (record-sync milestone)
//! A stateful stand-in for HubSpot's CRM objects API ([`providers::hubspot_crm`]):
//! contacts and companies kept in memory per portal (the portal of the authenticating
//! token: the OAuth grant user's `hub_id`, 62515 for `pat-na1-sandbox-0001`). Records
//! carry `id` (numeric string, increasing), `properties` (all strings), `createdAt`,
//! `updatedAt` (RFC 3339 with ms) and `archived`; `hs_object_id`, `createdate`,
//! `lastmodifieddate` and `hs_lastmodifieddate` are derived and present on **both**
//! object types (HubSpot uses `lastmodifieddate` on contacts and `hs_lastmodifieddate` on
//! companies), both equal to `updatedAt`. `{object}` is `contacts`/`0-1` or
//! `companies`/`0-2`; other types get HubSpot's 404, bad JSON its 400
//! (`{"status":"error","message","correlationId","category":"VALIDATION_ERROR"}`).
//! Every call authenticates first (401 `INVALID_AUTHENTICATION` / `EXPIRED_AUTHENTICATION`)
//! and counts against the token's 10-second budget (HubSpot's 429 past it), then needs the
//! route's granular scope (403 `MISSING_SCOPES`, see "Scopes"); latency and forced faults
//! apply before all of it, as on any route.
//!
//! | Route name | Request (host `api.hubapi.com`) |
//! |---|---|
//! | `hubspot.crm_list` | `GET /crm/v3/objects/{object}?limit=&after=&properties=&archived=` → `{results, paging:{next:{after,link}}}` (limit 1–100, default 10; no `paging` on the last page; `archived=true` lists only archived) |
//! | `hubspot.crm_get` | `GET /crm/v3/objects/{object}/{id}?properties=&archived=` |
//! | `hubspot.crm_create` | `POST /crm/v3/objects/{object}` `{properties}` → 201; a contact email another live contact has (case-insensitive) → 409 `CONFLICT` "Contact already exists. Existing ID: N" (also on update and batches) |
//! | `hubspot.crm_update` | `PATCH /crm/v3/objects/{object}/{id}` `{properties}` (`""`/null clears) |
//! | `hubspot.crm_archive` | `DELETE /crm/v3/objects/{object}/{id}` → 204 (archives) |
//! | `hubspot.crm_batch_read` | `POST …/{object}/batch/read` `{inputs:[{id}], properties}` → 200, or 207 with `errors` for missing ids |
//! | `hubspot.crm_batch_create` | `POST …/{object}/batch/create` `{inputs:[{properties}]}` → 201 `{status:"COMPLETE",results,startedAt,completedAt}` |
//! | `hubspot.crm_batch_update` | `POST …/{object}/batch/update` `{inputs:[{id,properties}]}` → 200 (207 for missing ids) |
//! | `hubspot.crm_batch_archive` | `POST …/{object}/batch/archive` `{inputs:[{id}]}` → 204 |
//! | `hubspot.crm_search` | `POST /crm/v3/objects/{object}/search` `{filterGroups, sorts, properties, limit (≤ 200), after}` → `{total, results, paging}` |
//! | `hubspot.crm_properties` | `GET /crm/v3/properties/{object}` → `{results:[{name,label,type,fieldType,groupName,description,options,hasUniqueValue,…}]}` (built-in and custom) |
//! | `hubspot.crm_property_get` | `GET /crm/v3/properties/{object}/{name}` → one definition; unknown → 404 `OBJECT_NOT_FOUND` "Unable to find property {name} …" |
//! | `hubspot.crm_property_create` | `POST /crm/v3/properties/{object}` `{name,label,type,fieldType,groupName,hasUniqueValue,description?,options?}` → 201 with the definition; taken name → 409 `OBJECT_ALREADY_EXISTS`; bad name/type → 400 |
//!
//! Built-in properties — contacts: `email firstname lastname phone mobilephone jobtitle
//! company website city country lifecyclestage` (enumeration with HubSpot's stages)
//! `date_of_birth` (date); companies: `name domain website phone industry` (enumeration)
//! `city country numberofemployees annualrevenue` (numbers) `description` (textarea); plus
//! the derived ones. Writes (create, update, batch create/update) naming any other
//! property get HubSpot's 400 `{"status":"error","message":"Property values were not
//! valid: [{…}]","category":"VALIDATION_ERROR","errors":[{"message":"Property \"x\" does
//! not exist","code":"PROPERTY_DOESNT_EXIST","context":{"propertyName":["x"]}}]}` (a batch
//! fails as a whole). Custom properties with `hasUniqueValue` reject a value another live
//! record holds (case-insensitive) with 409 `CONFLICT`, as contact emails do; in a batch,
//! the whole batch. Enumeration values are not checked against their options.
//!
//! Batches take at most 100 inputs (more: 400 `VALIDATION_ERROR`). Search: filter groups
//! are OR-ed (at most 5), filters in a group AND-ed, operators `EQ NEQ GT GTE LT LTE
//! HAS_PROPERTY NOT_HAS_PROPERTY CONTAINS_TOKEN` (`*` wildcards at the token's ends), `IN`
//! and `NOT_IN` (`values: [..]`; `NOT_IN` and `NEQ` also match records without the
//! property) and `BETWEEN` (`value` to `highValue`, inclusive); date properties compare as
//! times (values as epoch-ms strings or RFC 3339), numbers as numbers, other text
//! case-insensitively; one sort (`ASCENDING`/`DESCENDING`, default id order). `after` is
//! an offset: `total` is the true count, but asking for results past the 10,000th
//! (`after` ≥ 10000) answers 400 `VALIDATION_ERROR`, as HubSpot does. Search requests also
//! obey HubSpot's separate limit of 4 per account (portal) per rolling second: the fifth
//! gets the 429 `RATE_LIMIT` body with `"policyName":"SECONDLY"` (and is not counted
//! against the 10-second budget). Every CRM response, errors and 429s included, carries
//! `X-HubSpot-RateLimit-Max`, `-Remaining`, `-Interval-Milliseconds`, `-Secondly`,
//! `-Secondly-Remaining`, `-Daily` and `-Daily-Remaining`.
//!
//! # Salesforce REST data (record-sync milestone)
//! A stateful stand-in for Salesforce's REST API ([`providers::salesforce_crm`]) at the
//! instance host, `/{instance}/services/data/vNN.N/…` (any version), for the Bearer
//! session of a Salesforce OAuth grant (401 `INVALID_SESSION_ID` otherwise, also at
//! another org's instance). Records are kept per org, the org of the grant's user:
//! [`DEFAULT_SALESFORCE_ORG`] (`00DDn00000AcmeOEAA`) for the default user
//! `admin@acme.test` at `acme.my.salesforce.com`; a test finds a token's org with
//! [`SandboxState::salesforce_org_of_token`] (or in the token response's `id`,
//! `…/id/{org}/{user}`). Objects: `Contact` (ids `003…`) and `Account` (`001…`), 18-character
//! ids with the case-safe suffix (15-character ids accepted). Fields — Contact: `Id
//! FirstName LastName (required) Email Phone MobilePhone Title Department AccountId
//! MailingCity MailingCountry LeadSource (picklist) Birthdate (date) Conduit_Id__c
//! (external id, unique) CreatedDate LastModifiedDate SystemModstamp IsDeleted`; Account:
//! `Id Name (required) Website Phone Industry (picklist) BillingCity BillingCountry
//! NumberOfEmployees (int) AnnualRevenue (double) Description (textarea) Conduit_Id__c
//! CreatedDate LastModifiedDate SystemModstamp IsDeleted`. Times are
//! `2024-01-15T09:00:00.000+0000`; every write stamps `LastModifiedDate` =
//! `SystemModstamp` strictly later than any earlier stamp of the org (one request, one
//! stamp). Deleting an account deletes its contacts.
//!
//! | Route name | Request (under `/services/data/vNN.N`) |
//! |---|---|
//! | `salesforce.query` | `GET /query?q=SOQL` → `{totalSize, done, records:[{attributes:{type,url}, …fields}], nextRecordsUrl?}` |
//! | `salesforce.query_all` | `GET /queryAll?q=SOQL`: deleted records too (`IsDeleted` true) |
//! | `salesforce.query_more` | `GET /query/{queryId}-{offset}` (the `nextRecordsUrl`); unknown or expired → 400 `INVALID_QUERY_LOCATOR` |
//! | `salesforce.describe` | `GET /sobjects/{S}/describe` → `{name,label,labelPlural,keyPrefix,fields:[{name,label,type,length,nillable,createable,updateable,externalId,unique,defaultedOnCreate,picklistValues,referenceTo,…}]}` |
//! | `salesforce.sobject_get` | `GET /sobjects/{S}/{id}[?fields=a,b]`, `GET /sobjects/{S}/Conduit_Id__c/{value}` |
//! | `salesforce.sobject_create` | `POST /sobjects/{S}` → 201 `{id,success:true,errors:[]}` |
//! | `salesforce.sobject_update` | `PATCH /sobjects/{S}/{id}` → 204 |
//! | `salesforce.sobject_upsert` | `PATCH /sobjects/{S}/Conduit_Id__c/{value}` → 201 (created) or 200 `{id,success,errors,created}` |
//! | `salesforce.sobject_delete` | `DELETE /sobjects/{S}/{id}` → 204; deleted → 404 `ENTITY_IS_DELETED`; unknown → 404 `NOT_FOUND` |
//! | `salesforce.deleted` | `GET /sobjects/{S}/deleted/?start=&end=` → `{deletedRecords:[{id,deletedDate}],earliestDateAvailable,latestDateCovered}` |
//! | `salesforce.updated` | `GET /sobjects/{S}/updated/?start=&end=` → `{ids,latestDateCovered}` |
//! | `salesforce.composite_create` | `POST /composite/sobjects` `{allOrNone, records:[{attributes:{type}, …}]}` → 200 `[{id,success,errors}]` |
//! | `salesforce.composite_update` | `PATCH /composite/sobjects` (records carry `Id`) |
//! | `salesforce.composite_upsert` | `PATCH /composite/sobjects/{S}/Conduit_Id__c` (results add `created`) |
//! | `salesforce.composite_delete` | `DELETE /composite/sobjects?ids=a,b&allOrNone=false` |
//! | `salesforce.composite_retrieve` | `GET /composite/sobjects/{S}?ids=&fields=` (or `POST` `{ids,fields}`) → array, null for missing |
//! | `salesforce.limits` | `GET /limits` → `{DailyApiRequests:{Max,Remaining},…}` (not counted) |
//!
//! SOQL: `SELECT f, … | COUNT() FROM Contact|Account [WHERE …] [ORDER BY f [ASC|DESC]
//! [NULLS FIRST|LAST], …] [LIMIT n] [OFFSET n]`; conditions `field = != <> < <= > >=
//! literal`, `[NOT] IN (…)`, `LIKE`, `NOT`, parentheses (mixing `AND`/`OR` needs them, as
//! in Salesforce); literals typed per field (quoted text and ids, numbers,
//! `true`/`false`/`null`, dates, date-times with `Z`/`+0000`/`+01:00`). Errors: 400
//! `MALFORMED_QUERY`, `INVALID_FIELD`, `INVALID_TYPE` with Salesforce's caret message.
//! Without `ORDER BY` rows come in `Id` (creation) order; ties always break by `Id`. Pages
//! hold 2,000 records, or `Sforce-Query-Options: batchSize=N` (clamped to 200–2000);
//! cursors are snapshots taken when the query ran, expire after 15 idle minutes (50 open
//! per org, least recently used dropped first, or [`SandboxState::expire_salesforce_query_locators`]).
//!
//! Writes check each record: unknown field `INVALID_FIELD`, read-only field
//! `INVALID_FIELD_FOR_INSERT_UPDATE`, required field `REQUIRED_FIELD_MISSING`, email
//! `INVALID_EMAIL_ADDRESS`, text length `STRING_TOO_LONG`, `AccountId`
//! `FIELD_INTEGRITY_EXCEPTION` / `INVALID_CROSS_REFERENCE_KEY` / `ENTITY_IS_DELETED`,
//! duplicate `Conduit_Id__c` (case-insensitive) `DUPLICATE_VALUE`; picklists are
//! unrestricted. Single-record routes answer 400 `[{message,errorCode,fields}]`;
//! collections report `{success:false,errors:[{statusCode,message,fields}]}` per record
//! (over 200 records: 400 `EXCEEDED_ID_LIMIT`; `allOrNone: true` rolls back every change
//! on any failure, the others reporting `ALL_OR_NONE_OPERATION_ROLLED_BACK`). A value of
//! the wrong JSON type (`"many"` for an int, a non-ISO date) fails the whole request: 400
//! `JSON_PARSER_ERROR`.
//!
//! `/deleted` and `/updated` take ISO 8601 `start`/`end` with a zone (`+00:00`, `Z`;
//! seconds are honoured, unlike Salesforce); `latestDateCovered` is `end` capped at now,
//! so it is the next window's `start`. `start` after `end`, or before
//! `earliestDateAvailable` (15 days back; older tombstones are purged): 400
//! `INVALID_REPLICATION_DATE`; missing: 400 `MISSING_ARGUMENT`.
//!
//! Every data call counts against the org's daily allowance (100,000 per 24 h, see
//! [`SandboxState::set_salesforce_api_limit`]) and answers with `Sforce-Limit-Info:
//! api-usage=N/MAX`; past it: 403 `[{"message":"TotalRequests Limit
//! exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]`. Forced faults and latency apply
//! as to any route (Salesforce error bodies, e.g. 503 `SERVER_UNAVAILABLE`), and so does
//! [`SandboxState::malform_salesforce_responses`].
//!
//! # Zendesk Help Center (knowledge-base import)
//! [`providers::zendesk_hc`] serves a help centre per Zendesk subdomain at
//! `/{sub}.zendesk.com/api/v2/help_center/…`, with the Support stand-in's credentials (API
//! token, or OAuth with `read`/`hc:read`): the incremental article export
//! (`zendesk.hc_incremental_articles`, `incremental/articles?start_time=`: 1,000 a page,
//! `next_page`/`end_time`, resumable from `end_time` without gaps or repeats), articles by
//! locale or not with offset or cursor pagination (`zendesk.hc_articles`), one article
//! (`zendesk.hc_article`), sections, categories and locales (`zendesk.hc_sections`,
//! `zendesk.hc_categories`, `zendesk.hc_locales`), a per-subdomain per-minute budget (429
//! `text/plain` with `Retry-After`). Content comes from
//! [`SandboxState::seed_help_center`] ([`HelpCenterSeed`]: thousands of articles in
//! categories and sections, translations, drafts, labels, HTML bodies, optionally one over
//! 400 KB and one hostile) and changes through `SandboxState::hc_*` (update, draft,
//! archive, restore, add, rate limit, 429 storm, clock).
//!
//! # Freshdesk Solutions (knowledge-base import)
//! [`providers::freshdesk_kb`] serves a knowledge base per Freshdesk subdomain at
//! `/{sub}.freshdesk.com/api/v2/…` with the Freshdesk credentials (Basic `{api_key}:X`): the
//! helpdesk's languages (`freshdesk.settings_helpdesk`), categories, a category's folders and
//! a folder's articles, each optionally in a `{language_code}` (`freshdesk.solution_*`; bare
//! arrays, `per_page` ≤ 100, the `Link: <…?page=N+1>; rel="next"` header), Freshdesk's
//! language errors (`require_feature`, `language_not_allowed`), the "View solutions" privilege
//! and a per-helpdesk per-minute budget (`X-RateLimit-*`, 429 with `Retry-After`). Content
//! comes from [`SandboxState::seed_solutions`] ([`SolutionsSeed`]) and changes through
//! `SandboxState::fd_*` (update, delete, add, rate limit, 429 storm, privilege).
//!
//! # Dynamics 365 knowledge articles (knowledge-base import)
//! [`providers::dynamics365_kb`] serves Dataverse's `knowledgearticles` (and
//! `knowledgearticles({id})`, `languagelocale`) per environment at
//! `/{org}.{crm_region}.dynamics.com/api/data/v9.2/…` to a bearer token for that environment:
//! the OData subset an importer needs (`$select`, `$filter`, `$orderby`, `$top`, `$count`,
//! `$expand=languagelocaleid($select=code)`), `Prefer: odata.maxpagesize` paging with a
//! keyset `$skiptoken` in `@odata.nextLink`, Dataverse's error bodies, and the per-user
//! service-protection request limit (429 `0x80072322` with `Retry-After`). Content comes from
//! [`SandboxState::seed_dynamics_kb`] ([`DynKbSeed`]: roots, versions, translations, drafts,
//! archived versions) and changes through `SandboxState::dyn_kb_*` and `dyn_throttle_next`.
//!
//! # Custom API knowledge base
//! [`providers::custom_kb`] serves one seeded article list under every custom account's base
//! path (`/custom.example/api/kb/{page,offset,cursor,link}`), one pagination style and one
//! JSON shape each (escaped JSON Pointer keys included), with `updated_since`, the custom
//! API's credentials and a per-minute limit. Content from [`SandboxState::seed_custom_kb`]
//! ([`CustomKbSeed`]), changes through `SandboxState::custom_kb_*`.
//!
//! # OAuth 2.0 stand-ins
//! Authorization code grant (RFC 6749) with PKCE (RFC 7636, `S256` or `plain`) and
//! revocation (RFC 7009) for nine providers, sharing one grant engine ([`oauth`]). The
//! authorize endpoint auto-approves: it answers `302` to
//! `redirect_uri?code=…&state=…` (keeping the URI's own query), as the `login_hint` user
//! if known, else the provider's default user. Codes are single use, live 10 minutes
//! and are bound to the client, `redirect_uri` (repeated exactly at the token endpoint),
//! scopes, PKCE challenge and user. Unknown `client_id` or a bad `redirect_uri`: a 400
//! HTML page, no redirect. `sandbox_decision=deny` (or the deny knob): redirect with
//! `error=access_denied`. Every issued code and token is random (≥ 32 random characters
//! for tokens) and never reused.
//!
//! | Provider id | Authorize (`GET`) | Token (`POST`) | Client auth |
//! |---|---|---|---|
//! | `hubspot` | `app.hubspot.com/oauth/authorize` | `api.hubapi.com/oauth/v1/token` | body (Basic too) |
//! | `salesforce` | `{login,test}.salesforce.com/services/oauth2/authorize` | `…/services/oauth2/token` | body (Basic too) |
//! | `zoho` | `accounts.zoho.{com,eu,in,com.au,jp,com.cn}/oauth/v2/auth` | `accounts.zoho.{dc}/oauth/v2/token` | body (Basic too) |
//! | `pipedrive` | `oauth.pipedrive.com/oauth/authorize` | `oauth.pipedrive.com/oauth/token` | **Basic only** |
//! | `dynamics365` | `login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize` | `…/oauth2/v2.0/token` | body (Basic too) |
//! | `google` | `accounts.google.com/o/oauth2/v2/auth` | `oauth2.googleapis.com/token` | body (Basic too) |
//! | `zendesk` | `{sub}.zendesk.com/oauth/authorizations/new` | `{sub}.zendesk.com/oauth/tokens` (form or JSON) | body (Basic too) |
//! | `genesys` | `login.{region}/oauth/authorize` | `login.{region}/oauth/token` | **Basic only** |
//! | `custom_oauth` | `oauth.custom.example/authorize` | `oauth.custom.example/token` | Basic or body, not both |
//!
//! Token responses, per provider (`expires_in` follows [`SandboxState::set_token_ttl`]):
//! - HubSpot `{token_type:"bearer", access_token, refresh_token, expires_in:1800, hub_id,
//!   user_id, scopes, token_use}`; refresh returns the same refresh token.
//! - Salesforce `{access_token, refresh_token (code grant only), signature, scope,
//!   instance_url, id, token_type:"Bearer", issued_at}`, never `expires_in` (sessions
//!   still end after the TTL, 7200 s by default). A refresh token needs scope
//!   `refresh_token` or `offline_access` (no scope: `api refresh_token`).
//! - Zoho `{access_token, refresh_token (code grant with access_type=offline only),
//!   scope, api_domain:"https://www.zohoapis.{dc}", token_type:"Bearer", expires_in:3600}`.
//!   The redirect adds `location` and `accounts-server`: the grant lives in the *user's*
//!   data centre and works only there. Errors are HTTP 200 `{"error":"invalid_code"}`
//!   (also `invalid_client`, `invalid_client_secret`).
//! - Pipedrive `{access_token, token_type:"Bearer", refresh_token, scope (comma-separated),
//!   expires_in:3599, api_domain:"https://{company}.pipedrive.com"}`.
//! - Google `{access_token, expires_in:3599, refresh_token (code exchange after
//!   access_type=offline only), scope, token_type:"Bearer", id_token (with openid;
//!   unsigned JWT)}`; `email`/`profile` are granted as their long scope URLs.
//! - Microsoft `{token_type:"Bearer", scope (without offline_access), expires_in:3599,
//!   ext_expires_in, access_token, refresh_token (with offline_access), id_token (with
//!   openid)}`; each refresh hands out a new refresh token and the old one stays valid.
//! - Zendesk `{access_token, token_type:"bearer", scope, refresh_token, expires_in,
//!   refresh_token_expires_in}`; request `expires_in`/`refresh_token_expires_in` are
//!   honoured; a refresh invalidates the grant's earlier access tokens.
//! - Genesys `{access_token, token_type:"bearer", expires_in:86399, refresh_token}`.
//! - custom `{access_token, token_type:"Bearer", expires_in:3600, refresh_token, scope}`.
//!
//! Token errors: RFC 6749 `{"error","error_description"}` (400; 401 for
//! `invalid_client`) with provider flavour: HubSpot 400 `{"status":"BAD_AUTH_CODE" |
//! "EXPIRED_AUTH_CODE" | "BAD_REDIRECT_URI" | "BAD_REFRESH_TOKEN" | "BAD_CLIENT_ID" |
//! "BAD_GRANT_TYPE","message","correlationId"}` (no `error` member); Salesforce 400 even
//! for client errors (`invalid_client_id`, `invalid_client`); Zoho HTTP 200; Pipedrive
//! `{"success":false,"message","error"}`; Microsoft adds `error_codes` (AADSTS numbers),
//! `trace_id`, `correlation_id`, `timestamp`, `error_uri`; Genesys adds `description`.
//!
//! Refresh-token rotation is on only for `custom_oauth` by default: each refresh returns
//! a new refresh token and retires the old; presenting a retired one answers
//! `invalid_grant` and revokes the whole grant (so a double refresh destroys the
//! connection). Off, the same refresh token keeps working.
//!
//! | Route name | Request |
//! |---|---|
//! | `hubspot.oauth_revoke` | `DELETE api.hubapi.com/oauth/v1/refresh-tokens/{refresh_token}` → 204, revokes the grant |
//! | `hubspot.oauth_introspect` | `GET api.hubapi.com/oauth/v1/access-tokens/{token}`, `GET …/refresh-tokens/{token}` (404 when dead) |
//! | `hubspot.account_info` | `GET api.hubapi.com/account-info/v3/details` also takes OAuth bearer tokens (401 `EXPIRED_AUTHENTICATION` / `INVALID_AUTHENTICATION`) |
//! | `salesforce.oauth_revoke` | `POST {login}/services/oauth2/revoke` form `token=` → 200, revokes the grant; unknown → 400 `invalid_token` |
//! | `salesforce.oauth_introspect` | `POST {login}/services/oauth2/introspect` form `token`, client creds → `{active,scope,client_id,username,sub,token_type,exp,iat,nbf}` or `{active:false}` |
//! | `salesforce.userinfo` | `GET {instance or login}/services/oauth2/userinfo`, `GET {login}/id/{org}/{user}` — Bearer (401 `Bad_OAuth_Token`) |
//! | `salesforce.data` | `GET {instance}/services/data[/vNN.N/]` — Bearer; 401 `[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]` (records: see "Salesforce REST data") |
//! | `zoho.oauth_revoke` | `POST accounts.zoho.{dc}/oauth/v2/token/revoke?token=…` → 200 `{"status":"success"}` |
//! | `zoho.userinfo` | `GET www.zohoapis.{dc}/crm/v2/users?type=CurrentUser` — `Authorization: Zoho-oauthtoken …`; 401 `INVALID_TOKEN` |
//! | `pipedrive.oauth_revoke` | `POST oauth.pipedrive.com/oauth/revoke` (Basic; form `token`, `token_type_hint`) → 200; a refresh token revokes the grant |
//! | `pipedrive.users_me` | `GET {company}.pipedrive.com[/api]/v1/users/me` — Bearer (or the API token as before) |
//! | `dynamics365.userinfo` | `GET {org}.{crm_region}.dynamics.com/api/data/v9.2/WhoAmI` — Bearer for that environment; 401 empty body + `WWW-Authenticate` |
//! | `google.oauth_revoke` | `POST oauth2.googleapis.com/revoke` form `token=` → 200 `{}`; unknown or dead → 400 `invalid_token` |
//! | `google.oauth_introspect` | `GET oauth2.googleapis.com/tokeninfo?access_token=…` |
//! | `google.userinfo` | `GET openidconnect.googleapis.com/v1/userinfo` — Bearer → `{sub,email,email_verified,name…}` |
//! | `zendesk.oauth_revoke` | `DELETE {sub}.zendesk.com/api/v2/oauth/tokens/current.json` — Bearer → 204 |
//! | `zendesk.users_me` | `GET {sub}.zendesk.com/api/v2/users/me.json` also takes OAuth bearer tokens |
//! | `genesys.userinfo` | `GET api.{region}/api/v2/users/me` — Bearer → `{id,name,email,…}` |
//! | `genesys.oauth_revoke` | `DELETE api.{region}/api/v2/tokens/me` — Bearer → 204 |
//! | `custom_oauth.oauth_revoke` | `POST oauth.custom.example/revoke` (client auth; RFC 7009, 200 even for unknown tokens) |
//! | `custom_oauth.oauth_introspect` | `POST oauth.custom.example/introspect` (client auth; RFC 7662) |
//! | `custom_oauth.userinfo` | `GET oauth.custom.example/userinfo` — Bearer → `{sub,email,name}` |
//!
//! | `google.gmail_send`, `google.gmail_profile` | `POST gmail.googleapis.com/gmail/v1/users/me/messages/send` `{raw}`, `GET …/users/me/profile` ([`providers::google_api`]) |
//! | `google.calendar_events_{list,insert,get,patch,delete}` | `www.googleapis.com/calendar/v3/calendars/{primary}/events[/{eventId}]` ([`providers::google_api`]) |
//!
//! # Scopes
//! Every OAuth stand-in grants only scopes its provider knows and the app (client) is
//! configured with, refusing others its provider's way (HubSpot, Google and Zoho: an
//! error page; the others: a redirect with `error=invalid_scope`; Pipedrive grants the
//! app's set whatever was asked). HubSpot's `optional_scope` members are granted when
//! the app has them; Google's `include_granted_scopes=true` adds the user's live grants to
//! the same client. Protected endpoints check the token's scopes and answer with the
//! provider's own missing-scope error (HubSpot 403 `MISSING_SCOPES`, Salesforce 401
//! "This session is not valid for use with the REST API", Google 403
//! `ACCESS_TOKEN_SCOPE_INSUFFICIENT`, Zoho 401 `OAUTH_SCOPE_MISMATCH`, Pipedrive 403
//! "Scope and URL mismatch", Dataverse 401 for another audience, Zendesk 403
//! `Forbidden`, Genesys 403, custom RFC 6750 `insufficient_scope`). `sandbox/README.md`
//! has the table per endpoint and what each stand-in does not reproduce.
//!
//! Authorize and token endpoints count as `{provider}.oauth_authorize` and
//! `{provider}.oauth_token`. Access tokens die at their TTL, when their grant is revoked,
//! or by [`SandboxState::expire_access_tokens`]; every protected endpoint then answers
//! its provider's 401.
//!
//! # Default accounts
//! Every fresh sandbox (and every reset) holds these, so the README's curl demo works:
//! - Zendesk: subdomain `acme`, email `admin@acme.test`, API token `zd-sandbox-token-0001`
//!   (user id 123).
//! - Freshdesk: subdomain `acme`, API key `fd-sandbox-key-0001` (agent `agent@acme.test`).
//! - Pipedrive: API token `pd-sandbox-token-0001`, company domain `acme`.
//! - HubSpot: private app token `pat-na1-sandbox-0001` (portal 62515, 110 requests per
//!   rolling 10 s, 250,000 per day; scopes `oauth` and read/write of the objects and
//!   schemas of contacts, companies and deals, [`oauth::hubspot_crm_scopes`]).
//! - Chatwoot: API access token `cw-sandbox-token-0001` at host `app.chatwoot.com`
//!   (Chatwoot account 1, "Acme").
//! - Custom API at `custom.example/api`: bearer `custom-sandbox-token-0001`, header
//!   `X-Api-Key: custom-sandbox-key-0001`, or Basic `custom-user` / `custom-pass-0001`.
//!
//! OAuth clients: for each provider id `{p}` above, client id `{p}-sandbox-client-id`
//! with secret `{p}-sandbox-client-secret` (e.g. `hubspot-sandbox-client-id`). Any
//! `redirect_uri` is accepted. OAuth users (the first of each provider is its default):
//! - HubSpot `admin@acme.test` "Acme Admin", user id 4711001, hub_id 62515, hub_domain
//!   `acme.hubspot.com`.
//! - Salesforce `admin@acme.test`, user `005Dn00000AcmeUAAA`, org `00DDn00000AcmeOEAA`,
//!   instance `https://acme.my.salesforce.com`.
//! - Zoho, one per data centre: `admin@acme.test` (`com`, user 4876876000000225013),
//!   `admin.eu@acme.test` (`eu`), `admin.in@acme.test`, `admin.au@acme.test` (`com.au`),
//!   `admin.jp@acme.test`, `admin.cn@acme.test` (`com.cn`).
//! - Pipedrive `sales@acme.test` "Acme Sales", user 10000001, company 5000001 `acme`
//!   (the API-token account's identity).
//! - Microsoft `admin@acme.test`, UserId `7d4a9f52-2f6b-4c3e-9b1a-0c1d2e3f4a51`,
//!   OrganizationId `1f0d4b8e-6c2a-4e8f-8a3b-5d6e7f809a12`, environment
//!   `acme.crm.dynamics.com`.
//! - Google `admin@acme.test`, sub `109876543210987654321`.
//! - Zendesk `admin@acme.test`, user id 123 at subdomain `acme`.
//! - Genesys `admin@acme.test`, id `3c9e1c52-8f4a-4b6d-a2e1-5f7b9d0c1e23`, region
//!   `mypurecloud.com`.
//! - custom `ops@custom.example` "Custom Sandbox", sub `custom-user-1`.
//!
//! # Control routes
//! The knobs of [`SandboxState`] are also served as JSON:
//! - `GET /_sandbox/health`
//! - `GET /_sandbox/accounts`, `POST /_sandbox/accounts` with an [`Account`] as JSON, e.g.
//!   `{"provider":"zendesk","subdomain":"globex","email":"a@globex.test","api_token":"t"}`
//! - `GET /_sandbox/calls` → `{"total":N,"routes":{"zendesk.users_me":N,…}}`
//! - `GET /_sandbox/faults`; `POST /_sandbox/faults` with
//!   `{"status":503,"count":2,"provider":"zendesk","retry_after_secs":1}` (a `"route"`,
//!   such as `"pipedrive.recents"`, limits the status to one route) and/or
//!   `{"latency_ms":250,"provider":"hubspot"}` (provider optional); `DELETE` clears them
//! - `POST /_sandbox/reset`: back to the seeded accounts, OAuth clients and users, zero
//!   counters, no faults, no grants, default OAuth knobs (no app scope sets, nothing
//!   withheld), no CRM records (HubSpot or Salesforce), no Gmail messages or Calendar
//!   events.
//!
//! OAuth knobs (each also a [`SandboxState`] method):
//! - `GET|POST /_sandbox/oauth/clients` — an [`OAuthClient`]:
//!   `{"provider":"hubspot","client_id":"app-2","client_secret":"s"}` (listing has no
//!   secrets).
//! - `GET|POST /_sandbox/oauth/users` — an [`OAuthUser`]:
//!   `{"provider":"hubspot","email":"b@globex.test","hub_id":777}`; answers the user with
//!   defaults filled in.
//! - `GET /_sandbox/oauth/settings`; `POST` `{"provider":"hubspot","token_ttl_secs":60,
//!   "rotation":true}` (or `token_ttl_ms`).
//! - `POST /_sandbox/oauth/token_faults` `{"provider":"google","status":503,"count":2}` or
//!   `{"provider":"hubspot","error":"invalid_grant"}`: the next token requests of that
//!   provider get it (429/503 with `Retry-After: 1`).
//! - `POST /_sandbox/oauth/deny` `{"provider":"google","count":1}`.
//! - `POST /_sandbox/oauth/revoke_user` `{"provider":"hubspot","email":"admin@acme.test"}`.
//! - `POST /_sandbox/oauth/expire_access_tokens` `{"provider":"hubspot"}`.
//! - `POST /_sandbox/oauth/grants` `{"provider":"hubspot","client_id":"…","email":null,
//!   "scopes":["oauth"]}` seeds a grant → a [`SeededGrant`]; `GET
//!   /_sandbox/oauth/grants?provider=hubspot&email=…` lists [`OAuthGrantView`]s;
//!   `POST /_sandbox/oauth/grants/lookup` `{"token":"…"}` finds the grant of any token.
//! - `POST /_sandbox/oauth/client_scopes` `{"provider","client_id","scopes":[…]|null}`:
//!   the app's configured scopes ([`SandboxState::set_oauth_client_scopes`]).
//! - `POST /_sandbox/oauth/withhold_scopes` `{"provider","scopes":[…]}`: partial consent
//!   for new authorizations ([`SandboxState::withhold_scopes`]).
//! - `POST /_sandbox/oauth/narrow` `{"provider","token"|"grant_id"|"email"(+"client_id"),
//!   "keep"?,"remove"?}`: an admin narrowed the app; the grants' tokens lose the scopes at
//!   once ([`SandboxState::narrow_grants`]).
//! - `POST /_sandbox/hubspot/private_app_scopes` `{"portal"?,"scopes":[…]}`
//!   ([`SandboxState::set_hubspot_private_app_scopes`]).
//!
//! HubSpot CRM knobs (each also a [`SandboxState`] method; `portal` defaults to 62515):
//! - `POST /_sandbox/hubspot/seed` `{"object":"contacts","count":100000,"portal":62515}`
//!   → `{"ids":[…]}` ([`SandboxState::seed_hubspot`]; realistic, deterministic values for
//!   every built-in writable property, unique contact emails; 100,000 records take well
//!   under a second).
//! - [`SandboxState::hubspot_define_property`] `(portal, object, name, unique)` defines a
//!   custom text property (no control route: use `POST /crm/v3/properties/{object}`).
//! - `GET /_sandbox/hubspot/records?object=contacts[&portal=…][&id=…]` → every record,
//!   archived too ([`SandboxState::hubspot_records`], [`SandboxState::hubspot_record`]).
//! - `POST /_sandbox/hubspot/update` `{"object","id","properties":{…}}`: a change as a
//!   HubSpot user would make it, bumping `updatedAt`
//!   ([`SandboxState::update_hubspot_record`]).
//! - `POST /_sandbox/hubspot/archive` `{"object","id"}`
//!   ([`SandboxState::archive_hubspot_record`]).
//! - `POST /_sandbox/hubspot/malformed` `{"route":"hubspot.crm_list","count":2}`: the next
//!   responses of that CRM route carry truncated JSON with their usual status
//!   ([`SandboxState::malform_hubspot_responses`]).
//! - `POST /_sandbox/reset` also empties every portal.
//!
//! Salesforce knobs (each also a [`SandboxState`] method; `org` defaults to
//! [`DEFAULT_SALESFORCE_ORG`], `object` is `Contact` or `Account`):
//! - `POST /_sandbox/salesforce/seed` `{"object":"Contact","count":100000,"org":"…"}` →
//!   `{"ids":[…]}` ([`SandboxState::seed_salesforce`]; realistic values, contacts spread
//!   over the org's accounts; 100,000 records take well under a second or two).
//! - `GET /_sandbox/salesforce/records?object=Contact[&org=…][&id=…]` → live records
//!   ([`SandboxState::salesforce_records`]) or one, deleted too
//!   ([`SandboxState::salesforce_record`]), as [`SfRecord`]s.
//! - `POST /_sandbox/salesforce/update` `{"object","id","fields":{…}}`: a change as a
//!   Salesforce user would make it, bumping the stamps
//!   ([`SandboxState::update_salesforce_record`]; 400 when nothing was changed).
//! - `POST /_sandbox/salesforce/delete` `{"object","id"}` → `{"deleted":bool}`
//!   ([`SandboxState::delete_salesforce_record`]; leaves a tombstone for `/deleted`).
//! - `GET|POST /_sandbox/salesforce/limit` `{"max":N}` → `{"org","max","used"}`
//!   ([`SandboxState::set_salesforce_api_limit`], [`SandboxState::salesforce_api_usage`]).
//! - `POST /_sandbox/salesforce/malformed` `{"route":"salesforce.query","count":1}`
//!   ([`SandboxState::malform_salesforce_responses`]).
//! - `POST /_sandbox/reset` also empties every org and restores default allowances.
//!
//! Each provider request is counted, then delayed by the configured latency, then answered
//! with a pending forced status (in the provider's own error body) or by the route. Paths
//! a provider does not serve get its 404 and leave pending faults untouched.
//!
//! ```text
//! curl -u 'admin@acme.test/token:zd-sandbox-token-0001' \
//!   http://127.0.0.1:9100/acme.zendesk.com/api/v2/users/me.json
//!
//! # OAuth: authorize (read the code off the Location header), then exchange it.
//! curl -si 'http://127.0.0.1:9100/app.hubspot.com/oauth/authorize?client_id=hubspot-sandbox-client-id&redirect_uri=https://app.test/cb&scope=oauth&state=xyz' | grep -i location
//! curl -s http://127.0.0.1:9100/api.hubapi.com/oauth/v1/token \
//!   -d grant_type=authorization_code -d code=CODE -d redirect_uri=https://app.test/cb \
//!   -d client_id=hubspot-sandbox-client-id -d client_secret=hubspot-sandbox-client-secret
//! ```
//!
//! # Dispatch actions and the webhook receiver (issue 13)
//! [`actions`] serves every endpoint the integration templates call, strictly, with a
//! per-provider record of what arrived ([`SandboxState::dispatch_requests`],
//! `GET /_sandbox/dispatch/{provider}/requests`), the records created
//! ([`SandboxState::dispatch_records`]) and fault knobs ([`ActionFault`]: 5xx, 429,
//! timeout, fail-after-effect, dropped connection). [`webhooks`] is a Standard Webhooks
//! receiver (`POST /_sandbox/webhooks` registers one and answers its URL).
//! `sandbox/DISPATCH_STANDINS.md` lists the routes, the control API and, per endpoint,
//! what is not reproduced.
//!
//! # Recording (contract tests)
//! [`SandboxState::recorder`] records every provider exchange (not the control routes)
//! while started: method, host, path, decoded query, header names, content types, both
//! bodies and the status ([`record::Exchange`]), for checking against the providers'
//! published specs. Off by default; `reset` leaves it as it is.
//!
//! The server never logs credentials, codes, tokens, query strings or request bodies.

#![warn(missing_docs)]

pub mod actions;
mod admin;
mod clock;
pub mod oauth;
pub mod providers;
pub mod ratelimit;
pub mod record;
pub mod state;
pub mod webhooks;
mod wire;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use actions::{ActionFault, ActionFaultKind, FaultKnob, Received, StoredRecord};
pub use oauth::{
    GrantSelector, OAuthClient, OAuthClientView, OAuthError, OAuthFault, OAuthGrantView,
    OAuthProvider, OAuthSettingsView, OAuthUser, SeededGrant, default_oauth_clients,
    default_oauth_users,
};
pub use providers::custom_kb::{
    CustomKbArticle, CustomKbChange, CustomKbSeed, CustomKbSummary, KbStyle,
};
pub use providers::dynamics365_crm::{DynAttribute, DynCrmLimits, DynLimit, DynRecord, DynTable};
pub use providers::dynamics365_kb::{
    DynKbArticle, DynKbChange, DynKbLanguage, DynKbSeed, DynKbSummary, DynKbVersion,
};
pub use providers::freshdesk_kb::{
    FdArticle, FdArticleChange, FdNewArticle, FdTranslation, SolutionsSeed, SolutionsSummary,
};
pub use providers::hubspot_crm::{CrmObject, CrmRecord};
pub use providers::pipedrive_crm::{PdLimits, PdObject, PdRecord};
pub use providers::salesforce_crm::{
    DEFAULT_SALESFORCE_ORG, KbArticle as SfKbArticle, KbChange as SfKbChange, KnowledgeSeed,
    KnowledgeSummary, SfApiUsage, SfBulkUsage, SfObject, SfRecord,
};
pub use providers::zendesk_hc::{
    HcArticle, HcArticleChange, HcNewArticle, HcTranslation, HelpCenterSeed, HelpCenterSummary,
};
pub use record::{Exchange, Recorder};
pub use state::{
    Account, AccountError, AccountView, CallsView, Fault, FaultError, FaultsView, Provider,
    ProviderAccount, SandboxState, Secret, default_accounts,
};
pub use webhooks::{Delivery, ReceiverView};

/// How long [`Sandbox::shutdown`] waits for in-flight requests before aborting.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running sandbox server; stops when shut down or dropped.
#[derive(Debug)]
pub struct Sandbox {
    addr: SocketAddr,
    state: SandboxState,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Sandbox {
    /// Binds 127.0.0.1:`port` (0 = a free port) and serves with the default accounts.
    pub async fn start(port: u16) -> io::Result<Sandbox> {
        Self::start_with_state(port, SandboxState::new()).await
    }

    /// Binds 127.0.0.1:`port` (0 = a free port) and serves `state`.
    pub async fn start_with_state(port: u16, state: SandboxState) -> io::Result<Sandbox> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
        let addr = listener.local_addr()?;
        let app = router(state.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let deliveries = tokio::spawn(providers::hubspot_webhooks::deliver_forever(state.clone()));
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    // A dropped sender also means stop.
                    let _ = stopped.await;
                })
                .await;
            deliveries.abort();
            if let Err(error) = served {
                tracing::error!(%error, "sandbox server failed");
            }
        });
        Ok(Sandbox {
            addr,
            state,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle to the shared state (accounts, counters, fault knobs).
    pub fn state(&self) -> SandboxState {
        self.state.clone()
    }

    /// Stops accepting, lets in-flight requests finish (up to 5 s), then returns.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The sandbox's routes over `state`: `/_sandbox/…` control routes, and every other path
/// dispatched by its first segment (the provider host). Usable to embed the sandbox.
pub fn router(state: SandboxState) -> Router {
    // Gmail takes messages up to 35 MiB (a `raw` form inflated by base64 a third more),
    // and a Salesforce Bulk API 2.0 upload up to 150 MB once base64-encoded (about
    // 112 MiB as sent): axum's 2 MB default would refuse what the providers accept.
    admin::routes()
        .fallback(provider_request)
        .layer(axum::extract::DefaultBodyLimit::max(160 * 1024 * 1024))
        .with_state(state)
}

async fn provider_request(
    State(state): State<SandboxState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let recorder = state.recorder().clone();
    recorder
        .around(
            method,
            uri,
            headers,
            body,
            |method, uri, headers, body| async move {
                match providers::ProviderRequest::new(method, &uri, headers, body) {
                    Some(request) => providers::dispatch(&state, request).await,
                    None => {
                        state.record_call(state::UNKNOWN_HOST_ROUTE);
                        providers::unknown_host("")
                    }
                }
            },
        )
        .await
}
