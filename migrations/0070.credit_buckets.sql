-- Credit buckets: every grant becomes a bucket with its own expiry, and every ledger row
-- that moves a bucket's credits names it. The ledger stays the truth (balance = Σ delta);
-- a bucket's `remaining` is its grant minus what was drawn from it, cached like
-- subscriptions.credits_remaining and written in the same transaction.
--
-- Existing balances become one `opening` bucket per account, expiring when the account's
-- current period ends (what the old rules did to a leftover balance at the renewal). The
-- ledger gets two rows per such account: the balance closed out of the bucket-less
-- history (-n) and opened into the bucket (+n), so Σ ledger is unchanged and, from here
-- on, Σ ledger = Σ bucket remainders for every account.
-- depends: 0040.job_notes

/** A grant of credits that is spent, expires, rolls over or is clawed back as one. Each user sees only their own; written only by service functions. */
create table credit_buckets (
  id           uuid primary key default gen_random_uuid(),
  user_id      uuid not null references users (id) on delete cascade,
  -- what granted it: the statement and the reporting views group by this
  source       text not null check (source in ('signup', 'plan', 'upgrade', 'renewal', 'rollover', 'pack',
                                                'referral', 'operator', 'refund', 'opening')),
  -- what was granted
  amount       integer not null check (amount > 0),
  -- what is left to spend (refunds put drawn credits back, so it never exceeds the grant)
  remaining    integer not null check (remaining between 0 and amount),
  -- null: never expires
  expires_at   timestamptz,
  -- the paid plan whose allowance this is: only such buckets roll over, once, at a renewal
  plan_tier    text references plans (tier),
  -- set when a renewal has carried (part of) this bucket's unused credits forward
  rolled_over  boolean not null default false,
  -- what the expiry took, and when it was recorded (the ledger row is dated at expires_at)
  expired      integer not null default 0 check (expired >= 0),
  expired_at   timestamptz,
  -- what refunds and disputes of its purchase took back (a refunded credit that returns
  -- to such a bucket is taken back at once)
  clawed_back  integer not null default 0 check (clawed_back >= 0),
  created_at   timestamptz not null default now()
);
-- the spend's pick: this user's live buckets, soonest expiry first (never-expiring last), then oldest
create index credit_buckets_spend_order_idx on credit_buckets (user_id, expires_at, created_at, id)
  where remaining > 0;
-- the expiry job's scan
create index credit_buckets_due_idx on credit_buckets (expires_at) where remaining > 0 and expires_at is not null;

-- The ledger's new column, its foreign key and its wider reason check are added NOT VALID
-- here (checked for every new row at once) and validated, with its index built
-- concurrently, by 0073, outside this transaction: the ledger is the busiest table, and a
-- validation or index build inside it would hold off every spend while it scans.
alter table credit_ledger add column bucket_id uuid;
alter table credit_ledger add constraint credit_ledger_bucket_id_fkey foreign key (bucket_id)
  references credit_buckets (id) not valid;

alter table credit_ledger drop constraint credit_ledger_reason_check;
alter table credit_ledger add constraint credit_ledger_reason_check check (reason in
  ('signup_grant', 'render', 'refund', 'renewal', 'expiry', 'plan_grant', 'admin_grant', 'upgrade_grant',
   'rollover', 'pack_grant', 'referral_grant', 'clawback', 'opening'))
  not valid;

-- the owner lifts FORCE for this transaction only (sql/20_tenancy.sql forces it again)
alter table subscriptions no force row level security;
alter table credit_ledger no force row level security;
create temporary table opening_balances on commit drop as
  select s.user_id, s.credits_remaining as balance, s.current_period_end as expires_at,
         case when s.tier <> 'free' then s.tier end as plan_tier, gen_random_uuid() as bucket_id
    from subscriptions s
   where s.credits_remaining > 0;
insert into credit_buckets (id, user_id, source, amount, remaining, expires_at, plan_tier)
select o.bucket_id, o.user_id, 'opening', o.balance, o.balance, o.expires_at, o.plan_tier from opening_balances o;
insert into credit_ledger (user_id, delta, reason, idempotency_key, bucket_id)
select o.user_id, -o.balance, 'opening', 'opening:close:' || o.bucket_id, null from opening_balances o
union all
select o.user_id, o.balance, 'opening', 'opening:' || o.bucket_id, o.bucket_id from opening_balances o;
alter table subscriptions force row level security;
alter table credit_ledger force row level security;
