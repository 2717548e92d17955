-- Idempotency-Key on the API's POSTs (sql/42_idempotency.sql): the first request with a
-- key is carried out and its answer kept here for 24 hours; a retry with the same key
-- gets that answer back instead of being carried out again. The row is written in the
-- same transaction as the work it stands for, so the two commit together or not at all.
-- depends: 0040.job_notes

/** Answers kept for retries. Each user sees only their own keys. */
create table idempotency_keys (
  user_id          uuid not null references users (id) on delete cascade,
  -- the client's Idempotency-Key header
  key              text not null check (length(key) between 1 and 255),
  -- what was asked: the same key with another request is refused (422)
  method           text not null,
  path             text not null,
  request_hash     bytea not null,
  -- the answer (a 2xx), null while the first request is still running; body null when
  -- it carried a secret shown only once
  status           integer check (status between 200 and 299),
  response_body    text,
  response_headers jsonb not null default '{}',
  created_at       timestamptz not null default now(),
  expires_at       timestamptz not null default now() + interval '24 hours',
  primary key (user_id, key)
);
-- the expiry sweep
create index idempotency_keys_expires_at_idx on idempotency_keys (expires_at);
