//! Links, as items: `LINK#{tenant}#{config}#{entity}#{shard(record id)}` / `{record id}`,
//! the link as JSON in `body`. A config's links are spread over
//! [`keys::RECORD_SHARDS`] partitions, since its worker writes one per record at the
//! provider's full rate.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{QueryOpts, StoreError, keys, redacted, to_item};
use crate::domain::RecordId;
use crate::sync::links::{Link, Links};

#[derive(Serialize, Deserialize)]
struct Stored {
    pk: String,
    sk: String,
    body: String,
}

#[derive(Deserialize)]
struct Key {
    sk: String,
}

fn parse(i: Stored) -> Result<(String, Link), StoreError> {
    let link: Link =
        serde_json::from_str(&i.body).map_err(|e| StoreError::Conversion(redacted(&e)))?;
    Ok((i.sk, link))
}

impl Links {
    fn pk(&self, id: &str) -> String {
        keys::link(&self.tenant, &self.config, self.entity, id)
    }

    /// The links of these records, by record id (records without one are left out).
    pub async fn get_many(&self, ids: &[RecordId]) -> Result<BTreeMap<String, Link>, StoreError> {
        let keys: Vec<(String, String)> = ids
            .iter()
            .map(|id| (self.pk(id.as_str()), id.to_string()))
            .collect();
        let items: Vec<Stored> = self.table.batch_get(&keys, true).await?;
        items.into_iter().map(parse).collect()
    }

    /// Writes links (this config's worker is their only writer).
    pub async fn put_many(&self, links: &[(RecordId, Link)]) -> Result<(), StoreError> {
        let mut puts = Vec::with_capacity(links.len());
        for (id, link) in links {
            let body =
                serde_json::to_string(link).map_err(|e| StoreError::Conversion(redacted(&e)))?;
            puts.push(to_item(&Stored {
                pk: self.pk(id.as_str()),
                sk: id.to_string(),
                body,
            })?);
        }
        self.table.batch_write(puts, Vec::new()).await
    }

    /// Every link of the config and entity, by record id (links that do not read are
    /// left out: what needs them reads them by id).
    pub async fn all(&self) -> Result<BTreeMap<String, Link>, StoreError> {
        let mut out = BTreeMap::new();
        for shard in 0..keys::RECORD_SHARDS {
            let pk = keys::links(&self.tenant, &self.config, self.entity, shard);
            for item in self.table.query_all_lenient::<Stored>(&pk, "").await? {
                if let Ok((id, link)) = item.into_result().and_then(parse) {
                    out.insert(id, link);
                }
            }
        }
        Ok(out)
    }

    /// Up to `limit` linked record ids, read strongly consistent (none when the
    /// config has no link left).
    pub async fn some_ids(&self, limit: i32) -> Result<Vec<String>, StoreError> {
        for shard in 0..keys::RECORD_SHARDS {
            let pk = keys::links(&self.tenant, &self.config, self.entity, shard);
            let page = self
                .table
                .query::<Key>(
                    None,
                    &pk,
                    QueryOpts {
                        limit: Some(limit),
                        consistent: true,
                        ..Default::default()
                    },
                )
                .await?;
            if !page.items.is_empty() {
                return Ok(page.items.into_iter().map(|k| k.sk).collect());
            }
        }
        Ok(Vec::new())
    }

    /// Deletes the links of these records.
    pub async fn remove(&self, ids: &[String]) -> Result<(), StoreError> {
        let deletes = ids.iter().map(|id| (self.pk(id), id.clone())).collect();
        self.table.batch_write(Vec::new(), deletes).await
    }
}
