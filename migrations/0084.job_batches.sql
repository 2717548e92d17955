-- The batch a job belongs to and its place in the request's list (set together by
-- app.create_batch, sql/43_batches.sql). In the release transaction, because the sql/
-- layer uses these columns; nothing here scans jobs (new columns without defaults, the
-- foreign key and the range check added NOT VALID). 0087 validates them and builds the
-- unique index concurrently, after the transaction.
-- depends: 0083.rate_limit_windows

alter table jobs add column batch_id uuid, add column batch_position integer;
alter table jobs add constraint jobs_batch_position_check check (batch_position between 0 and 49) not valid;
alter table jobs add constraint jobs_batch_id_fkey foreign key (batch_id) references batches (id)
  on delete set null not valid;
