//! `POST $batch`: OData multipart batches with change sets, run against one environment.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

use super::super::ProviderRequest;
use super::super::dynamics365_kb::split_path;
use super::{
    Answer, Body, CrmEnv, CrmRoute, Ctx, DynTable, MAX_BATCH_REQUESTS, Prefer, error, execute,
    match_segment, syntax,
};
use crate::wire;

/// One HTTP request inside a batch.
#[derive(Debug)]
struct Part {
    method: Method,
    url: String,
    headers: HeaderMap,
    body: String,
    content_id: Option<String>,
}

/// A batch item: a lone request or a change set.
#[derive(Debug)]
enum Item {
    Single(Part),
    ChangeSet(Vec<Part>),
}

/// The `boundary` of a `multipart/mixed` content type.
fn boundary(content_type: &str) -> Option<String> {
    let mut pieces = content_type.split(';');
    let kind = pieces.next()?.trim();
    if !kind.eq_ignore_ascii_case("multipart/mixed") {
        return None;
    }
    pieces.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// The parts between `--boundary` delimiters (text normalised to `\n`).
fn split_parts<'a>(body: &'a str, boundary: &str) -> Option<Vec<&'a str>> {
    let delim = format!("--{boundary}");
    let mut parts = Vec::new();
    let start = body.find(&delim)?;
    let mut rest = &body[start + delim.len()..];
    loop {
        if rest.starts_with("--") {
            return Some(parts);
        }
        let line_end = rest.find('\n')?;
        rest = &rest[line_end + 1..];
        let next = rest.find(&format!("\n{delim}"))?;
        parts.push(&rest[..next]);
        rest = &rest[next + 1 + delim.len()..];
    }
}

/// `(headers, content)` of a MIME part or HTTP message.
fn split_head(text: &str) -> (Vec<(String, String)>, &str) {
    let (head, content) = text.split_once("\n\n").unwrap_or((text, ""));
    let headers = head
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        })
        .collect();
    (headers, content)
}

fn find<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// An `application/http` part: request line, headers, body.
fn parse_request(text: &str, content_id: Option<String>) -> Option<Part> {
    let text = text.trim_start_matches('\n');
    let (line, rest) = text.split_once('\n').unwrap_or((text, ""));
    let mut words = line.split_whitespace();
    let method = Method::from_bytes(words.next()?.as_bytes()).ok()?;
    let url = words.next()?.to_owned();
    let (head, body) = split_head(rest);
    let mut headers = HeaderMap::new();
    for (k, v) in head {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(&v),
        ) {
            headers.append(k, v);
        }
    }
    Some(Part {
        method,
        url,
        headers,
        body: body.trim_end_matches('\n').to_owned(),
        content_id,
    })
}

/// Parses a whole batch body.
fn parse(body: &str, boundary: &str) -> Result<Vec<Item>, Answer> {
    let malformed = || syntax("The batch request body is not a valid multipart/mixed message.");
    let mut items = Vec::new();
    for part in split_parts(body, boundary).ok_or_else(malformed)? {
        let (headers, content) = split_head(part);
        let content_type = find(&headers, "content-type").unwrap_or_default();
        if let Some(inner) = boundary_of_changeset(content_type) {
            let mut requests = Vec::new();
            for sub in split_parts(content, &inner).ok_or_else(malformed)? {
                let (sub_headers, sub_content) = split_head(sub);
                let content_id = find(&sub_headers, "content-id").map(str::to_owned);
                let request = parse_request(sub_content, content_id).ok_or_else(malformed)?;
                if request.method == Method::GET {
                    return Err(syntax(
                        "A GET request cannot be part of a change set; send it outside the change set.",
                    ));
                }
                requests.push(request);
            }
            items.push(Item::ChangeSet(requests));
        } else if content_type
            .split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/http"))
        {
            items.push(Item::Single(
                parse_request(content, None).ok_or_else(malformed)?,
            ));
        } else {
            return Err(malformed());
        }
    }
    Ok(items)
}

fn boundary_of_changeset(content_type: &str) -> Option<String> {
    boundary(content_type)
}

/// Dataverse's 400 for a `$n` that no earlier request of the change set declared.
pub(super) fn unknown_reference(reference: &str) -> Answer {
    let name = reference.split('/').next().unwrap_or(reference);
    syntax(&format!(
        "Content-ID Reference: '{name}' does not exist in the batch context."
    ))
}

