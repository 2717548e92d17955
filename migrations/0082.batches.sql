-- Batch generation (sql/43_batches.sql): up to 50 videos bought in one transaction. A
-- job names its batch and its place in the request's list (set together by
-- app.create_batch). The foreign key is added NOT VALID here and validated by 0084,
-- which also builds the jobs index, concurrently.
-- depends: 0081.api_key_scopes

/** A batch of render jobs made by one request. Each user sees only their own. */
create table batches (
  id          uuid primary key default gen_random_uuid(),
  user_id     uuid not null references users (id) on delete cascade,
  item_count  integer not null check (item_count between 1 and 50),
  created_at  timestamptz not null default now()
);
create index batches_user_id_created_idx on batches (user_id, created_at desc);

alter table jobs
  add column batch_id uuid,
  add column batch_position integer;
alter table jobs add constraint jobs_batch_id_fkey foreign key (batch_id) references batches (id)
  on delete set null not valid;
alter table jobs add constraint jobs_batch_position_check check (batch_position between 0 and 49) not valid;
