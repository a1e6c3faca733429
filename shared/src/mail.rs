//! Mail as Conduit writes it: a draft (to, cc, bcc, reply-to, subject, text and/or
//! HTML, attachments, thread reply) checked against every limit, then built into one
//! MIME message with `mail-builder` (RFC 5322 headers, encoded words for non-ASCII,
//! multipart/alternative for text and HTML, multipart/mixed with attachments). Used by
//! `POST /v1/me/gmail/send` and by the `gmail.send_summary` dispatch step.
//!
//! Limits: at most 100 recipients (to, cc and bcc together); the subject 998
//! characters; text and HTML bodies 1 MiB each; at most 10 attachments, 3 MiB decoded
//! in all, file names 255 characters. A CR or LF in any header value (an address, a
//! name, the subject, a file name or content type, a message id) is 400
//! `header_injection`; an invalid address 400 `invalid_fields` naming it — checked
//! before anything is built, so nothing is sent.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use serde::Deserialize;

use crate::http::ApiError;
use crate::providers::FieldError;

/// The largest send request (JSON, attachments base64 inside).
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;
/// Recipients of one message (to, cc and bcc together).
pub const MAX_RECIPIENTS: usize = 100;
/// Attachments of one message.
pub const MAX_ATTACHMENTS: usize = 10;
/// Their decoded bytes together.
pub const MAX_ATTACHMENT_BYTES: usize = 3 * 1024 * 1024;
/// A text or HTML body.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// RFC 5322's line limit, for the subject.
pub const MAX_SUBJECT_CHARS: usize = 998;

/// A message to send (the body of `POST /v1/me/gmail/send`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Draft {
    to: Vec<String>,
    #[serde(default)]
    cc: Vec<String>,
    #[serde(default)]
    bcc: Vec<String>,
    #[serde(default)]
    reply_to: Option<String>,
    subject: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    html: Option<String>,
    #[serde(default)]
    attachments: Vec<Attachment>,
    /// Reply in this Gmail thread.
    #[serde(default)]
    thread_id: Option<String>,
    /// The Message-ID replied to (with or without angle brackets).
    #[serde(default)]
    in_reply_to: Option<String>,
    /// The thread's Message-IDs, oldest first.
    #[serde(default)]
    references: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Attachment {
    filename: String,
    content_type: String,
    /// The file, base64 (standard alphabet, padded).
    content: String,
}

/// An address as given: `someone@example.com` or `Name <someone@example.com>`.
struct Mailbox {
    name: Option<String>,
    email: String,
}

impl Mailbox {
    fn address(&self) -> Address<'static> {
        Address::new_address(self.name.clone(), self.email.clone())
    }
}

/// Problems with a send body, each naming its field and never its value.
#[derive(Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }
}

/// Refuses a header value carrying a line break (header injection): nothing is sent.
fn no_line_breaks(field: &str, value: &str) -> Result<(), ApiError> {
    if value.contains(['\r', '\n']) {
        return Err(ApiError::bad_request(
            "header_injection",
            format!("{field}: a header value may not hold a line break"),
        ));
    }
    Ok(())
}

/// Whether `email` is a plain `local@domain` address (the dot-atom forms mail
/// systems take; quoted local parts and IP literals are not accepted).
fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.rsplit_once('@') else {
        return false;
    };
    let atom = |s: &str, extra: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && !s.ends_with('.')
            && !s.contains("..")
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || extra.contains(c))
    };
    email.len() <= 254
        && local.len() <= 64
        && atom(local, "!#$%&'*+/=?^_`{|}~-")
        && atom(domain, "-")
        && domain.contains('.')
        && domain
            .split('.')
            .all(|label| !label.starts_with('-') && !label.ends_with('-') && label.len() <= 63)
}

