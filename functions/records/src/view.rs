//! What the API shows of a record: its fields, where each value came from, the CRM
//! records linked with it and the platforms those live on.

use std::collections::{BTreeMap, BTreeSet};

use conduit::domain::rfc3339;
use conduit::sync::links::Linked;
use conduit::sync::records::{Record, Source};
use serde::Serialize;

/// The unified view of one record.
#[derive(Serialize)]
pub struct View<'a> {
    id: &'a str,
    entity: &'static str,
    name: String,
    fields: &'a BTreeMap<String, String>,
    /// Source indicators of the values it holds (a cleared field shows none).
    sources: BTreeMap<&'a str, &'a Source>,
    links: Vec<Link<'a>>,
    platforms: BTreeSet<&'a str>,
    version: u64,
    created_at: String,
    updated_at: String,
}

#[derive(Clone, Serialize)]
struct Link<'a> {
    config_id: &'a str,
    provider: &'a str,
    connection_id: &'a str,
    crm_id: &'a str,
}

/// The view of `r`, linked with `links` (its live links, from the link items).
pub fn view<'a>(r: &'a Record, links: &'a [Linked]) -> View<'a> {
    // The record's own links (written by pulls) and the link items (pushes make them
    // too); the link item speaks for its config.
    let mut by_config: BTreeMap<&str, Link<'a>> = r
        .links
        .iter()
        .map(|(config_id, l)| {
            (
                config_id.as_str(),
                Link {
                    config_id,
                    provider: &l.provider,
                    connection_id: &l.connection_id,
                    crm_id: &l.crm_id,
                },
            )
        })
        .collect();
    for l in links {
        by_config.insert(
            l.config_id.as_str(),
            Link {
                config_id: l.config_id.as_str(),
                provider: &l.provider,
                connection_id: &l.connection_id,
                crm_id: &l.crm_id,
            },
        );
    }
    let all_links: Vec<Link<'a>> = by_config.into_values().collect();
    View {
        id: r.id.as_str(),
        entity: r.entity.as_str(),
        name: r.name(),
        fields: &r.fields,
        sources: r
            .sources
            .iter()
            .filter(|(field, _)| r.fields.contains_key(*field))
            .map(|(field, source)| (field.as_str(), source))
            .collect(),
        links: all_links.clone(),
        platforms: all_links.iter().map(|l| l.provider).collect(),
        version: r.version,
        created_at: rfc3339(r.created_at),
        updated_at: rfc3339(r.updated_at),
    }
}
