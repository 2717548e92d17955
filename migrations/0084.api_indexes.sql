-- The jobs indexes and constraint checks of 0081 and 0082, done without holding the jobs
-- table: constraints added NOT VALID are validated (a scan that lets writes through), and
-- the indexes are built concurrently. Not one transaction, so each statement is written
-- to run again after a failure part way.
-- depends: 0083.rate_limit_windows
-- transactional: false

do $$
begin
  alter table jobs validate constraint jobs_api_key_id_fkey;
  alter table jobs validate constraint jobs_batch_id_fkey;
  alter table jobs validate constraint jobs_batch_position_check;
end
$$;
-- a key's budget counts its jobs of the month
create index concurrently if not exists jobs_api_key_created_idx on jobs (api_key_id, created_at)
  where api_key_id is not null;
-- a batch's jobs in order; a place in a batch is taken once
create unique index concurrently if not exists jobs_batch_position_key on jobs (batch_id, batch_position)
  where batch_id is not null;
