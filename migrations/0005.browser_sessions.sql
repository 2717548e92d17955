-- Server-side browser sessions, so logout and password changes end a session even
-- when someone kept a copy of the cookie.
-- depends: 0004.pgqueuer

/** A signed-in browser. The cookie carries a random token; only its SHA-256 is kept. */
create table browser_sessions (
  id          uuid primary key default gen_random_uuid(),
  user_id     uuid not null references users (id) on delete cascade,
  token_hash  bytea not null unique,
  created_at  timestamptz not null default now(),
  expires_at  timestamptz not null,
  revoked_at  timestamptz
);
create index browser_sessions_user_id_idx on browser_sessions (user_id);
