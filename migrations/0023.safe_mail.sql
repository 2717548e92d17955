-- Mails are safe: a name is one line of printable text (it appears in mail headers), and
-- a mail that cannot be built is recorded as failed once instead of retried for ever.
-- depends: 0022.sign_in_throttle

-- the owner lifts FORCE for this transaction only (sql/20_tenancy.sql forces it again)
alter table users no force row level security;
-- names stored before the rule: each run of control or line-breaking characters becomes a space
update users
   set full_name = nullif(btrim(regexp_replace(full_name, '[\u0001-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]+', ' ', 'g')), '')
 where full_name ~ '[\u0001-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]';
alter table users force row level security;
alter table users add constraint users_full_name_one_printable_line
  check (full_name !~ '[\u0001-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]');

-- set when a mail could not be built (a bug, not a network problem): it is never retried
alter table email_outbox add column failed_at timestamptz;
