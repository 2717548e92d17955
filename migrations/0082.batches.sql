-- Batch generation (sql/43_batches.sql): up to 50 videos bought in one transaction. The
-- jobs' link to their batch is 0084 (built without holding the jobs table).
-- depends: 0081.api_key_scopes

/** A batch of render jobs made by one request. Each user sees only their own. */
create table batches (
  id          uuid primary key default gen_random_uuid(),
  user_id     uuid not null references users (id) on delete cascade,
  item_count  integer not null check (item_count between 1 and 50),
  created_at  timestamptz not null default now()
);
create index batches_user_id_created_idx on batches (user_id, created_at desc);
