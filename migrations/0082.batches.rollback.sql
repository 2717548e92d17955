drop index if exists jobs_batch_position_key;
alter table jobs drop constraint if exists jobs_batch_position_with_batch,
  drop column if exists batch_position, drop column if exists batch_id;
drop table if exists batches;
