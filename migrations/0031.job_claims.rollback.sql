drop index concurrently if exists jobs_unfinished_idx;
alter table jobs drop column if exists seen_at;