/// Parses `someone@example.com` or `Name <someone@example.com>`.
fn mailbox(field: &str, raw: &str, p: &mut Problems) -> Result<Option<Mailbox>, ApiError> {
    no_line_breaks(field, raw)?;
    let raw = raw.trim();
    let (name, email) = match (raw.rfind('<'), raw.ends_with('>')) {
        (Some(open), true) => {
            let name = raw[..open].trim().trim_matches('"').trim();
            (
                (!name.is_empty()).then(|| name.to_owned()),
                &raw[open + 1..raw.len() - 1],
            )
        }
        _ => (None, raw),
    };
    if name
        .as_deref()
        .is_some_and(|n| n.chars().count() > 200 || n.chars().any(char::is_control))
    {
        p.add(
            field,
            "the display name is over 200 characters or holds control characters",
        );
        return Ok(None);
    }
    if !valid_email(email) {
        p.add(
            field,
            "not an email address (name@example.com, or Name <name@example.com>)",
        );
        return Ok(None);
    }
    Ok(Some(Mailbox {
        name,
        email: email.to_owned(),
    }))
}

fn mailboxes(field: &str, raw: &[String], p: &mut Problems) -> Result<Vec<Mailbox>, ApiError> {
    let mut out = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        if let Some(m) = mailbox(&format!("{field}[{i}]"), r, p)? {
            out.push(m);
        }
    }
    Ok(out)
}

/// A Message-ID without its angle brackets, checked.
fn message_id(field: &str, raw: &str, p: &mut Problems) -> Result<Option<String>, ApiError> {
    no_line_breaks(field, raw)?;
    let id = raw.trim().trim_start_matches('<').trim_end_matches('>');
    if id.is_empty()
        || id.len() > 250
        || !id.contains('@')
        || id
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
    {
        p.add(field, "not a Message-ID (<id@host>)");
        return Ok(None);
    }
    Ok(Some(id.to_owned()))
}

/// A send body checked against every limit and turned into the MIME message.
pub struct Outgoing {
    /// The message, RFC 5322.
    pub mime: Vec<u8>,
    /// The Gmail thread it replies in.
    pub thread_id: Option<String>,
    /// Its recipients (to, cc and bcc).
    pub recipients: usize,
    /// Its attachments.
    pub attachments: usize,
}

/// A draft that passed every check, ready to become MIME.
pub struct Checked {
    body: Draft,
    to: Vec<Mailbox>,
    cc: Vec<Mailbox>,
    bcc: Vec<Mailbox>,
    reply_to: Option<Mailbox>,
    files: Vec<Vec<u8>>,
    in_reply_to: Option<String>,
    references: Vec<String>,
    recipients: usize,
}

/// Checks `body` and builds its MIME message, `From` the given address.
pub fn build(body: Draft, from: Option<&str>) -> Result<Outgoing, ApiError> {
    check(body)?.mime(from)
}