/// The path and query of a part's URL, `$n` references resolved (`Err`: an unknown one).
fn resolve_url(
    url: &str,
    host: &str,
    prefix: &str,
    refs: &BTreeMap<String, (DynTable, String)>,
) -> Result<(String, Option<String>), Answer> {
    let (url, query) = match url.split_once('?') {
        Some((u, q)) => (u, Some(q.to_owned())),
        None => (url, None),
    };
    let path = if let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    {
        let (h, p) = rest.split_once('/').unwrap_or((rest, ""));
        if h.eq_ignore_ascii_case(host) {
            format!("/{p}")
        } else {
            // Another host: never matches a route.
            format!("/unknown-host/{p}")
        }
    } else if url.starts_with('/') {
        url.to_owned()
    } else if let Some(reference) = url.strip_prefix('$') {
        let (n, tail) = reference.split_once('/').unwrap_or((reference, ""));
        match refs.get(&format!("${n}")) {
            Some((table, id)) => {
                let tail = if tail.is_empty() {
                    String::new()
                } else {
                    format!("/{tail}")
                };
                format!("{prefix}/{}({id}){tail}", table.set_name())
            }
            None => return Err(unknown_reference(url)),
        }
    } else {
        format!("{prefix}/{url}")
    };
    Ok((path, query))
}

/// Runs one part; the created row (for `Content-ID` references) if it created one.
fn run_part(
    env: &mut CrmEnv,
    ctx: &Ctx,
    host: &str,
    prefix: &str,
    part: &Part,
    refs: &BTreeMap<String, (DynTable, String)>,
) -> (Answer, Option<(DynTable, String)>) {
    let (path, query) = match resolve_url(&part.url, host, prefix, refs) {
        Ok(resolved) => resolved,
        Err(answer) => return (answer, None),
    };
    let route = split_path(&path).and_then(|(_, segment)| match_segment(&part.method, segment));
    let Some(route) = route else {
        return (
            error(
                StatusCode::NOT_FOUND,
                "0x8006088a",
                "Resource not found for the segment.",
            ),
            None,
        );
    };
    if route == CrmRoute::Batch {
        return (
            syntax("A batch request cannot contain another batch request."),
            None,
        );
    }
    let req = ProviderRequest {
        method: part.method.clone(),
        host: host.to_owned(),
        path,
        query,
        headers: part.headers.clone(),
        body: Bytes::from(part.body.clone()),
    };
    let before = env.version;
    let answer = execute(env, ctx, route, &req, refs);
    let created = match route {
        // The row written: from `OData-EntityId`, or the key of a returned representation.
        CrmRoute::Create(table) | CrmRoute::Update(table) if !answer.is_error() => answer
            .headers
            .iter()
            .find(|(k, _)| *k == "OData-EntityId")
            .and_then(|(_, v)| {
                v.rsplit_once('(')
                    .map(|(_, id)| id.trim_end_matches(')').to_owned())
            })
            .or_else(|| match &answer.body {
                Body::Json(value) => value
                    .get(table.key())
                    .and_then(|v| v.as_str())
                    .map(str::to_owned),
                _ => None,
            })
            .filter(|_| env.version > before)
            .map(|id| (table, id)),
        _ => None,
    };
    (answer, created)
}

/// An answer as an `application/http` part body.
fn http_part(out: &mut String, answer: &Answer, content_id: Option<&str>) {
    out.push_str("Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n");
    if let Some(id) = content_id {
        let _ = write!(out, "Content-ID: {id}\r\n");
    }
    let _ = write!(
        out,
        "\r\nHTTP/1.1 {} {}\r\n",
        answer.status.as_u16(),
        answer.status.canonical_reason().unwrap_or("")
    );
    out.push_str("OData-Version: 4.0\r\n");
    for (k, v) in &answer.headers {
        if *k == "OData-EntityId" {
            // Batch parts carry the new row's URL twice, as Dataverse's do.
            let _ = write!(out, "Location: {v}\r\n");
        }
        let _ = write!(out, "{k}: {v}\r\n");
    }
    match &answer.body {
        Body::Empty => out.push_str("\r\n\r\n"),
        Body::Json(value) => {
            let _ = write!(
                out,
                "Content-Type: application/json; odata.metadata=minimal\r\n\r\n{value}\r\n"
            );
        }
        Body::Raw(content_type, text) => {
            let _ = write!(out, "Content-Type: {content_type}\r\n\r\n{text}\r\n");
        }
    }
}

