//! Salesforce outbound messages ("Outbound Messaging" in the SOAP API developer
//! guide): an org's admin makes a workflow rule (or a record-triggered Flow) on Contact
//! or Account whose action sends an outbound message — endpoint URL, the fields to
//! send, and whether to send a session id — in Setup or through the Metadata API
//! (`WorkflowOutboundMessage`). Neither is an API Conduit calls, so here the admin's
//! setup is a knob ([`SandboxState::salesforce_add_outbound_message`]).
//!
//! **Deliveries**: every create and every edit of a record of the message's object (the
//! rule "created, and every time it's edited" with no criteria) queues a notification;
//! queued notifications of one message go out together, at most 100 a request, as a
//! SOAP 1.1 `POST` (`Content-Type: text/xml; charset=utf-8`, `SOAPAction: ""`) of
//! `<notifications xmlns="http://soap.sforce.com/2005/09/outbound">` with
//! `OrganizationId`, `ActionId`, `SessionId` (a session of the admin when asked for,
//! else `xsi:nil`), `EnterpriseUrl`, `PartnerUrl`, and per notification its `Id` and the
//! `sObject` (`xsi:type="sf:Contact"`, `sf:Id` and the chosen fields). A request counts
//! as delivered only when answered 2xx with `<Ack>true</Ack>` in the body; otherwise
//! every notification in it is sent again, with the same ids, until acknowledged.
//! Every request is recorded ([`SandboxState::salesforce_outbound_deliveries`]).
//!
//! **Not reproduced**: deletions (workflow rules and outbound messages do not fire on
//! delete — the every-minute pull reads deletions), rule criteria, Flows' other
//! actions, the 24-hour retry schedule (compressed: 0.5 s doubling to 8 s, for 10
//! attempts instead of a day), the "failed outbound messages" queue in Setup, client
//! certificates, notifications of the same record coalescing; the notifications of an
//! all-or-none request that was rolled back are still sent.

use std::time::Duration;

use serde_json::Value;

use super::schema::{SfObject, make_id};
use super::store::Org;
use crate::providers::hook_delivery::{Delivery, delivered, post};
use crate::state::SandboxState;

const TIMEOUT: Duration = Duration::from_secs(10);
const ATTEMPTS: u32 = 10;
const PER_REQUEST: usize = 100;
const DELIVERIES_KEPT: usize = 10_000;
const PENDING_KEPT: usize = 100_000;

/// An outbound message an admin set up.
#[derive(Clone, Debug)]
struct Message {
    id: String,
    object: SfObject,
    url: String,
    fields: Vec<String>,
    session: bool,
}

/// A notification not yet acknowledged.
#[derive(Clone, Debug)]
struct Pending {
    action: String,
    id: String,
    object: SfObject,
    values: Vec<(String, String)>,
    attempt: u32,
    due_ms: i64,
}

/// One org's outbound messages and unacknowledged notifications.
#[derive(Clone, Debug, Default)]
pub(crate) struct Outbound {
    messages: Vec<Message>,
    pending: Vec<Pending>,
    next: u64,
}

impl Outbound {
    /// Whether an outbound message is set up on `object`.
    pub(crate) fn watches(&self, object: SfObject) -> bool {
        self.messages.iter().any(|m| m.object == object)
    }

    /// Queues a notification of every message on `object` for a record created or
    /// edited; `value` reads a field of it as text.
    pub(crate) fn note(
        &mut self,
        object: SfObject,
        record_id: &str,
        value: impl Fn(&str) -> Option<String>,
    ) {
        let now = crate::clock::now_ms();
        for m in self.messages.iter().filter(|m| m.object == object) {
            if self.pending.len() >= PENDING_KEPT {
                return;
            }
            self.next += 1;
            let mut values = vec![("Id".to_owned(), record_id.to_owned())];
            values.extend(
                m.fields
                    .iter()
                    .filter(|f| *f != "Id")
                    .filter_map(|f| value(f).map(|v| (f.clone(), v))),
            );
            self.pending.push(Pending {
                action: m.id.clone(),
                id: make_id("04l", 500_000_000 + self.next),
                object,
                values,
                attempt: 1,
                due_ms: now,
            });
        }
    }
}

/// Outbound requests sent.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    sent: Vec<Delivery>,
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn envelope(org: &str, m: &Message, batch: &[Pending]) -> String {
    let host = format!("{}.my.salesforce.com", org.to_ascii_lowercase());
    let org15 = &org[..org.len().min(15)];
    let session = if m.session {
        format!(
            "<SessionId>{org15}!AQ4AQ.sandbox-session-{}</SessionId>",
            &m.id[3..]
        )
    } else {
        "<SessionId xsi:nil=\"true\"/>".to_owned()
    };
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"><soapenv:Body><notifications xmlns=\"http://soap.sforce.com/2005/09/outbound\"><OrganizationId>{org}</OrganizationId><ActionId>{}</ActionId>{session}<EnterpriseUrl>https://{host}/services/Soap/c/62.0/{org15}</EnterpriseUrl><PartnerUrl>https://{host}/services/Soap/u/62.0/{org15}</PartnerUrl>",
        m.id
    );
    for p in batch {
        out.push_str(&format!(
            "<Notification><Id>{}</Id><sObject xsi:type=\"sf:{}\" xmlns:sf=\"urn:sobject.enterprise.soap.sforce.com\">",
            p.id,
            p.object.name()
        ));
        for (name, value) in &p.values {
            out.push_str(&format!("<sf:{name}>{}</sf:{name}>", escape(value)));
        }
        out.push_str("</sObject></Notification>");
    }
    out.push_str("</notifications></soapenv:Body></soapenv:Envelope>");
    out
}

