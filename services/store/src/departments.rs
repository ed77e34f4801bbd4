//! Registered departments, written once for both backends (`department_store!`): the SQL is the
//! same text on both, the query builder writing each engine's placeholders.
//!
//! Backend-specific: how the other hub nodes hear of a change. Each backend defines
//! `department_changed` (called after every write) and `listen_for_departments`: PostgreSQL
//! notifies and listens on a channel; SQLite serves one hub per file and has nobody to tell.

pub(crate) const DEPARTMENT_COLUMNS: &str = "code, name, division_code, contact, active, created_at, updated_at";

/// The one implementation of [`crate::DepartmentStore`]. Invoked in each backend's module, where
/// `get` and `stored_time` are that backend's; `$row` is its row type, `$read` and `$write` its
/// pools.
macro_rules! department_store {
    ($store:ty, $db:ty, $row:ty, $read:ident, $write:ident) => {
        use chrono::{DateTime, Utc};
        use sqlx::QueryBuilder;
        use xinqiao_domain::department::{Department, DepartmentProfile};
        use xinqiao_domain::{Error, Result};

        use crate::DepartmentStore;
        use crate::departments::DEPARTMENT_COLUMNS;
        use crate::error::{db_error, translate};

        fn department(row: &$row) -> Result<Department> {
            Ok(Department {
                profile: DepartmentProfile {
                    code: get(row, "code")?,
                    name: get(row, "name")?,
                    division_code: get(row, "division_code")?,
                    contact: get(row, "contact")?,
                },
                active: get(row, "active")?,
                created_at: get(row, "created_at")?,
                updated_at: get(row, "updated_at")?,
            })
        }

        #[async_trait::async_trait]
        impl DepartmentStore for $store {
            async fn register_department(&self, profile: &DepartmentProfile, at: DateTime<Utc>) -> Result<Department> {
                let at = stored_time(at);
                let mut query = QueryBuilder::<$db>::new("INSERT INTO departments (");
                query.push(DEPARTMENT_COLUMNS).push(") VALUES (");
                let mut values = query.separated(", ");
                values.push_bind(&profile.code);
                values.push_bind(&profile.name);
                values.push_bind(&profile.division_code);
                values.push_bind(&profile.contact);
                values.push_bind(true);
                values.push_bind(at);
                values.push_bind(at);
                query.push(") RETURNING ").push(DEPARTMENT_COLUMNS);
                let row = query
                    .build()
                    .fetch_one(&self.$write)
                    .await
                    .map_err(|e| translate(e, &format!("department {}", profile.code)))?;
                self.department_changed(&profile.code).await;
                department(&row)
            }

            async fn update_department(&self, profile: &DepartmentProfile, at: DateTime<Utc>) -> Result<Department> {
                let mut query = QueryBuilder::<$db>::new("UPDATE departments SET name = ");
                query.push_bind(&profile.name);
                query.push(", division_code = ").push_bind(&profile.division_code);
                query.push(", contact = ").push_bind(&profile.contact);
                query.push(", updated_at = ").push_bind(stored_time(at));
                query.push(" WHERE code = ").push_bind(&profile.code);
                query.push(" RETURNING ").push(DEPARTMENT_COLUMNS);
                let row = query
                    .build()
                    .fetch_optional(&self.$write)
                    .await
                    .map_err(db_error)?;
                self.department_changed(&profile.code).await;
                row.as_ref()
                    .map(department)
                    .transpose()?
                    .ok_or_else(|| Error::NotFound(format!("department {}", profile.code)))
            }

            async fn set_department_active(&self, code: &str, active: bool, at: DateTime<Utc>) -> Result<Department> {
                let mut query = QueryBuilder::<$db>::new("UPDATE departments SET active = ");
                query.push_bind(active);
                query.push(", updated_at = ").push_bind(stored_time(at));
                query.push(" WHERE code = ").push_bind(code);
                query.push(" RETURNING ").push(DEPARTMENT_COLUMNS);
                let row = query
                    .build()
                    .fetch_optional(&self.$write)
                    .await
                    .map_err(db_error)?;
                self.department_changed(code).await;
                row.as_ref()
                    .map(department)
                    .transpose()?
                    .ok_or_else(|| Error::NotFound(format!("department {code}")))
            }

            async fn get_department(&self, code: &str) -> Result<Option<Department>> {
                let mut query = QueryBuilder::<$db>::new("SELECT ");
                query
                    .push(DEPARTMENT_COLUMNS)
                    .push(" FROM departments WHERE code = ")
                    .push_bind(code);
                let row = query
                    .build()
                    .fetch_optional(&self.$read)
                    .await
                    .map_err(db_error)?;
                row.as_ref().map(department).transpose()
            }

            async fn list_departments(
                &self,
                after: Option<&str>,
                limit: u32,
                include_inactive: bool,
            ) -> Result<Vec<Department>> {
                let mut query = QueryBuilder::<$db>::new("SELECT ");
                query
                    .push(DEPARTMENT_COLUMNS)
                    .push(" FROM departments WHERE 1 = 1");
                if !include_inactive {
                    query.push(" AND active = ").push_bind(true);
                }
                if let Some(after) = after {
                    query.push(" AND code > ").push_bind(after);
                }
                query.push(" ORDER BY code LIMIT ").push_bind(i64::from(limit));
                let rows = query.build().fetch_all(&self.$read).await.map_err(db_error)?;
                rows.iter().map(department).collect()
            }

            async fn listen_departments(&self, sink: tokio::sync::mpsc::Sender<String>) -> Result<bool> {
                self.listen_for_departments(sink).await
            }
        }
    };
}
pub(crate) use department_store;
