-- When each account last spent a credit on a video. It sits beside the balance because
-- the spend already updates that row (so keeping it costs no extra write), and it lets
-- reporting.user_summary rank users by activity without aggregating every job.
-- depends: 0008.queue_polling

alter table subscriptions
  -- time of the account's newest job (set by app.spend_credit_and_create_job)
  add column last_job_at timestamptz;

-- The backfill reads every account's rows: the owner lifts FORCE for this transaction
-- only (sql/20_tenancy.sql forces it again on every migrate).
alter table subscriptions no force row level security;
alter table jobs no force row level security;
update subscriptions s
   set last_job_at = newest.created_at
  from (select user_id, max(created_at) as created_at from jobs group by user_id) newest
 where newest.user_id = s.user_id;
alter table subscriptions force row level security;
alter table jobs force row level security;
