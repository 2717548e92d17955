alter table jobs drop column if exists batch_position, drop column if exists batch_id;
