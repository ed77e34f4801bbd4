//! Registered departments on PostgreSQL: the implementation shared with SQLite
//! (`crate::departments::department_store!`), over this backend's pool. Every change is announced
//! on a channel (`notify_department`) that every hub node listens to, so that each forgets its
//! cached copy.

use super::{PgStore, get, stored_time};

impl PgStore {
    async fn department_changed(&self, code: &str) {
        self.notify_department(code).await;
    }

    async fn listen_for_departments(&self, sink: tokio::sync::mpsc::Sender<String>) -> Result<bool> {
        let listener = self.listener(super::DEPARTMENTS_CHANNEL).await?;
        let schema = self.schema_name().await?;
        tokio::spawn(super::forward_departments(
            listener,
            schema,
            sink,
            self.pool.close_event(),
        ));
        Ok(true)
    }
}

crate::departments::department_store!(PgStore, sqlx::Postgres, sqlx::postgres::PgRow, pool, pool);
