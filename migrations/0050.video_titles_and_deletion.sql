-- Videos their owners rename and delete (sql/41_videos.sql). A deleted video keeps its
-- job row, marked deleted_at, because the ledger and usage rows that paid for it name the
-- job and are append-only; its files are removed and it leaves every list.
-- depends: 0040.job_notes

alter table jobs
  -- the owner's name for the video; null shows the topic
  add column if not exists title text,
  -- when the owner deleted it; its files are gone, its credit stays spent
  add column if not exists deleted_at timestamptz;
-- NOT VALID first, then VALIDATE: existing rows are checked under a lock that lets
-- reads and writes go on, and the new column is null in every one of them anyway
alter table jobs drop constraint if exists jobs_title_length;
alter table jobs add constraint jobs_title_length check (length(title) between 1 and 200) not valid;
alter table jobs validate constraint jobs_title_length;
