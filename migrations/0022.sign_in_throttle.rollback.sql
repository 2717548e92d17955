drop index login_attempts_signup_ip_idx;
drop index login_attempts_device_failures_idx;
-- the owner lifts FORCE for this transaction only (sql/20_tenancy.sql forces it again)
alter table login_attempts no force row level security;
delete from login_attempts where kind = 'signup';
alter table login_attempts force row level security;
alter table login_attempts drop constraint login_attempts_kind_check;
alter table login_attempts add constraint login_attempts_kind_check check (kind in ('login', 'reset'));
alter table login_attempts drop column device_id, drop column user_id;
drop table trusted_devices;
