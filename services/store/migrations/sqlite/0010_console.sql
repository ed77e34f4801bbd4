-- The web console's sign-ins. A sign-in link carries a one-time token minted for one identity
-- (ConsoleService.CreateSignInLink); a session is what a browser holds after signing in. Only
-- SHA-256 hashes of tokens and session secrets are stored: a copy of the database signs nobody in.
CREATE TABLE IF NOT EXISTS console_sign_in_tokens (
    token_hash TEXT NOT NULL PRIMARY KEY,
    principal  TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at    TEXT
) STRICT;

CREATE INDEX IF NOT EXISTS console_sign_in_tokens_by_expiry ON console_sign_in_tokens (expires_at);

CREATE TABLE IF NOT EXISTS console_sessions (
    session_hash TEXT NOT NULL PRIMARY KEY,
    principal    TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL
) STRICT;

CREATE INDEX IF NOT EXISTS console_sessions_by_expiry ON console_sessions (expires_at);