/// Runs a `$batch`; answers it and the number of operations run.
pub(super) fn run(env: &mut CrmEnv, ctx: &Ctx, req: &ProviderRequest) -> (Answer, u64) {
    let content_type = wire::header(&req.headers, "content-type").unwrap_or_default();
    let Some(outer) = boundary(content_type) else {
        return (
            syntax(
                "The batch request must have a Content-Type header of multipart/mixed with a boundary.",
            ),
            1,
        );
    };
    let Ok(text) = std::str::from_utf8(&req.body) else {
        return (syntax("The batch request body is not valid UTF-8."), 1);
    };
    let text = text.replace("\r\n", "\n");
    let items = match parse(&text, &outer) {
        Ok(items) => items,
        Err(answer) => return (answer, 1),
    };
    let total: usize = items
        .iter()
        .map(|i| match i {
            Item::Single(_) => 1,
            Item::ChangeSet(parts) => parts.len(),
        })
        .sum();
    if total > MAX_BATCH_REQUESTS {
        // Sandbox wording; the limit is Microsoft's.
        return (
            error(
                StatusCode::BAD_REQUEST,
                "0x8004b600",
                &format!(
                    "The number of requests in the batch ({total}) exceeds the maximum of {MAX_BATCH_REQUESTS}."
                ),
            ),
            1,
        );
    }
    let prefer = Prefer::parse(&req.headers);
    let host = req.host.clone();
    let prefix = split_path(&req.path)
        .map_or("/api/data/v9.2", |(p, _)| p)
        .to_owned();
    let response_boundary = format!(
        "batchresponse_{}",
        super::super::dynamics365_kb::guid(env.salt, env.version as u64)
    );
    let mut out = String::new();
    let mut operations = 0u64;
    // Without `odata.continue-on-error`, the batch answers with its first failure's status.
    let mut stopped = None;
    let no_refs = BTreeMap::new();
    for (n, item) in items.iter().enumerate() {
        match item {
            Item::Single(part) => {
                operations += 1;
                let (answer, _) = run_part(env, ctx, &host, &prefix, part, &no_refs);
                let _ = write!(out, "--{response_boundary}\r\n");
                http_part(&mut out, &answer, None);
                if answer.is_error() && !prefer.continue_on_error {
                    stopped = Some(answer.status);
                    break;
                }
            }
            Item::ChangeSet(parts) => {
                let version_before = env.version;
                env.journal = Some(Vec::new());
                let mut refs = BTreeMap::new();
                let mut answers = Vec::new();
                let mut failed = None;
                for part in parts {
                    operations += 1;
                    let (answer, created) = run_part(env, ctx, &host, &prefix, part, &refs);
                    if answer.is_error() {
                        failed = Some((answer, part.content_id.clone()));
                        break;
                    }
                    if let (Some(cid), Some(created)) = (&part.content_id, created) {
                        refs.insert(format!("${cid}"), created);
                    }
                    answers.push((answer, part.content_id.clone()));
                }
                let journal = env.journal.take().unwrap_or_default();
                let _ = write!(out, "--{response_boundary}\r\n");
                if let Some((answer, content_id)) = failed {
                    env.rollback(journal, version_before);
                    http_part(&mut out, &answer, content_id.as_deref());
                    if !prefer.continue_on_error {
                        stopped = Some(answer.status);
                        break;
                    }
                } else {
                    let cs = format!(
                        "changesetresponse_{}",
                        super::super::dynamics365_kb::guid(env.salt ^ 0xC5, n as u64)
                    );
                    let _ = write!(out, "Content-Type: multipart/mixed; boundary={cs}\r\n\r\n");
                    for (answer, content_id) in &answers {
                        let _ = write!(out, "--{cs}\r\n");
                        http_part(&mut out, answer, content_id.as_deref());
                    }
                    let _ = write!(out, "--{cs}--\r\n");
                }
            }
        }
    }
    let _ = write!(out, "--{response_boundary}--\r\n");
    let answer = Answer {
        status: stopped.unwrap_or(StatusCode::OK),
        headers: Vec::new(),
        body: Body::Raw(
            format!("multipart/mixed; boundary={response_boundary}"),
            out,
        ),
    };
    (answer, operations.max(1))
}