/// Checks a send body against every limit (each problem named at once; a line break
/// in a header value refused first).
pub fn check(body: Draft) -> Result<Checked, ApiError> {
    let mut p = Problems::default();
    no_line_breaks("subject", &body.subject)?;
    let to = mailboxes("to", &body.to, &mut p)?;
    let cc = mailboxes("cc", &body.cc, &mut p)?;
    let bcc = mailboxes("bcc", &body.bcc, &mut p)?;
    let reply_to = match &body.reply_to {
        Some(r) => mailbox("reply_to", r, &mut p)?,
        None => None,
    };
    let recipients = body.to.len() + body.cc.len() + body.bcc.len();
    if body.to.is_empty() && body.cc.is_empty() && body.bcc.is_empty() {
        p.add("to", "at least one recipient (to, cc or bcc)");
    }
    if recipients > MAX_RECIPIENTS {
        p.add(
            "to",
            format!("at most {MAX_RECIPIENTS} recipients (to, cc and bcc together)"),
        );
    }
    if body.subject.chars().count() > MAX_SUBJECT_CHARS {
        p.add("subject", format!("at most {MAX_SUBJECT_CHARS} characters"));
    }
    if body.text.is_none() && body.html.is_none() {
        p.add("text", "a text or an HTML body (or both)");
    }
    for (field, value) in [("text", &body.text), ("html", &body.html)] {
        if value.as_ref().is_some_and(|v| v.len() > MAX_BODY_BYTES) {
            p.add(field, format!("at most {MAX_BODY_BYTES} bytes"));
        }
    }
    if body.attachments.len() > MAX_ATTACHMENTS {
        p.add(
            "attachments",
            format!("at most {MAX_ATTACHMENTS} attachments"),
        );
    }
    let mut files = Vec::with_capacity(body.attachments.len());
    let mut total = 0usize;
    for (i, a) in body.attachments.iter().enumerate() {
        let field = format!("attachments[{i}]");
        no_line_breaks(&format!("{field}.filename"), &a.filename)?;
        no_line_breaks(&format!("{field}.content_type"), &a.content_type)?;
        if a.filename.trim().is_empty()
            || a.filename.chars().count() > 255
            || a.filename
                .chars()
                .any(|c| c.is_control() || c == '/' || c == '\\')
        {
            p.add(
                format!("{field}.filename"),
                "1 to 255 characters, no path separators or control characters",
            );
        }
        if !valid_content_type(&a.content_type) {
            p.add(
                format!("{field}.content_type"),
                "a MIME type (type/subtype, e.g. application/pdf)",
            );
        }
        match STANDARD.decode(a.content.as_bytes()) {
            Ok(bytes) => {
                total += bytes.len();
                files.push(bytes);
            }
            Err(_) => {
                p.add(
                    format!("{field}.content"),
                    "not base64 (standard alphabet, padded)",
                );
                files.push(Vec::new());
            }
        }
    }
    if total > MAX_ATTACHMENT_BYTES {
        p.add(
            "attachments",
            format!("at most {MAX_ATTACHMENT_BYTES} bytes decoded in all"),
        );
    }
    let in_reply_to = match &body.in_reply_to {
        Some(r) => message_id("in_reply_to", r, &mut p)?,
        None => None,
    };
    let mut references = Vec::with_capacity(body.references.len());
    for (i, r) in body.references.iter().enumerate() {
        if let Some(id) = message_id(&format!("references[{i}]"), r, &mut p)? {
            references.push(id);
        }
    }
    if body.references.len() > 100 {
        p.add("references", "at most 100 Message-IDs");
    }
    if let Some(t) = &body.thread_id {
        no_line_breaks("thread_id", t)?;
        if t.is_empty() || t.len() > 64 || !t.chars().all(|c| c.is_ascii_alphanumeric()) {
            p.add("thread_id", "a Gmail thread id (letters and digits)");
        }
    }
    if !p.0.is_empty() {
        return Err(ApiError::invalid_fields(p.0));
    }
    Ok(Checked {
        body,
        to,
        cc,
        bcc,
        reply_to,
        files,
        in_reply_to,
        references,
        recipients,
    })
}

impl Checked {
    /// The MIME message, `From` the connected address when known.
    pub fn mime(self, from: Option<&str>) -> Result<Outgoing, ApiError> {
        let body = self.body;
        let mut m = MessageBuilder::new().subject(body.subject.clone());
        if let Some(from) = from {
            m = m.from(Address::new_address(None::<String>, from.to_owned()));
        }
        let list =
            |boxes: &[Mailbox]| Address::new_list(boxes.iter().map(Mailbox::address).collect());
        if !self.to.is_empty() {
            m = m.to(list(&self.to));
        }
        if !self.cc.is_empty() {
            m = m.cc(list(&self.cc));
        }
        if !self.bcc.is_empty() {
            m = m.bcc(list(&self.bcc));
        }
        if let Some(r) = &self.reply_to {
            m = m.reply_to(r.address());
        }
        if let Some(id) = self.in_reply_to {
            m = m.in_reply_to(id);
        }
        if !self.references.is_empty() {
            m = m.references(self.references);
        }
        if let Some(text) = body.text {
            m = m.text_body(text);
        }
        if let Some(html) = body.html {
            m = m.html_body(html);
        }
        let attachments = self.files.len();
        for (a, bytes) in body.attachments.into_iter().zip(self.files) {
            m = m.attachment(a.content_type, a.filename, bytes);
        }
        let mime = m.write_to_vec().map_err(ApiError::internal)?;
        Ok(Outgoing {
            mime,
            thread_id: body.thread_id,
            recipients: self.recipients,
            attachments,
        })
    }
}

