alter table login_attempts drop column kind;
drop table email_outbox;
drop table email_tokens;
