-- the deleted successes stay gone; every remaining login row is a failure
drop index login_attempts_ip_failures_idx;
drop index login_attempts_email_failures_idx;
alter table login_attempts add column succeeded boolean not null default false;
alter table login_attempts no force row level security;
update login_attempts set succeeded = true where kind = 'reset';
alter table login_attempts force row level security;
create index login_attempts_email_successes_idx on login_attempts (lower(email), attempted_at)
  where kind = 'login' and succeeded;
create index login_attempts_email_failures_idx on login_attempts (lower(email), attempted_at)
  where kind = 'login' and not succeeded;
create index login_attempts_ip_failures_idx on login_attempts (client_ip, attempted_at)
  where kind = 'login' and not succeeded;
