-- Email: single-use tokens (verify address, reset password) and the outbox that makes
-- each mail go out once per event.
-- depends: 0006.subscription_field_clocks

/** Single-use links. Only a SHA-256 of the token is kept. */
create table email_tokens (
  id          uuid primary key default gen_random_uuid(),
  user_id     uuid not null references users (id) on delete cascade,
  purpose     text not null check (purpose in ('verify', 'reset')),
  token_hash  bytea not null unique,
  created_at  timestamptz not null default now(),
  expires_at  timestamptz not null,
  used_at     timestamptz
);
create index email_tokens_user_idx on email_tokens (user_id, purpose);

/** Every mail we mean to send, once per dedupe key; the worker sends and stamps it. */
create table email_outbox (
  id          uuid primary key default gen_random_uuid(),
  user_id     uuid not null references users (id) on delete cascade,
  -- verify | reset | receipt | payment_failed
  kind        text not null,
  -- one mail per key: 'receipt:<invoice>', 'verify:<request>', ...
  dedupe_key  text not null unique,
  data        jsonb not null default '{}',
  created_at  timestamptz not null default now(),
  sent_at     timestamptz,
  attempts    integer not null default 0,
  last_error  text
);
create index email_outbox_user_kind_idx on email_outbox (user_id, kind, created_at);

-- the login throttle also counts password-reset requests
alter table login_attempts add column kind text not null default 'login' check (kind in ('login', 'reset'));