/// `type/subtype` with RFC 2045 token characters, no parameters.
fn valid_content_type(value: &str) -> bool {
    let token = |s: &str| {
        !s.is_empty()
            && s.len() <= 127
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$&-^_.+".contains(c))
    };
    value
        .split_once('/')
        .is_some_and(|(t, s)| token(t) && token(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn body(v: Value) -> Draft {
        serde_json::from_value(v).expect("a send body")
    }

    #[test]
    fn addresses_are_plain_or_named_and_line_breaks_are_refused() {
        let mut p = Problems::default();
        let m = mailbox("to[0]", "Zoë Ü <zoe@example.com>", &mut p)
            .expect("no injection")
            .expect("valid");
        assert_eq!(m.name.as_deref(), Some("Zoë Ü"));
        assert_eq!(m.email, "zoe@example.com");
        for bad in [
            "nobody",
            "a@b",
            "a b@example.com",
            "a@@example.com",
            "a@-x.com",
            "<>",
        ] {
            let mut p = Problems::default();
            assert!(
                mailbox("to[0]", bad, &mut p)
                    .expect("no injection")
                    .is_none(),
                "{bad}"
            );
            assert_eq!(p.0.len(), 1, "{bad}");
        }
        for injected in [
            "a@example.com\r\nBcc: x@evil.test",
            "Name\n <a@example.com>",
        ] {
            let mut p = Problems::default();
            let e = mailbox("to[0]", injected, &mut p).err().expect("refused");
            assert_eq!(e.code(), "header_injection");
        }
    }

    #[test]
    fn a_message_with_non_ascii_html_and_an_attachment_is_mixed_and_alternative() {
        let out = build(
            body(json!({
                "to": ["Zoë <zoe@example.com>"], "cc": ["c@example.com"],
                "subject": "Résumé of the call — 通话摘要",
                "text": "Hello Zoë", "html": "<p>Hello Zoë</p>",
                "attachments": [{"filename": "notes.txt", "content_type": "text/plain",
                                 "content": STANDARD.encode("the notes")}],
                "in_reply_to": "<abc@mail.example.com>", "references": ["abc@mail.example.com"],
            })),
            Some("me@example.com"),
        )
        .expect("built");
        let text = String::from_utf8_lossy(&out.mime);
        let headers = text.split("\r\n\r\n").next().unwrap_or("");
        assert!(headers.contains("Subject: =?utf-8?"), "{headers}");
        assert!(
            !headers.contains("通话"),
            "non-ASCII is in encoded words: {headers}"
        );
        assert!(headers.contains("From: <me@example.com>"), "{headers}");
        assert!(
            headers.contains("In-Reply-To: <abc@mail.example.com>"),
            "{headers}"
        );
        assert!(headers.contains("multipart/mixed"), "{headers}");
        assert!(text.contains("multipart/alternative"), "{text}");
        assert!(text.contains("filename=\"notes.txt\""), "{text}");
        assert_eq!((out.recipients, out.attachments), (2, 1));
    }

    #[test]
    fn limits_and_bad_fields_are_named_and_nothing_is_built() {
        let many: Vec<String> = (0..101).map(|i| format!("r{i}@example.com")).collect();
        let e = build(body(json!({"to": many, "subject": "s", "text": "t"})), None)
            .err()
            .expect("refused");
        assert_eq!(e.code(), "invalid_fields");
        let e = build(body(json!({"to": [], "subject": "s"})), None)
            .err()
            .expect("refused");
        assert!(e.to_string().contains("recipient"), "{e}");
        let big = STANDARD.encode(vec![0u8; MAX_ATTACHMENT_BYTES + 1]);
        let e = build(
            body(json!({"to": ["a@example.com"], "subject": "s", "text": "t",
                        "attachments": [{"filename": "x.bin", "content_type": "application/octet-stream", "content": big}]})),
            None,
        )
        .err()
        .expect("refused");
        assert!(e.to_string().contains("attachments"), "{e}");
        let e = build(
            body(
                json!({"to": ["a@example.com"], "subject": "hi\r\nBcc: x@evil.test", "text": "t"}),
            ),
            None,
        )
        .err()
        .expect("refused");
        assert_eq!(e.code(), "header_injection");
        let e = build(
            body(json!({"to": ["a@example.com"], "subject": "s", "text": "t",
                        "attachments": [{"filename": "../x", "content_type": "nope", "content": "***"}]})),
            None,
        )
        .err()
        .expect("refused");
        let text = e.to_string();
        assert!(
            text.contains("filename") && text.contains("content_type") && text.contains("content"),
            "{text}"
        );
    }
}
