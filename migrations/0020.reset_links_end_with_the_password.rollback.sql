alter table email_outbox drop column canceled_at;
alter table email_tokens drop column revoked_at;
