-- A sign-in used to record its attempt as a failure and then, once the password checked
-- out, update the row to succeeded: a second row version and two more index entries on
-- every login, and a growing pile of successes that the throttle had to search for the
-- email's last one. Now a success deletes its attempt and the email's last success is
-- users.last_login, which the sign-in stamps anyway; login rows are failures (or
-- attempts still being checked) and `succeeded` goes.
-- depends: 0011.reporting_rollups

-- the owner lifts FORCE for this transaction only (sql/20_tenancy.sql forces it again)
alter table login_attempts no force row level security;
delete from login_attempts where kind = 'login' and succeeded;
alter table login_attempts force row level security;

drop index login_attempts_email_successes_idx;
drop index login_attempts_email_failures_idx;
drop index login_attempts_ip_failures_idx;
alter table login_attempts drop column succeeded;
create index login_attempts_email_failures_idx on login_attempts (lower(email), attempted_at) where kind = 'login';
create index login_attempts_ip_failures_idx on login_attempts (client_ip, attempted_at) where kind = 'login';
