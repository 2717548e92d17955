-- Videos their owners rename and delete (sql/41_videos.sql). A deleted video keeps its
-- job row, marked deleted_at, because the ledger and usage rows that paid for it name the
-- job and are append-only; its files are removed and it leaves every list.
-- depends: 0040.job_notes
-- transactional: false

-- each statement commits on its own, so the ACCESS EXCLUSIVE lock the first two need is held
-- for an instant, and the check is validated under a lock that lets reads and writes go on
-- (validating in the same transaction would keep the exclusive lock through the scan)
alter table jobs
  -- the owner's name for the video; null shows the topic
  add column if not exists title text,
  -- when the owner deleted it; its files are gone, its credit stays spent
  add column if not exists deleted_at timestamptz;
do $$
begin
  if not exists (select 1 from pg_constraint where conname = 'jobs_title_length' and conrelid = 'public.jobs'::regclass)
  then
    alter table jobs add constraint jobs_title_length check (length(title) between 1 and 200) not valid;
  end if;
end
$$;
-- validating a constraint that is already valid does nothing, so a rerun is safe
-- squawk-ignore prefer-robust-stmts
alter table jobs validate constraint jobs_title_length;
