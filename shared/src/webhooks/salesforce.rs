//! Salesforce outbound messages (a workflow rule's or a Flow's "outbound message"
//! action, SOAP 1.1), which the tenant's admin points at a realtime config's route.
//!
//! **Verification**: Salesforce signs nothing Conduit can check without a client
//! certificate, so the route carries a per-config key Conduit made (compared in constant
//! time), and the message's `OrganizationId` must be the connection's org.
//! `SessionId`, when the admin left "Send Session ID" on, is a live session of the
//! sending user: it is skipped by the reader, never kept, logged or stored.
//!
//! **Reading** (bounded, no DTD): the body is at most the route's limit; a `<!DOCTYPE`,
//! `<!ENTITY` or any other markup declaration is refused (no entities are ever
//! expanded but the five predefined ones and character references); at most
//! [`MAX_NOTIFICATIONS`] `Notification`s (Salesforce sends up to 100) and 64 levels of
//! nesting. Taken: `OrganizationId`, `ActionId`, and per notification its `Id` and the
//! `sObject`'s type (`xsi:type="sf:Contact"`) and `Id`; the record is read back from
//! Salesforce, never taken from the message.
//!
//! **Answer**: `<Ack>true</Ack>` in a `notificationsResponse`; anything else and
//! Salesforce sends the message again (for up to 24 hours).

use super::WebhookError;

/// Notifications one message may hold.
pub const MAX_NOTIFICATIONS: usize = 100;
const MAX_DEPTH: usize = 64;

/// One outbound message, as record sync reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    /// The sending org.
    pub organization_id: String,
    /// The outbound message's id.
    pub action_id: String,
    /// `(notification id, sObject type, record id)` of each notification.
    pub notifications: Vec<(String, String, String)>,
}

/// The acknowledgement Salesforce waits for.
pub const ACK: &str = concat!(
    r#"<?xml version="1.0" encoding="UTF-8"?>"#,
    r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">"#,
    r#"<soapenv:Body><notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">"#,
    r#"<Ack>true</Ack></notificationsResponse></soapenv:Body></soapenv:Envelope>"#
);

fn malformed(why: &str) -> WebhookError {
    WebhookError::Malformed(why.to_owned())
}

fn local(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

/// Decodes the predefined entities and character references of `text`.
fn unescape(text: &str) -> Result<String, WebhookError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let end = rest[at..]
            .find(';')
            .ok_or_else(|| malformed("an unterminated entity"))?;
        let name = &rest[at + 1..at + end];
        let c = match name {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = name.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else {
                    name.strip_prefix('#').and_then(|d| d.parse().ok())
                };
                code.and_then(char::from_u32)
                    .ok_or_else(|| malformed("an entity other than the predefined ones"))?
            }
        };
        out.push(c);
        rest = &rest[at + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The value of attribute `name` (by local name) in a tag's attribute text.
fn attribute(attrs: &str, name: &str) -> Option<String> {
    let mut rest = attrs;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].split_whitespace().last().unwrap_or_default();
        let after = rest[eq + 1..].trim_start();
        let quote = after.chars().next()?;
        if quote != '"' && quote != '\'' {
            return None;
        }
        let end = after[1..].find(quote)? + 1;
        if local(key) == name {
            return unescape(&after[1..end]).ok();
        }
        rest = &after[end + 1..];
    }
    None
}

/// Reads one outbound message.
pub fn parse(body: &[u8]) -> Result<Outbound, WebhookError> {
    let xml = std::str::from_utf8(body).map_err(|_| malformed("the body is not UTF-8"))?;
    let mut stack: Vec<String> = Vec::new();
    let mut org = None;
    let mut action = None;
    let mut notifications = Vec::new();
    // The notification being read: its id, sObject type and record id.
    let mut current: Option<(Option<String>, Option<String>, Option<String>)> = None;
    let mut rest = xml;
    let mut text = String::new();
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            if !rest.trim().is_empty() {
                return Err(malformed("text after the envelope"));
            }
            break;
        };
        text.push_str(&rest[..lt]);
        rest = &rest[lt..];
        if rest.starts_with("<?") {
            let end = rest
                .find("?>")
                .ok_or_else(|| malformed("an unterminated declaration"))?;
            rest = &rest[end + 2..];
            continue;
        }
        if rest.starts_with("<!--") {
            let end = rest
                .find("-->")
                .ok_or_else(|| malformed("an unterminated comment"))?;
            rest = &rest[end + 3..];
            continue;
        }
        if let Some(cdata) = rest.strip_prefix("<![CDATA[") {
            let end = cdata
                .find("]]>")
                .ok_or_else(|| malformed("an unterminated CDATA"))?;
            text.push_str(&cdata[..end]);
            rest = &cdata[end + 3..];
            continue;
        }
        if rest.starts_with("<!") {
            return Err(malformed(
                "markup declarations (DOCTYPE, ENTITY) are not accepted",
            ));
        }
        let gt = rest
            .find('>')
            .ok_or_else(|| malformed("an unterminated tag"))?;
        let tag = &rest[1..gt];
        rest = &rest[gt + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            let name = local(name.trim()).to_owned();
            if stack.last() != Some(&name) {
                return Err(malformed("mismatched tags"));
            }
            let value = unescape(text.trim())?;
            text.clear();
            let parent = stack
                .len()
                .checked_sub(2)
                .and_then(|i| stack.get(i))
                .map(String::as_str);
            match (name.as_str(), parent) {
                ("OrganizationId", Some("notifications")) => org = Some(value),
                ("ActionId", Some("notifications")) => action = Some(value),
                ("Id", Some("Notification")) => {
                    if let Some(c) = current.as_mut() {
                        c.0 = Some(value);
                    }
                }
                ("Id", Some("sObject")) => {
                    if let Some(c) = current.as_mut() {
                        c.2 = Some(value);
                    }
                }
                ("Notification", _) => {
                    let Some((Some(id), Some(object), Some(record))) = current.take() else {
                        return Err(malformed(
                            "a Notification without its Id, sObject type or sObject Id",
                        ));
                    };
                    notifications.push((id, object, record));
                }
                _ => {}
            }
            stack.pop();
            continue;
        }
        text.clear();
        let self_closing = tag.ends_with('/');
        let tag = tag.trim_end_matches('/');
        let (name, attrs) = tag.split_once(char::is_whitespace).unwrap_or((tag, ""));
        let name = local(name).to_owned();
        if name.is_empty() {
            return Err(malformed("an empty tag"));
        }
        match name.as_str() {
            "Notification" => {
                if notifications.len() >= MAX_NOTIFICATIONS {
                    return Err(malformed("more than 100 notifications"));
                }
                current = Some((None, None, None));
            }
            "sObject" => {
                let object = attribute(attrs, "type").map(|t| local(&t).to_owned());
                if let Some(c) = current.as_mut() {
                    c.1 = object;
                }
            }
            _ => {}
        }
        if !self_closing {
            stack.push(name);
            if stack.len() > MAX_DEPTH {
                return Err(malformed("nested too deeply"));
            }
        }
    }
    if !stack.is_empty() {
        return Err(malformed("unclosed tags"));
    }
    let id_like =
        |s: &str| (15..=18).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric());
    let org = org
        .filter(|o| id_like(o))
        .ok_or_else(|| malformed("no OrganizationId"))?;
    let action = action
        .filter(|a| id_like(a))
        .ok_or_else(|| malformed("no ActionId"))?;
    if notifications.is_empty() {
        return Err(malformed("no notification"));
    }
    if notifications
        .iter()
        .any(|(id, object, record)| !id_like(id) || !id_like(record) || object.len() > 80)
    {
        return Err(malformed("a notification whose ids are not Salesforce ids"));
    }
    Ok(Outbound {
        organization_id: org,
        action_id: action,
        notifications,
    })
}

