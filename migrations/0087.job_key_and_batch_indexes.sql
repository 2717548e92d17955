-- What 0081 and 0084 left for after the release transaction, so nothing holds the jobs
-- table while it runs: their constraints validated (a scan under a lock that lets reads
-- and writes go on; validating a valid constraint does nothing, so a rerun is safe) and
-- their indexes built concurrently (each dropped first, so a retry after a failed build,
-- which leaves an invalid index, starts clean).
-- depends: 0084.job_batches 0086.referrals
-- transactional: false

-- squawk-ignore prefer-robust-stmts
alter table jobs validate constraint jobs_api_key_id_fkey;
-- squawk-ignore prefer-robust-stmts
alter table jobs validate constraint jobs_batch_id_fkey;
-- squawk-ignore prefer-robust-stmts
alter table jobs validate constraint jobs_batch_position_check;
-- a budget counts its key's jobs of the month
drop index concurrently if exists jobs_api_key_created_idx;
create index concurrently if not exists jobs_api_key_created_idx on jobs (api_key_id, created_at)
  where api_key_id is not null;
-- one job per place in a batch
drop index concurrently if exists jobs_batch_position_key;
create unique index concurrently if not exists jobs_batch_position_key on jobs (batch_id, batch_position)
  where batch_id is not null;
