alter table jobs drop constraint if exists jobs_title_length;
alter table jobs drop column if exists deleted_at, drop column if exists title;
