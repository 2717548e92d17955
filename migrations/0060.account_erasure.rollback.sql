alter table users drop column deleted_at;