impl SandboxState {
    /// Sets up, as `org`'s admin would, a workflow rule on `object` (created and every
    /// edit) with an outbound message to `url` carrying `fields` (and the admin's
    /// session id when `send_session_id`); answers the message's id (`04k…`).
    pub fn salesforce_add_outbound_message(
        &self,
        org: &str,
        object: SfObject,
        url: &str,
        fields: &[&str],
        send_session_id: bool,
    ) -> String {
        let mut store = self.sf_store();
        let outbound = &mut store.org(org).outbound;
        outbound.next += 1;
        let id = make_id("04k", 400_000_000 + outbound.next);
        outbound.messages.push(Message {
            id: id.clone(),
            object,
            url: url.to_owned(),
            fields: fields.iter().map(|f| (*f).to_owned()).collect(),
            session: send_session_id,
        });
        id
    }

    /// Creates a record as a Salesforce user would in the UI (`fields` by API name, as
    /// the REST API checks them); its id, or `None` when a field is refused.
    pub fn salesforce_create_record(
        &self,
        org: &str,
        object: SfObject,
        fields: &serde_json::Map<String, Value>,
    ) -> Option<String> {
        let mut store = self.sf_store();
        let org = store.org(org);
        let stamp = org.stamp();
        org.create(object, fields, stamp).ok()
    }

    /// Every outbound message request sent so far, oldest first (at most 10,000).
    pub fn salesforce_outbound_deliveries(&self) -> Vec<Delivery> {
        self.sf_store().outbound_out.sent.clone()
    }

    /// The due notifications, grouped per message (at most 100 a request).
    fn due_outbound(&self) -> Vec<(String, Message, Vec<Pending>)> {
        let now = crate::clock::now_ms();
        let mut store = self.sf_store();
        let mut out = Vec::new();
        for (org_id, org) in store.orgs_mut() {
            let outbound = &mut org.outbound;
            if outbound.pending.is_empty() {
                continue;
            }
            let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut outbound.pending)
                .into_iter()
                .partition(|p| p.due_ms <= now);
            outbound.pending = later;
            for m in &outbound.messages {
                let mine: Vec<Pending> = due.iter().filter(|p| p.action == m.id).cloned().collect();
                for batch in mine.chunks(PER_REQUEST) {
                    out.push((org_id.clone(), m.clone(), batch.to_vec()));
                }
            }
        }
        out
    }
}

/// One round: due notifications are sent, those not acknowledged queued again.
pub(crate) async fn tick(state: &SandboxState, client: &reqwest::Client) {
    for (org, m, batch) in state.due_outbound() {
        let body = envelope(&org, &m, &batch);
        let headers = vec![
            (
                "content-type".to_owned(),
                "text/xml; charset=utf-8".to_owned(),
            ),
            ("soapaction".to_owned(), "\"\"".to_owned()),
            (
                "user-agent".to_owned(),
                "Salesforce - OutboundMessage".to_owned(),
            ),
        ];
        let answer = post(client, &m.url, &headers, &body, TIMEOUT).await;
        let status = answer.as_ref().map(|(s, _)| *s);
        let acked = delivered(status)
            && answer
                .as_ref()
                .is_some_and(|(_, text)| text.contains("<Ack>true</Ack>"));
        let attempt = batch.first().map_or(1, |p| p.attempt);
        let mut store = state.sf_store();
        if !acked {
            let delay = (500_i64 << (attempt - 1).min(4)).min(8_000);
            let retry: Vec<Pending> = batch
                .into_iter()
                .filter(|p| p.attempt < ATTEMPTS)
                .map(|p| Pending {
                    attempt: p.attempt + 1,
                    due_ms: crate::clock::now_ms() + delay,
                    ..p
                })
                .collect();
            store.org(&org).outbound.pending.extend(retry);
        }
        let sent = &mut store.outbound_out.sent;
        if sent.len() >= DELIVERIES_KEPT {
            sent.drain(..DELIVERIES_KEPT / 2);
        }
        sent.push(Delivery {
            url: m.url.clone(),
            headers,
            body,
            status,
            attempt,
        });
    }
}

/// Notes a stored record for the org's outbound messages (created or edited; not
/// deletions, on which workflow rules do not fire).
pub(crate) fn note_put(org: &mut Org, object: SfObject, values: &[Value], id: &str, deleted: bool) {
    if deleted || !matches!(object, SfObject::Contact | SfObject::Account) {
        return;
    }
    org.outbound.note(object, id, |name| {
        let (index, _) = object.field(name)?;
        match values.get(index)? {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_are_what_conduit_reads() {
        let m = Message {
            id: make_id("04k", 400_000_001),
            object: SfObject::Contact,
            url: "https://hooks.example.com/x".into(),
            fields: vec!["Email".into()],
            session: true,
        };
        let p = Pending {
            action: m.id.clone(),
            id: make_id("04l", 500_000_001),
            object: SfObject::Contact,
            values: vec![
                ("Id".into(), make_id("003", 916_132_832)),
                ("Email".into(), "a&b@x.test".into()),
            ],
            attempt: 1,
            due_ms: 0,
        };
        let xml = envelope("00DSY0000000001AAA", &m, &[p]);
        assert!(xml.contains("<sf:Email>a&amp;b@x.test</sf:Email>"));
        assert!(xml.contains("xsi:type=\"sf:Contact\""));
        assert!(xml.contains("<SessionId>00DSY0000000001!AQ4AQ"));
    }
}
