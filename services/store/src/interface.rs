//! What both backends do the same way for interfaces: the JSON text of a specification, and the
//! errors about a missing one.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use xinqiao_domain::interface::{InterfaceSpec, Method, Operation};
use xinqiao_domain::schema::SchemaRef;
use xinqiao_domain::{Error, Result, text};

use crate::error::corrupt;

const COLUMN: &str = "interfaces.spec";

/// A specification as JSON text (one column: it is read and written whole).
pub(crate) fn spec_json(spec: &InterfaceSpec) -> Result<String> {
    let schema = |s: &SchemaRef| json!({ "subject": s.subject, "version": s.version });
    let operations: Vec<Value> = spec
        .operations
        .iter()
        .map(|o| {
            json!({
                "name": o.name,
                "method": o.method.as_str(),
                "path": o.path,
                "request_schema": schema(&o.request_schema),
                "response_schema": schema(&o.response_schema),
                "idempotent": o.idempotent,
            })
        })
        .collect();
    serde_json::to_string(&json!({
        "upstream": spec.upstream,
        "upstream_ca_pem": spec.upstream_ca_pem,
        "operations": operations,
        "timeout_ms": spec.timeout_ms,
        "rate_per_minute": spec.rate_per_minute,
        "max_concurrency": spec.max_concurrency,
        "descriptor_set": BASE64.encode(&spec.descriptor_set),
    }))
    .map_err(|e| Error::Internal(format!("encoding an interface: {e}")))
}