/// Whether two Salesforce ids name the same thing (15-character ids are the
/// case-sensitive prefix of the 18-character ones).
pub fn same_id(a: &str, b: &str) -> bool {
    a.len() >= 15 && b.len() >= 15 && a.as_bytes()[..15] == b.as_bytes()[..15]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>00DSY0000000001AAA</OrganizationId>
   <ActionId>04kSY0000000001AAA</ActionId>
   <SessionId>00DSY!AQ0AQ.secret.session</SessionId>
   <EnterpriseUrl>https://x.my.salesforce.com/services/Soap/c/62.0/00DSY</EnterpriseUrl>
   <PartnerUrl>https://x.my.salesforce.com/services/Soap/u/62.0/00DSY</PartnerUrl>
   <Notification>
    <Id>04lSY0000000001AAA</Id>
    <sObject xsi:type="sf:Contact" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
     <sf:Id>003SY0000000001AAA</sf:Id>
     <sf:Email>a&amp;b@example.com</sf:Email>
    </sObject>
   </Notification>
  </notifications>
 </soapenv:Body>
</soapenv:Envelope>"#;

    #[test]
    fn messages_read_org_action_and_records_only() {
        let m = parse(MESSAGE.as_bytes()).unwrap();
        assert_eq!(m.organization_id, "00DSY0000000001AAA");
        assert_eq!(m.action_id, "04kSY0000000001AAA");
        assert_eq!(
            m.notifications,
            vec![(
                "04lSY0000000001AAA".to_owned(),
                "Contact".to_owned(),
                "003SY0000000001AAA".to_owned()
            )]
        );
        assert!(!format!("{m:?}").contains("secret.session"));
    }

    #[test]
    fn declarations_entities_and_broken_xml_are_refused() {
        let doctype = MESSAGE.replacen(
            "<soapenv:Envelope",
            "<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><soapenv:Envelope",
            1,
        );
        assert!(parse(doctype.as_bytes()).is_err());
        assert!(parse(MESSAGE.replace("a&amp;b", "&e;").as_bytes()).is_err());
        assert!(parse(MESSAGE.replace("</sObject>", "").as_bytes()).is_err());
        assert!(
            parse(
                MESSAGE
                    .replace("<sf:Id>003SY0000000001AAA</sf:Id>", "")
                    .as_bytes()
            )
            .is_err()
        );
        assert!(
            parse(
                MESSAGE
                    .replace("00DSY0000000001AAA</Org", "x</Org")
                    .as_bytes()
            )
            .is_err()
        );
        assert!(parse(b"{}").is_err());
        let one = "<Notification><Id>04lSY0000000001AAA</Id><sObject xsi:type=\"sf:Contact\"><sf:Id>003SY0000000001AAA</sf:Id></sObject></Notification>";
        let hundred = MESSAGE.replacen(
            "<Notification>",
            &format!("{}<Notification>", one.repeat(99)),
            1,
        );
        assert_eq!(parse(hundred.as_bytes()).unwrap().notifications.len(), 100);
        let more = MESSAGE.replacen(
            "<Notification>",
            &format!("{}<Notification>", one.repeat(100)),
            1,
        );
        assert!(parse(more.as_bytes()).is_err());
    }

    #[test]
    fn fifteen_and_eighteen_character_ids_match() {
        assert!(same_id("00DSY0000000001", "00DSY0000000001AAA"));
        assert!(!same_id("00DSY0000000002", "00DSY0000000001AAA"));
        assert!(!same_id("00dsy0000000001", "00DSY0000000001AAA"));
    }
}
