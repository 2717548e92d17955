-- The batch a job belongs to and its place in the request's list (set together by
-- app.create_batch, sql/43_batches.sql). Not one transaction, so that nothing holds the
-- jobs table: the foreign key is added NOT VALID and validated on its own, the index is
-- built concurrently, and each statement may run again after a failure part way (the DO
-- blocks make the statements that have no IF NOT EXISTS idempotent).
-- depends: 0083.rate_limit_windows
-- transactional: false

alter table jobs
  add column if not exists batch_id uuid,
  add column if not exists batch_position integer check (batch_position between 0 and 49);
do $$
begin
  alter table jobs add constraint jobs_batch_id_fkey foreign key (batch_id) references batches (id)
    on delete set null not valid;
exception when duplicate_object then
  null;  -- a run that failed later added it already
end
$$;
do $$
begin
  alter table jobs validate constraint jobs_batch_id_fkey;
end
$$;
create unique index concurrently if not exists jobs_batch_position_key on jobs (batch_id, batch_position)
  where batch_id is not null;