pub(crate) fn parse_spec(stored: &str) -> Result<InterfaceSpec> {
    let v: Value = serde_json::from_str(stored).map_err(|e| corrupt(COLUMN, e))?;
    let text_of = |v: &Value, field: &str| -> Result<String> {
        v.get(field)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| corrupt(COLUMN, format!("no text '{field}'")))
    };
    let number = |v: &Value, field: &str| -> Result<u32> {
        v.get(field)
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| corrupt(COLUMN, format!("no number '{field}'")))
    };
    let schema = |v: &Value, field: &str| -> Result<SchemaRef> {
        let s = v.get(field).ok_or_else(|| corrupt(COLUMN, format!("no '{field}'")))?;
        Ok(SchemaRef {
            subject: text_of(s, "subject")?,
            version: number(s, "version")?,
        })
    };
    let operations = v
        .get("operations")
        .and_then(Value::as_array)
        .ok_or_else(|| corrupt(COLUMN, "no operations"))?
        .iter()
        .map(|o| {
            let method = text_of(o, "method")?;
            Ok(Operation {
                name: text_of(o, "name")?,
                method: Method::parse(&method).ok_or_else(|| corrupt(COLUMN, format!("method '{method}'")))?,
                path: text_of(o, "path")?,
                request_schema: schema(o, "request_schema")?,
                response_schema: schema(o, "response_schema")?,
                idempotent: o.get("idempotent").and_then(Value::as_bool).unwrap_or(false),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(InterfaceSpec {
        upstream: text_of(&v, "upstream")?,
        upstream_ca_pem: text_of(&v, "upstream_ca_pem")?,
        operations,
        timeout_ms: number(&v, "timeout_ms")?,
        rate_per_minute: number(&v, "rate_per_minute")?,
        max_concurrency: number(&v, "max_concurrency")?,
        // Absent from specifications stored before gRPC upstreams were taken.
        descriptor_set: match v.get("descriptor_set").and_then(Value::as_str) {
            None => Vec::new(),
            Some(text) => BASE64
                .decode(text)
                .map_err(|e| corrupt(COLUMN, format!("descriptor_set: {e}")))?,
        },
    })
}

pub(crate) fn interface_not_found(code: &str) -> Error {
    Error::NotFound(format!("interface {}", text::shorten(code, 64)))
}

pub(crate) const INTERFACE_COLUMNS: &str =
    "code, provider_code, spec, enabled, disabled_reason, registered_at, updated_at";

/// The one implementation of [`crate::InterfaceStore`], for either backend: the SQL is the same
/// text on both (the query builder writes each engine's placeholders), so it is written once.
/// `$read` and `$write` name the pools of the store type to read and write with.
macro_rules! interface_store {
    ($store:ty, $db:ty, $read:ident, $write:ident) => {
        #[async_trait::async_trait]
        impl crate::InterfaceStore for $store {
            async fn put_interface(
                &self,
                code: &str,
                provider_code: &str,
                spec: &xinqiao_domain::interface::InterfaceSpec,
                at: chrono::DateTime<chrono::Utc>,
            ) -> xinqiao_domain::Result<xinqiao_domain::interface::Interface> {
                let at = crate::interface::stored_time(at);
                let mut query = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO interfaces (code, provider_code, spec, enabled, disabled_reason, registered_at, updated_at) VALUES (",
                );
                query.push_bind(code).push(", ").push_bind(provider_code).push(", ");
                query.push_bind(crate::interface::spec_json(spec)?).push(", ").push_bind(true);
                query.push(", '', ").push_bind(at).push(", ").push_bind(at);
                query.push(
                    ") ON CONFLICT (code) DO UPDATE SET provider_code = excluded.provider_code, spec = excluded.spec, \
                     enabled = excluded.enabled, disabled_reason = '', updated_at = excluded.updated_at RETURNING ",
                );
                query.push(crate::interface::INTERFACE_COLUMNS);
                let row = query.build().fetch_one(&self.$write).await.map_err(crate::error::db_error)?;
                crate::interface::interface(&row)
            }

            async fn get_interface(&self, code: &str) -> xinqiao_domain::Result<Option<xinqiao_domain::interface::Interface>> {
                let mut query = sqlx::QueryBuilder::<$db>::new("SELECT ");
                query.push(crate::interface::INTERFACE_COLUMNS).push(" FROM interfaces WHERE code = ").push_bind(code);
                let row = query.build().fetch_optional(&self.$read).await.map_err(crate::error::db_error)?;
                row.as_ref().map(crate::interface::interface).transpose()
            }

            async fn list_interfaces(
                &self,
                provider: Option<&str>,
                after: Option<&str>,
                limit: u32,
            ) -> xinqiao_domain::Result<Vec<xinqiao_domain::interface::Interface>> {
                let mut query = sqlx::QueryBuilder::<$db>::new("SELECT ");
                query.push(crate::interface::INTERFACE_COLUMNS).push(" FROM interfaces WHERE 1 = 1");
                if let Some(provider) = provider {
                    query.push(" AND provider_code = ").push_bind(provider);
                }
                if let Some(after) = after {
                    query.push(" AND code > ").push_bind(after);
                }
                query.push(" ORDER BY code LIMIT ").push_bind(i64::from(limit));
                let rows = query.build().fetch_all(&self.$read).await.map_err(crate::error::db_error)?;
                rows.iter().map(crate::interface::interface).collect()
            }

            async fn disable_interface(
                &self,
                code: &str,
                reason: &str,
                at: chrono::DateTime<chrono::Utc>,
            ) -> xinqiao_domain::Result<xinqiao_domain::interface::Interface> {
                let mut query = sqlx::QueryBuilder::<$db>::new("UPDATE interfaces SET enabled = ");
                query.push_bind(false).push(", disabled_reason = ").push_bind(reason);
                query.push(", updated_at = ").push_bind(crate::interface::stored_time(at));
                query.push(" WHERE code = ").push_bind(code).push(" RETURNING ");
                query.push(crate::interface::INTERFACE_COLUMNS);
                let row = query.build().fetch_optional(&self.$write).await.map_err(crate::error::db_error)?;
                row.as_ref()
                    .map(crate::interface::interface)
                    .transpose()?
                    .ok_or_else(|| crate::interface::interface_not_found(code))
            }
        }
    };
}
pub(crate) use interface_store;

/// Times are kept to the microsecond, which both engines store exactly.
pub(crate) fn stored_time(at: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    use chrono::Timelike;
    at.with_nanosecond(at.nanosecond() / 1_000 * 1_000).unwrap_or(at)
}

/// An interface from a row of either backend.
pub(crate) fn interface<R>(row: &R) -> Result<xinqiao_domain::interface::Interface>
where
    R: sqlx::Row,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> chrono::DateTime<chrono::Utc>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let get_err = crate::error::db_error;
    let spec: String = row.try_get("spec").map_err(get_err)?;
    Ok(xinqiao_domain::interface::Interface {
        code: row.try_get("code").map_err(get_err)?,
        provider_code: row.try_get("provider_code").map_err(get_err)?,
        spec: parse_spec(&spec)?,
        enabled: row.try_get("enabled").map_err(get_err)?,
        disabled_reason: row.try_get("disabled_reason").map_err(get_err)?,
        registered_at: row.try_get("registered_at").map_err(get_err)?,
        updated_at: row.try_get("updated_at").map_err(get_err)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_specification_reads_back_as_written() {
        let spec = InterfaceSpec {
            upstream: "https://h:1/x".into(),
            upstream_ca_pem: "-----BEGIN CERTIFICATE-----\n".into(),
            operations: vec![Operation {
                name: "verify".into(),
                method: Method::Get,
                path: "/v".into(),
                request_schema: SchemaRef {
                    subject: "a".into(),
                    version: 2,
                },
                response_schema: SchemaRef {
                    subject: "b".into(),
                    version: 3,
                },
                idempotent: true,
            }],
            timeout_ms: 100,
            rate_per_minute: 60,
            max_concurrency: 4,
            descriptor_set: vec![0, 10, 255],
        };
        assert_eq!(parse_spec(&spec_json(&spec).expect("encodes")).expect("parses"), spec);
        // Stored before gRPC upstreams: no descriptors.
        let mut older: Value = serde_json::from_str(&spec_json(&spec).expect("encodes")).expect("json");
        older.as_object_mut().expect("object").remove("descriptor_set");
        assert!(
            parse_spec(&older.to_string())
                .expect("parses")
                .descriptor_set
                .is_empty()
        );
        assert!(parse_spec("{}").is_err());
        assert!(parse_spec("not json").is_err());
    }
}
