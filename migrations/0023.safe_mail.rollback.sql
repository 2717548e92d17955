alter table email_outbox drop column failed_at;
alter table users drop constraint users_full_name_one_printable_line;
