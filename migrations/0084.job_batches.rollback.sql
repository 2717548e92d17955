-- the sql/ layer's batch trigger names batch_id in its WHEN clause
drop trigger if exists batch_on_job_finished on jobs;
alter table jobs drop column if exists batch_position, drop column if exists batch_id;
