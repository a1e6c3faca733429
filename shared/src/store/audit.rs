//! Audit items: a tenant's entries in their own partition, sorted by time; an entry
//! is written in the same transaction as the change it describes.

use time::OffsetDateTime;

use super::{Keyed, Page, QueryOpts, StoreError, Table, Write, keys, to_item};
use crate::audit::AuditEntry;
use crate::domain::{TenantId, sortable_time};

fn keyed(entry: &AuditEntry) -> Keyed<&AuditEntry> {
    Keyed {
        pk: keys::audit(&entry.tenant),
        sk: keys::audit_entry(&sortable_time(entry.at), entry.id.as_str()),
        item: entry,
    }
}

/// The entry as a transaction write (it must not exist yet).
pub(crate) fn insert(entry: &AuditEntry) -> Result<Write, StoreError> {
    Ok(Write::Insert(to_item(&keyed(entry))?))
}

impl AuditEntry {
    /// The entry as a transaction write, to commit it with the change it describes.
    pub fn to_write(&self) -> Result<Write, StoreError> {
        insert(self)
    }
}

/// Reads and writes the audit log.
#[derive(Clone, Debug)]
pub struct AuditLog {
    table: Table,
}

impl AuditLog {
    /// The audit log kept in `table`.
    pub fn new(table: Table) -> Self {
        Self { table }
    }

    /// Records an entry on its own (for outcomes that change nothing else).
    pub async fn record(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.table.insert(&keyed(entry)).await
    }

    /// A tenant's entries in a time range, newest first.
    pub async fn list(
        &self,
        tenant: &TenantId,
        from: OffsetDateTime,
        to: OffsetDateTime,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<Page<AuditEntry>, StoreError> {
        let from = sortable_time(from);
        // `~` sorts after every `#{id}` suffix: the whole last instant is in range.
        let to = format!("{}~", sortable_time(to));
        let page = self
            .table
            .query::<Keyed<AuditEntry>>(
                None,
                &keys::audit(tenant),
                QueryOpts {
                    between: Some((&from, &to)),
                    limit: Some(limit),
                    cursor,
                    descending: true,
                    ..Default::default()
                },
            )
            .await?;
        Ok(Page {
            items: page.items.into_iter().map(|k| k.item).collect(),
            cursor: page.cursor,
        })
    }
}
