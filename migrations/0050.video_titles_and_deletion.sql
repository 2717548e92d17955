-- Videos their owners rename and delete (sql/41_videos.sql). A deleted video keeps its
-- job row, marked deleted_at, because the ledger and usage rows that paid for it name the
-- job and are append-only; its files are removed and it leaves every list.
-- depends: 0040.job_notes

alter table jobs
  -- the owner's name for the video; null shows the topic
  add column if not exists title text,
  -- when the owner deleted it; its files are gone, its credit stays spent
  add column if not exists deleted_at timestamptz;
-- NOT VALID here, validated by 0051 in a transaction of its own (a lock that lets reads
-- and writes go on); new and updated rows are checked from now on
alter table jobs add constraint jobs_title_length check (length(title) between 1 and 200) not valid;
