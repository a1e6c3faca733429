//! A recording of the provider exchanges the sandbox serves, for contract tests: each
//! request (method, provider host, path, decoded query, header names, content type, body)
//! with its answer (status, content type, body), in arrival order.
//!
//! Off by default, so demos and benchmarks buffer nothing; [`Recorder::start`] turns it
//! on. `/_sandbox/…` control routes are never recorded. Query values and bodies carry
//! credentials (tokens, client secrets, codes), so an [`Exchange`]'s `Debug` shows only
//! the method, host, path, status and sizes, and header values are not kept at all.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::Response;

/// The most of one response body the recorder buffers (a CRM page is well under this).
const MAX_RECORDED_BODY: usize = 64 * 1024 * 1024;

/// One provider request and the sandbox's answer to it.
#[derive(Clone, PartialEq, Eq)]
pub struct Exchange {
    /// HTTP method, upper case.
    pub method: String,
    /// The provider host (the URL's first path segment), lower case.
    pub host: String,
    /// The provider path, starting with `/`, still percent-encoded.
    pub path: String,
    /// The query as decoded pairs, in order (repeated names repeat).
    pub query: Vec<(String, String)>,
    /// Request header names, lower case, in order (values are never kept).
    pub header_names: Vec<String>,
    /// The request's `content-type`, if any.
    pub content_type: Option<String>,
    /// The request body.
    pub request_body: Bytes,
    /// The response status.
    pub status: u16,
    /// The response's `content-type`, if any.
    pub response_content_type: Option<String>,
    /// The response body.
    pub response_body: Bytes,
}

impl Exchange {
    /// `METHOD host/path`, for messages (no query: it may hold credentials).
    pub fn summary(&self) -> String {
        format!("{} {}{}", self.method, self.host, self.path)
    }
}

impl fmt::Debug for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exchange")
            .field("method", &self.method)
            .field("host", &self.host)
            .field("path", &self.path)
            .field("query_pairs", &self.query.len())
            .field("request_bytes", &self.request_body.len())
            .field("status", &self.status)
            .field("response_bytes", &self.response_body.len())
            .finish_non_exhaustive()
    }
}

/// The shared recording: `None` while off.
#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<Option<Vec<Exchange>>>>);

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("on", &self.is_on())
            .finish_non_exhaustive()
    }
}

impl Recorder {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Vec<Exchange>>> {
        // A test double: a panic elsewhere must not stop the recording.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts recording (dropping anything recorded before).
    pub fn start(&self) {
        *self.lock() = Some(Vec::new());
    }

    /// Stops recording; returns what was recorded.
    pub fn stop(&self) -> Vec<Exchange> {
        self.lock().take().unwrap_or_default()
    }

    /// What was recorded so far (recording goes on).
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.lock().clone().unwrap_or_default()
    }

    /// Whether exchanges are being recorded.
    pub fn is_on(&self) -> bool {
        self.lock().is_some()
    }

    fn push(&self, exchange: Exchange) {
        if let Some(list) = self.lock().as_mut() {
            list.push(exchange);
        }
    }

    /// Serves one provider request through `serve`, recording it and its answer when on.
    pub(crate) async fn around<F, Fut>(
        &self,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
        serve: F,
    ) -> Response
    where
        F: FnOnce(Method, Uri, HeaderMap, Bytes) -> Fut,
        Fut: Future<Output = Response>,
    {
        if !self.is_on() {
            return serve(method, uri, headers, body).await;
        }
        let rest = uri.path().strip_prefix('/').unwrap_or_default();
        let (host, path) = match rest.split_once('/') {
            Some((host, path)) => (host.to_ascii_lowercase(), format!("/{path}")),
            None => (rest.to_ascii_lowercase(), "/".to_owned()),
        };
        let query = uri
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        let header_names = headers.keys().map(|k| k.as_str().to_owned()).collect();
        let request_type = content_type(&headers);
        let request_body = body.clone();
        let response = serve(method.clone(), uri, headers, body).await;
        let (parts, response_body) = response.into_parts();
        // Bodies here are in-memory buffers; a failure to collect one leaves it empty.
        let response_body = axum::body::to_bytes(response_body, MAX_RECORDED_BODY)
            .await
            .unwrap_or_default();
        self.push(Exchange {
            method: method.as_str().to_owned(),
            host,
            path,
            query,
            header_names,
            content_type: request_type,
            request_body,
            status: parts.status.as_u16(),
            response_content_type: content_type(&parts.headers),
            response_body: response_body.clone(),
        });
        Response::from_parts(parts, Body::from(response_body))
    }
}

fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn answer(status: StatusCode, body: &'static str) -> Response {
        let mut r = Response::new(Body::from(body));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            "application/json".parse().expect("header"),
        );
        r
    }

    #[tokio::test]
    async fn records_only_while_on_and_keeps_the_answer_intact() {
        let rec = Recorder::default();
        let uri: Uri = "/API.hubapi.com/crm/v3/objects/contacts?limit=2&properties=a%2Cb"
            .parse()
            .expect("uri");
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "Bearer secret".parse().expect("h"));
        let off = rec
            .around(
                Method::GET,
                uri.clone(),
                headers.clone(),
                Bytes::new(),
                |_, _, _, _| async { answer(StatusCode::OK, "{}") },
            )
            .await;
        assert_eq!(off.status(), StatusCode::OK);
        assert!(rec.exchanges().is_empty(), "nothing is recorded while off");

        rec.start();
        let on = rec
            .around(
                Method::GET,
                uri,
                headers,
                Bytes::from_static(b"x"),
                |_, _, _, _| async { answer(StatusCode::CREATED, r#"{"a":1}"#) },
            )
            .await;
        assert_eq!(on.status(), StatusCode::CREATED);
        let body = axum::body::to_bytes(on.into_body(), 1024)
            .await
            .expect("body");
        assert_eq!(&body[..], br#"{"a":1}"#, "the client still gets the body");
        let got = rec.stop();
        assert_eq!(got.len(), 1);
        let e = &got[0];
        assert_eq!(e.summary(), "GET api.hubapi.com/crm/v3/objects/contacts");
        assert_eq!(
            e.query,
            vec![
                ("limit".into(), "2".into()),
                ("properties".into(), "a,b".into())
            ]
        );
        assert_eq!(e.header_names, vec!["authorization".to_owned()]);
        assert_eq!(e.status, 201);
        assert_eq!(e.response_content_type.as_deref(), Some("application/json"));
        assert!(
            !format!("{e:?}").contains("secret"),
            "Debug shows no values"
        );
        assert!(!rec.is_on());
    }
}
