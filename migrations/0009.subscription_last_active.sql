-- When each account was last active: its last sign-in or video request. It sits beside
-- the balance because the spend already updates that row (so it costs the hot path no
-- extra write), and with it reporting.user_summary ranks users by activity from one
-- table instead of joining every user and aggregating every job.
-- depends: 0008.queue_polling

alter table subscriptions
  -- set by app.login_succeeded and app.spend_credit_and_create_job
  add column last_active_at timestamptz;

-- The backfill reads every account's rows: the owner lifts FORCE for this transaction
-- only (sql/20_tenancy.sql forces it again on every migrate).
alter table subscriptions no force row level security;
alter table users no force row level security;
alter table jobs no force row level security;
update subscriptions s
   set last_active_at = greatest(u.last_login, (select max(j.created_at) from jobs j where j.user_id = s.user_id))
  from users u
 where u.id = s.user_id;
alter table subscriptions force row level security;
alter table users force row level security;
alter table jobs force row level security;
