drop index concurrently if exists jobs_batch_position_key;
alter table jobs drop column if exists batch_position, drop column if exists batch_id;
