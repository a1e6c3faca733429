//! What every knowledge-base source shares: the [`Source`] an import reads page by page,
//! the errors a source answers with, and the HTTP reading through a connection
//! ([`Http`]) that every source uses — the token lifecycle (a 401 refreshes once), a slot
//! of the connection's shared rate budget per request (with sync and dispatch), a 429
//! holding the whole budget off for its `Retry-After` (sat out inline a few times, then
//! handed back to the worker as [`SourceError::Later`]), 5xx and transport failures as
//! `Later`, and `Link: <…>; rel="next"` read from the answer (followed only on the
//! connection's own origin, so a source cannot send its credentials elsewhere).

use std::time::Duration;

use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::document::Article;
use super::import::Mode;
use crate::oauth::lifecycle::{Credentials, TokenError, Tokens};
use crate::sync::budget::{Budget, BudgetError};

/// Why a source request failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The connection cannot be used (needs a reconnect, switched off…).
    #[error("the connection cannot be used: {0}")]
    Connection(#[from] TokenError),
    /// The provider refused (a 4xx other than 429): not worth retrying as is.
    #[error("{provider} answered {status}: {message}")]
    Refused {
        /// The provider.
        provider: &'static str,
        /// The HTTP status.
        status: u16,
        /// What it said (its error code), never a credential.
        message: String,
    },
    /// Rate limited, unavailable, or unreachable: retry after `wait`.
    #[error("the source is unavailable or limiting; retry in {wait:?}")]
    Later {
        /// How long to wait.
        wait: Duration,
    },
    /// The answer does not have the documented shape (or a setting of the source does
    /// not fit what it answers).
    #[error("the source's answer does not have the expected shape: {0}")]
    Malformed(String),
}

/// Where a source's listing stands: the source's own JSON, kept in the run's
/// checkpoint between steps, and — at the end of a run — where the next incremental run
/// starts (the source keeps its watermark in it).
pub type Cursor = Value;

/// A document the source reports gone (archived, unpublished for good, deleted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gone {
    /// The source's id of the article.
    pub external_id: String,
    /// The locale of the version gone (`None`: the source has no locales).
    pub locale: Option<String>,
}

/// One page of a source's listing.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// Articles (one per translation) to store.
    pub articles: Vec<Article>,
    /// Documents the source says are gone.
    pub gone: Vec<Gone>,
    /// Where the listing goes on from (or, on the last page, where the next run starts).
    pub next: Cursor,
    /// Whether this was the last page.
    pub last: bool,
}

/// A knowledge-base source, read page by page from a cursor.
#[allow(async_fn_in_trait)] // used with concrete types inside the crate only
pub trait Source {
    /// The provider (`zendesk`, …): documents' `source`.
    fn provider(&self) -> &'static str;
    /// Whether every run lists every article (the source has no changes-since
    /// listing): then every run, not only a full one, sweeps what it did not see.
    fn lists_everything(&self) -> bool;
    /// The cursor a run starts from: the beginning for a full run, for an incremental
    /// one `since` (the cursor the last run ended with; `null` before any).
    fn start(mode: Mode, since: &Cursor) -> Cursor
    where
        Self: Sized;
    /// Reads what every page needs (sections, languages…), once per worker step.
    async fn prepare(&mut self) -> Result<(), SourceError> {
        Ok(())
    }
    /// The page at `cursor`.
    async fn page(&mut self, cursor: &Cursor) -> Result<Page, SourceError>;
}

/// 429s sat out inline (each holding the whole budget off) before giving up for now.
const RATE_LIMIT_RETRIES: u32 = 3;
/// The longest `Retry-After` waited inline.
const MAX_INLINE_WAIT: Duration = Duration::from_secs(30);
/// The largest answer read (a page of help-centre articles with their bodies).
const MAX_ANSWER: usize = 48 * 1024 * 1024;

