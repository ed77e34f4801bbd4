//! The web console's sign-in tokens and sessions (控制台登录). Only hashes are stored; the hub
//! keeps the secrets in the link it prints and the cookie it sets.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use xinqiao_domain::Result;

/// A one-time sign-in token, as stored: the hash of the secret in the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInToken {
    pub token_hash: String,
    /// The identity the link signs in as (`Principal`'s text, e.g. `urn:xinqiao:admin:ops`).
    pub principal: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A browser's session, as stored: the hash of the secret in its cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    pub session_hash: String,
    pub principal: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Sign-ins to the web console.
#[async_trait]
pub trait ConsoleStore: Send + Sync {
    async fn create_sign_in_token(&self, token: &SignInToken) -> Result<()>;
    /// Uses a token: the identity it was minted for if it is known, unused and unexpired at `at`;
    /// `None` otherwise. A token is used once, also when several hub nodes race for it.
    async fn redeem_sign_in_token(&self, token_hash: &str, at: DateTime<Utc>) -> Result<Option<String>>;
    async fn create_console_session(&self, session: &ConsoleSession) -> Result<()>;
    /// The session with this hash, if it has not expired at `at` nor been ended.
    async fn get_console_session(&self, session_hash: &str, at: DateTime<Utc>) -> Result<Option<ConsoleSession>>;
    /// Ends a session (signing out). Ending an unknown one is not an error.
    async fn end_console_session(&self, session_hash: &str) -> Result<()>;
    /// Forgets tokens and sessions that expired before `before`; returns how many.
    async fn purge_console(&self, before: DateTime<Utc>) -> Result<u64>;
}

/// The one implementation of [`ConsoleStore`] for either backend (the same SQL text; the query
/// builder writes each engine's placeholders). `$read` and `$write` name the store's pools.
macro_rules! console_store {
    ($store:ty, $db:ty, $read:ident, $write:ident) => {
        #[async_trait::async_trait]
        impl crate::console::ConsoleStore for $store {
            async fn create_sign_in_token(&self, token: &crate::console::SignInToken) -> xinqiao_domain::Result<()> {
                let mut query = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO console_sign_in_tokens (token_hash, principal, created_at, expires_at) VALUES (",
                );
                query.push_bind(&token.token_hash).push(", ").push_bind(&token.principal).push(", ");
                query.push_bind(crate::interface::stored_time(token.created_at)).push(", ");
                query.push_bind(crate::interface::stored_time(token.expires_at)).push(")");
                query.build().execute(&self.$write).await.map_err(crate::error::db_error)?;
                Ok(())
            }

            async fn redeem_sign_in_token(
                &self,
                token_hash: &str,
                at: chrono::DateTime<chrono::Utc>,
            ) -> xinqiao_domain::Result<Option<String>> {
                use sqlx::Row;
                // Marked used whether or not it has expired: one UPDATE decides, so that two nodes
                // racing for one token cannot both win.
                let mut query = sqlx::QueryBuilder::<$db>::new("UPDATE console_sign_in_tokens SET used_at = ");
                query.push_bind(crate::interface::stored_time(at));
                query.push(" WHERE token_hash = ").push_bind(token_hash);
                query.push(" AND used_at IS NULL RETURNING principal, expires_at");
                let row = query.build().fetch_optional(&self.$write).await.map_err(crate::error::db_error)?;
                let Some(row) = row else { return Ok(None) };
                let principal: String = row.try_get("principal").map_err(crate::error::db_error)?;
                let expires_at: chrono::DateTime<chrono::Utc> =
                    row.try_get("expires_at").map_err(crate::error::db_error)?;
                Ok((at < expires_at).then_some(principal))
            }

            async fn create_console_session(
                &self,
                session: &crate::console::ConsoleSession,
            ) -> xinqiao_domain::Result<()> {
                let mut query = sqlx::QueryBuilder::<$db>::new(
                    "INSERT INTO console_sessions (session_hash, principal, created_at, expires_at) VALUES (",
                );
                query.push_bind(&session.session_hash).push(", ").push_bind(&session.principal).push(", ");
                query.push_bind(crate::interface::stored_time(session.created_at)).push(", ");
                query.push_bind(crate::interface::stored_time(session.expires_at)).push(")");
                query.build().execute(&self.$write).await.map_err(crate::error::db_error)?;
                Ok(())
            }

            async fn get_console_session(
                &self,
                session_hash: &str,
                at: chrono::DateTime<chrono::Utc>,
            ) -> xinqiao_domain::Result<Option<crate::console::ConsoleSession>> {
                use sqlx::Row;
                let mut query = sqlx::QueryBuilder::<$db>::new(
                    "SELECT session_hash, principal, created_at, expires_at FROM console_sessions WHERE session_hash = ",
                );
                query.push_bind(session_hash);
                let row = query.build().fetch_optional(&self.$read).await.map_err(crate::error::db_error)?;
                let Some(row) = row else { return Ok(None) };
                let get_err = crate::error::db_error;
                let session = crate::console::ConsoleSession {
                    session_hash: row.try_get("session_hash").map_err(get_err)?,
                    principal: row.try_get("principal").map_err(get_err)?,
                    created_at: row.try_get("created_at").map_err(get_err)?,
                    expires_at: row.try_get("expires_at").map_err(get_err)?,
                };
                Ok((at < session.expires_at).then_some(session))
            }

            async fn end_console_session(&self, session_hash: &str) -> xinqiao_domain::Result<()> {
                let mut query = sqlx::QueryBuilder::<$db>::new("DELETE FROM console_sessions WHERE session_hash = ");
                query.push_bind(session_hash);
                query.build().execute(&self.$write).await.map_err(crate::error::db_error)?;
                Ok(())
            }

            async fn purge_console(&self, before: chrono::DateTime<chrono::Utc>) -> xinqiao_domain::Result<u64> {
                let before = crate::interface::stored_time(before);
                let mut removed = 0;
                for table in ["console_sign_in_tokens", "console_sessions"] {
                    let mut query = sqlx::QueryBuilder::<$db>::new("DELETE FROM ");
                    query.push(table).push(" WHERE expires_at < ").push_bind(before);
                    let done = query.build().execute(&self.$write).await.map_err(crate::error::db_error)?;
                    removed += done.rows_affected();
                }
                Ok(removed)
            }
        }
    };
}
pub(crate) use console_store;
