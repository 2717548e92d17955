drop index login_attempts_reset_ip_idx;
drop index login_attempts_reset_email_idx;
drop index login_attempts_ip_failures_idx;
drop index login_attempts_email_failures_idx;
drop index login_attempts_email_successes_idx;
create index login_attempts_email_idx on login_attempts (lower(email), attempted_at);
create index login_attempts_ip_idx on login_attempts (client_ip, attempted_at);