/// An answer: its JSON and where its `Link` header says the next page is.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The body.
    pub body: Value,
    /// `Link: <…>; rel="next"`, when on the connection's origin.
    pub next_link: Option<String>,
}

/// HTTP reads through one connection under its rate budget.
pub struct Http<'a> {
    tokens: &'a Tokens<'a>,
    creds: Credentials,
    budget: &'a mut Budget,
    provider: &'static str,
    timeout: Duration,
}

impl<'a> Http<'a> {
    /// Reads through `creds` (from [`Tokens::credentials`]), taking slots of `budget`;
    /// `provider` names the source in errors and metrics.
    pub fn new(
        tokens: &'a Tokens<'a>,
        creds: Credentials,
        budget: &'a mut Budget,
        provider: &'static str,
    ) -> Self {
        Self {
            tokens,
            creds,
            budget,
            provider,
            timeout: Duration::from_secs(30),
        }
    }

    /// The provider.
    pub fn provider(&self) -> &'static str {
        self.provider
    }

    /// A setting of the connection that is not a secret (a subdomain, an org).
    pub fn setting(&self, name: &str) -> Option<&str> {
        self.creds.fields.public.get(name).map(String::as_str)
    }

    /// GET `path_and_query` on the connection's API base.
    pub async fn get(
        &mut self,
        path_and_query: &str,
        headers: &[(&'static str, &str)],
    ) -> Result<Answer, SourceError> {
        self.fetch(Target::Path(path_and_query), headers).await
    }

    /// GET `path_and_query` on the API base's origin (a path the source gave).
    pub async fn get_on_origin(
        &mut self,
        path_and_query: &str,
        headers: &[(&'static str, &str)],
    ) -> Result<Answer, SourceError> {
        self.fetch(Target::OriginPath(path_and_query), headers)
            .await
    }

    /// GET an absolute URL (a `Link` or `nextLink` the source gave), only on the
    /// connection's own origin.
    pub async fn get_url(
        &mut self,
        url: &str,
        headers: &[(&'static str, &str)],
    ) -> Result<Answer, SourceError> {
        self.fetch(Target::Url(url), headers).await
    }

    async fn fetch(
        &mut self,
        target: Target<'_>,
        headers: &[(&'static str, &str)],
    ) -> Result<Answer, SourceError> {
        let mut limited = 0;
        loop {
            match self.budget.acquire().await {
                Ok(()) => {}
                Err(BudgetError::Exhausted(wait)) => return Err(SourceError::Later { wait }),
                Err(e) => {
                    tracing::warn!(error = %e, "the rate budget could not be taken");
                    return Err(SourceError::Later {
                        wait: Duration::from_secs(1),
                    });
                }
            }
            let timeout = self.timeout;
            let resp = self
                .tokens
                .send_using(&mut self.creds, |connector, http| {
                    let base = connector.api_base().map_err(|e| e.to_string())?;
                    let url = match target {
                        Target::Path(p) => format!("{}{p}", base.trim_end_matches('/')),
                        Target::OriginPath(p) => match url::Url::parse(&base) {
                            Ok(b) => format!("{}{p}", b.origin().ascii_serialization()),
                            Err(_) => return Err(format!("{OFF_ORIGIN}: no API base")),
                        },
                        Target::Url(u) => {
                            let u = crate::egress::rewrite_origin(u, connector.origin_override);
                            if !same_origin(&u, &base) {
                                return Err(OFF_ORIGIN.into());
                            }
                            u
                        }
                    };
                    let mut req = http
                        .get(url)
                        .timeout(timeout)
                        .header(reqwest::header::ACCEPT, "application/json");
                    for (name, value) in headers {
                        req = req.header(*name, *value);
                    }
                    Ok(req)
                })
                .await;
            let resp = match resp {
                Ok(r) => r,
                Err(TokenError::Unavailable(_)) => {
                    return Err(SourceError::Later {
                        wait: Duration::from_secs(5),
                    });
                }
                Err(TokenError::Internal(why)) if why.starts_with(OFF_ORIGIN) => {
                    return Err(SourceError::Malformed(why));
                }
                Err(e) => return Err(SourceError::Connection(e)),
            };
            let status = resp.status().as_u16();
            let retry_after = crate::egress::retry_after(resp.headers());
            if status == 429 {
                crate::metrics::count(
                    crate::metrics::Metric::ProviderRateLimited,
                    self.provider,
                    None,
                );
                let wait = retry_after.unwrap_or(Duration::from_secs(10));
                let _ = self.budget.hold_off(wait).await;
                limited += 1;
                if limited <= RATE_LIMIT_RETRIES && wait <= MAX_INLINE_WAIT {
                    tokio::time::sleep(wait).await;
                    continue;
                }
                return Err(SourceError::Later { wait });
            }
            let next_link = next_link(resp.headers());
            let later = SourceError::Later {
                wait: Duration::from_secs(5),
            };
            let bytes = match read_limited(resp).await {
                Ok(b) => b,
                Err(ReadError::Transport) => return Err(later),
                Err(ReadError::TooLarge) => {
                    return Err(SourceError::Malformed(format!(
                        "an answer over {} MiB",
                        MAX_ANSWER / (1024 * 1024)
                    )));
                }
            };
            if status >= 500 {
                return Err(SourceError::Later {
                    wait: retry_after.unwrap_or(Duration::from_secs(5)),
                });
            }
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            if !(200..300).contains(&status) {
                return Err(SourceError::Refused {
                    provider: self.provider,
                    status,
                    message: error_code(&body),
                });
            }
            if body.is_null() {
                return Err(SourceError::Malformed("not JSON".into()));
            }
            return Ok(Answer { body, next_link });
        }
    }
}

/// What a build refused: a next page off the connection's origin.
const OFF_ORIGIN: &str = "the next page is not on the connection's origin";

#[derive(Clone, Copy)]
enum Target<'u> {
    /// Under the API base.
    Path(&'u str),
    /// On the API base's origin (Salesforce's `nextRecordsUrl`).
    OriginPath(&'u str),
    /// Absolute, on the API base's origin.
    Url(&'u str),
}

enum ReadError {
    Transport,
    TooLarge,
}

async fn read_limited(mut resp: reqwest::Response) -> Result<Vec<u8>, ReadError> {
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if out.len() + chunk.len() > MAX_ANSWER {
                    return Err(ReadError::TooLarge);
                }
                out.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(out),
            Err(_) => return Err(ReadError::Transport),
        }
    }
}

/// Whether `url` has the scheme, host and port of `base`.
fn same_origin(url: &str, base: &str) -> bool {
    match (url::Url::parse(url), url::Url::parse(base)) {
        (Ok(u), Ok(b)) => u.origin() == b.origin(),
        _ => false,
    }
}

/// The target of `Link: <…>; rel="next"` (RFC 8288), if any.
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    for value in headers.get_all(reqwest::header::LINK) {
        let Ok(value) = value.to_str() else { continue };
        for part in value.split(',') {
            let Some((target, params)) = part.trim().split_once(';') else {
                continue;
            };
            let target = target.trim();
            let Some(target) = target.strip_prefix('<').and_then(|t| t.strip_suffix('>')) else {
                continue;
            };
            let next = params.split(';').any(|p| {
                let p = p.trim();
                p.split_once('=').is_some_and(|(k, v)| {
                    k.trim().eq_ignore_ascii_case("rel")
                        && v.trim()
                            .trim_matches('"')
                            .split_ascii_whitespace()
                            .any(|r| r.eq_ignore_ascii_case("next"))
                })
            });
            if next {
                return Some(target.to_owned());
            }
        }
    }
    None
}

/// A short error code from a provider's error body: Zendesk's `{"error":…}` or
/// `{"errors":[{code}]}`, Freshdesk's `{"code"}`, Salesforce's `[{"errorCode"}]`,
/// Dataverse's `{"error":{"code"}}`, or a Custom API's `{"message"}`.
pub fn error_code(body: &Value) -> String {
    let code = body["error"]
        .as_str()
        .or_else(|| body["error"]["title"].as_str())
        .or_else(|| body["error"]["code"].as_str())
        .or_else(|| body["errors"][0]["code"].as_str())
        .or_else(|| body[0]["errorCode"].as_str())
        .or_else(|| body["code"].as_str())
        .or_else(|| body["message"].as_str())
        .unwrap_or("error");
    code.chars().filter(|c| !c.is_control()).take(100).collect()
}

/// The cursor a source with a time watermark starts from: `base` with `since` (where
/// this run's window starts: the last run's newest time for an incremental run, none
/// for a full one) and `max` (the newest time seen so far, which the next run starts
/// from).
pub(crate) fn watermarked(mode: Mode, since: &Cursor, mut base: Value) -> Cursor {
    let last = since["max"].clone();
    base["since"] = if mode == Mode::Incremental {
        last.clone()
    } else {
        Value::Null
    };
    base["max"] = last;
    base
}

/// The later of two times, either possibly unknown.
pub(crate) fn later(
    a: Option<time::OffsetDateTime>,
    b: Option<time::OffsetDateTime>,
) -> Option<time::OffsetDateTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// A string member, if it is one.
pub(crate) fn text(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

/// An RFC 3339 time member, if it is one.
pub(crate) fn time_of(v: &Value) -> Option<time::OffsetDateTime> {
    v.as_str().and_then(|s| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
    })
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderValue, LINK};
    use serde_json::json;

    use super::*;

    #[test]
    fn the_next_link_is_read_from_any_link_header() {
        let mut h = HeaderMap::new();
        h.append(
            LINK,
            HeaderValue::from_static(
                r#"<https://a.test/x?page=1>; rel="prev", <https://a.test/x?page=3>; rel="next""#,
            ),
        );
        assert_eq!(next_link(&h).as_deref(), Some("https://a.test/x?page=3"));
        let mut h = HeaderMap::new();
        h.append(
            LINK,
            HeaderValue::from_static("<https://a.test/y>; rel=next"),
        );
        assert_eq!(next_link(&h).as_deref(), Some("https://a.test/y"));
        let mut h = HeaderMap::new();
        h.append(
            LINK,
            HeaderValue::from_static(r#"<https://a.test/z>; rel="last""#),
        );
        assert_eq!(next_link(&h), None);
        assert_eq!(next_link(&HeaderMap::new()), None);
    }

    #[test]
    fn only_the_connections_origin_is_followed() {
        let base = "https://acme.example.com/api/v2";
        assert!(same_origin(
            "https://acme.example.com/api/v2/x?page=2",
            base
        ));
        assert!(same_origin("https://acme.example.com/other", base));
        assert!(!same_origin("https://evil.test/api/v2", base));
        assert!(!same_origin("http://acme.example.com/api/v2", base));
        assert!(!same_origin("https://acme.example.com:8443/api/v2", base));
        assert!(!same_origin("not a url", base));
    }

    #[test]
    fn error_codes_of_each_providers_shape() {
        for (body, code) in [
            (json!({"error": "RecordNotFound"}), "RecordNotFound"),
            (
                json!({"errors": [{"code": "InvalidPaginationDepth"}]}),
                "InvalidPaginationDepth",
            ),
            (
                json!({"code": "invalid_credentials", "message": "x"}),
                "invalid_credentials",
            ),
            (
                json!([{"errorCode": "MALFORMED_QUERY", "message": "m"}]),
                "MALFORMED_QUERY",
            ),
            (
                json!({"error": {"code": "0x80060888", "message": "m"}}),
                "0x80060888",
            ),
            (json!({"message": "bad\ncursor"}), "badcursor"),
            (json!(null), "error"),
        ] {
            assert_eq!(error_code(&body), code);
        }
    }
}
