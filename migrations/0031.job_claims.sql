-- Fenced job claims and the stranded-job sweeper (sql/40_jobs.sql). Each claim of a job
-- bumps jobs.attempts, which is the claim's token; every later call of that worker names
-- it, so a worker whose claim was superseded is refused. seen_at is the holder's last sign
-- of life: the sweeper re-enqueues a job only when it has no live queue entry and nobody
-- has touched it for a while. The partial index keeps the sweep to the unfinished jobs.
-- depends: 0030.ledger_note
-- transactional: false

alter table jobs
  -- last claim, progress report or retry of the worker holding the job; null until claimed
  add column if not exists seen_at timestamptz;
create index concurrently if not exists jobs_unfinished_idx on jobs (created_at) where status in ('queued', 'processing');
