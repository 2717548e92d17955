-- The login throttle looks for the email's last success and counts recent failures per
-- email and per IP. With every attempt in one index per column, each login also walked
-- all recent *successful* attempts from its IP (an office behind one NAT address, or a
-- load test, makes thousands): partial indexes keep each lookup to the rows it counts.
-- depends: 0009.subscription_last_active

drop index login_attempts_email_idx;
drop index login_attempts_ip_idx;
create index login_attempts_email_successes_idx on login_attempts (lower(email), attempted_at)
  where kind = 'login' and succeeded;
create index login_attempts_email_failures_idx on login_attempts (lower(email), attempted_at)
  where kind = 'login' and not succeeded;
create index login_attempts_ip_failures_idx on login_attempts (client_ip, attempted_at)
  where kind = 'login' and not succeeded;
-- the password-reset throttle counts every reset request
create index login_attempts_reset_email_idx on login_attempts (lower(email), attempted_at) where kind = 'reset';
create index login_attempts_reset_ip_idx on login_attempts (client_ip, attempted_at) where kind = 'reset';
