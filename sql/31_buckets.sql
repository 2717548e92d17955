-- Credit buckets: where each credit came from, when it expires, and which one a spend takes.
--
-- Every grant opens a bucket (source, amount, expiry); every ledger row that moves a
-- bucket's credits names it (credit_ledger.bucket_id). Invariants, per account, tested in
-- tests/test_credit_buckets*.py:
--   subscriptions.credits_remaining = Σ ledger.delta = Σ bucket.remaining
--   bucket.remaining = Σ ledger.delta of the rows that name the bucket
-- (accounts that had a balance before buckets existed got an `opening` pair of rows in
-- migrations/0070, so the bucket-less rows of each account sum to zero).
--
-- Ordering: every function that changes an account's buckets first locks that account's
-- subscriptions row (the spend does so with its UPDATE), so bucket changes of one account
-- happen one after the other, and each sees the last one's result.
--
-- Spend order: soonest expiry first, never-expiring last, then oldest bucket, then id.
--
-- Expiry: a bucket's credits stop counting at its expires_at, at read time (every balance
-- below subtracts what is due but not yet swept, and the spend never draws from it); the
-- worker's `expire_credits` schedule then records the expiry, once per bucket (ledger key
-- `expiry:<bucket>`, dated at expires_at, so the ledger alone answers past balances).
--
-- Idempotency keys written here (more in 50_billing.sql):
--   expiry:<bucket>          what a bucket had left at its expiry
--   expiry:refund:<job>      a refund into a bucket that had already expired, expired at once
--   rollover:<renewal key>:<n>  the unused plan credits a renewal carried into the new period
--                              (n: credits it had carried before; a late grant adds more)
--   clawback:refund:<job>    a refund into a bucket whose purchase was taken back, taken back at once
set local role sg_owner;

select app._ensure_forced_row_security('public.credit_buckets');
select app._ensure_policy('public.credit_buckets', 'users reach only their own rows', $policy$
  create policy "users reach only their own rows" on public.credit_buckets for all to sg_app, sg_owner
  using (user_id = (select app.current_user_id()))
  with check (user_id = (select app.current_user_id()))
$policy$);
select app._ensure_policy('public.credit_buckets', 'service functions reach every row', $policy$
  create policy "service functions reach every row" on public.credit_buckets for all to sg_service
  using (true) with check (true)
$policy$);
select app._ensure_policy('public.credit_buckets', 'reporting reads every row', $policy$
  create policy "reporting reads every row" on public.credit_buckets for select to sg_reporting using (true)
$policy$);
grant select on public.credit_buckets to sg_app;
grant select, insert, update on public.credit_buckets to sg_service;
grant select (id, user_id, source, amount, remaining, expires_at, rolled_over, expired, expired_at, clawed_back,
              created_at)
  on public.credit_buckets to sg_reporting;
grant select (bucket_id, user_id) on public.credit_ledger to sg_reporting;

/**
 * Credits of `uid` that have expired (expires_at <= `at`) but that the expiry job has not
 * recorded yet: every balance read subtracts them, so none is overstated between the
 * boundary and the job. Internal; callers pass their own, already-authorised user.
 */
create or replace function app._unswept_expired(uid uuid, at timestamptz default now()) returns integer
language sql stable
-- (no SET clause: that would stop Postgres inlining it into the spend's query)
as $$
  select coalesce(sum(b.remaining), 0)::integer
    from public.credit_buckets b
   where b.user_id = uid and b.expired_at is null and b.expires_at <= at and b.remaining > 0
$$;
-- the web role's balance reads call it as themselves, so RLS still confines it to the caller
grant execute on function app._unswept_expired(uuid, timestamptz) to sg_app;

/**
 * The current user's plan and spendable balance (expired credits never count). Called by
 * the web process; RLS limits it to the caller's own subscription.
 */
create or replace function app.credit_balance()
returns table (tier text, status text, credits_total integer, credits_used integer,
               credits_remaining integer, renews_at timestamptz)
language sql stable
as $$
  select s.tier, s.status, s.credits_total,
         greatest(s.credits_total - s.credits_remaining, 0),
         s.credits_remaining - app._unswept_expired(s.user_id), s.current_period_end
    from public.subscriptions s
   where s.user_id = app.require_user_id()
$$;
grant execute on function app.credit_balance() to sg_app;

/**
 * The current user's buckets with credits left and not expired, in the order spends take
 * them. `expiring_soon`: the bucket expires within `soon` (7 days by default).
 */
create or replace function app.credit_buckets(soon interval default interval '7 days')
returns table (id uuid, source text, amount integer, remaining integer, expires_at timestamptz,
               created_at timestamptz, expiring_soon boolean)
language sql stable
as $$
  select b.id, b.source, b.amount, b.remaining, b.expires_at, b.created_at,
         coalesce(b.expires_at <= now() + soon, false)
    from public.credit_buckets b
   where b.user_id = app.require_user_id() and b.expired_at is null and b.remaining > 0
     and (b.expires_at is null or b.expires_at > now())
   order by b.expires_at nulls last, b.created_at, b.id
$$;
grant execute on function app.credit_buckets(interval) to sg_app;

/**
 * The current user's balance at a past moment, from the ledger alone: the sum of every
 * movement up to and including `at`, less credits whose expiry had come by then but is not
 * recorded yet (expiry rows are dated at the expiry, so once recorded they count at the
 * boundary). Raises P0422 for a missing moment.
 */
create or replace function app.credit_balance_at(at timestamptz) returns integer
language plpgsql stable
as $$
declare
  uid uuid := app.require_user_id();
begin
  if at is null or not isfinite(at) then
    raise exception 'at must be a timestamp' using errcode = 'P0422';
  end if;
  return (select coalesce(sum(l.delta), 0) from public.credit_ledger l
           where l.user_id = uid and l.created_at <= at)::integer
         - app._unswept_expired(uid, least(at, now()));
end
$$;
grant execute on function app.credit_balance_at(timestamptz) to sg_app;

/**
 * Every credit movement of the current user from `since` (inclusive) to `until`
 * (exclusive), oldest first, with the bucket it moved (source, expiry), the job it paid
 * for, and the balance after it (the running sum of the whole ledger, so a window that
 * starts mid-history still shows true balances). Movements of one moment are listed
 * debits first. At most `max_rows` (1–5000) rows. RLS confines it to the caller.
 */
create or replace function app.credit_movements(since timestamptz default '-infinity',
                                               until timestamptz default 'infinity',
                                               max_rows integer default 1000)
returns table (id uuid, created_at timestamptz, reason text, delta integer, balance_after bigint,
               bucket_id uuid, bucket_source text, bucket_expires_at timestamptz, job_id uuid, topic text,
               note text)
language plpgsql stable
as $$
#variable_conflict use_column
declare
  uid uuid := app.require_user_id();
begin
  if since is null or until is null or since >= until then
    raise exception 'from must be before to' using errcode = 'P0422';
  end if;
  if max_rows is null or max_rows not between 1 and 5000 then
    raise exception 'max_rows must be from 1 to 5000' using errcode = 'P0422';
  end if;
  return query
    select m.id, m.created_at, m.reason, m.delta, m.balance_after, m.bucket_id, b.source, b.expires_at,
           m.job_id, j.topic, m.note
      from (select l.*, sum(l.delta) over (order by l.created_at, l.delta, l.id) as balance_after
              from public.credit_ledger l
             where l.user_id = uid and l.created_at < until) m
      left join public.credit_buckets b on b.id = m.bucket_id
      left join public.jobs j on j.id = m.job_id
     where m.created_at >= since
     order by m.created_at, m.delta, m.id
     limit max_rows;
end
$$;
grant execute on function app.credit_movements(timestamptz, timestamptz, integer) to sg_app;

-- Cross-tenant movements below run as sg_service.
set local role sg_service;

/**
 * Locks `uid`'s balance row until the transaction ends, so that account's bucket changes
 * happen one after the other. P0404 when the account has no subscription.
 */
create or replace function app._lock_balance(uid uuid) returns integer
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  balance integer;
begin
  select s.credits_remaining into balance from public.subscriptions s where s.user_id = uid for update;
  if not found then
    raise exception 'no subscription for user %', uid using errcode = 'P0404';
  end if;
  return balance;
end
$$;

/**
 * Opens a bucket of `amount` credits for `uid` and records its grant in the ledger under
 * `idempotency_key`; returns the bucket, or null (changing nothing) when the key was
 * already used. `created_at` is how old its credits are, for the spend order's "then
 * oldest" (a rollover's are as old as the credits it carries). The caller holds the balance lock (app._lock_balance), which makes the
 * key check and the insert one step.
 */
create or replace function app._open_bucket(uid uuid, amount integer, reason text, idempotency_key text,
                                            source text, expires_at timestamptz, plan_tier text default null,
                                            stripe_event_id text default null, period_start timestamptz default null,
                                            note text default null, job_id uuid default null,
                                            created_at timestamptz default now())
returns uuid
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  bucket uuid;
begin
  if exists (select 1 from public.credit_ledger l where l.idempotency_key = _open_bucket.idempotency_key) then
    return null;
  end if;
  insert into public.credit_buckets as b (user_id, source, amount, remaining, expires_at, plan_tier, created_at)
  values (uid, source, amount, amount, expires_at, plan_tier, created_at)
  returning b.id into bucket;
  insert into public.credit_ledger (user_id, delta, reason, idempotency_key, stripe_event_id, period_start, note,
                                    bucket_id, job_id)
  values (uid, amount, reason, idempotency_key, stripe_event_id, period_start, note, bucket, job_id);
  update public.subscriptions s
     set credits_remaining = s.credits_remaining + amount, credits_total = s.credits_total + amount,
         updated_at = now()
   where s.user_id = uid;
  return bucket;
end
$$;

/**
 * Records the expiry of what bucket `bucket` has left, if its expiry has come by `at`
 * (now, or the start of a period Stripe says has begun): once per bucket (ledger key
 * `expiry:<bucket>`, dated at the bucket's expires_at, or now if that is later than
 * now). Returns the credits expired (0 when there was nothing to do). The caller holds
 * the balance lock.
 */
create or replace function app._expire_bucket(bucket uuid, at timestamptz default now()) returns integer
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  owner uuid;
  taken integer;
  expiry timestamptz;
begin
  -- a bucket is closed once: what it has left expires, and a credit refunded into it
  -- later expires at once (app.refund_job)
  with before as (
    select c.id, c.remaining from public.credit_buckets c
     where c.id = bucket and c.expired_at is null and c.expires_at <= greatest(at, now()))
  update public.credit_buckets b
     set remaining = 0, expired = b.expired + before.remaining, expired_at = now()
    from before
   where b.id = before.id
  returning b.user_id, before.remaining, b.expires_at into owner, taken, expiry;
  if not found or taken = 0 then
    return 0;
  end if;
  insert into public.credit_ledger (user_id, delta, reason, idempotency_key, bucket_id, created_at)
  values (owner, -taken, 'expiry', 'expiry:' || bucket, bucket, least(expiry, now()));
  update public.subscriptions s set credits_remaining = s.credits_remaining - taken, updated_at = now()
   where s.user_id = owner;
  return taken;
end
$$;

/**
 * Expires every bucket of `uid` whose expiry has come by `until` (default now; a renewal
 * passes its period's start, which ends the old period whatever this server's clock
 * says). Returns the credits expired. The caller holds the balance lock.
 */
create or replace function app._expire_due(uid uuid, until timestamptz default now()) returns integer
language sql
set search_path = pg_catalog, pg_temp
as $$
  select coalesce(sum(app._expire_bucket(b.id, until)), 0)::integer
    from (select c.id from public.credit_buckets c
           where c.user_id = uid and c.expired_at is null and c.expires_at <= greatest(until, now())
           order by c.expires_at, c.created_at, c.id) b
$$;

/**
 * The worker's `expire_credits` schedule: first the free tier's monthly renewal for
 * accounts whose period has ended (so their new credits arrive with the old ones'
 * expiry, not up to an hour later), then the expiry of every bucket that is due, each
 * account under its balance lock. Idempotent: a bucket expires once however often this
 * runs or however many run at once (an account being changed elsewhere is left for the
 * next run). Returns the number of buckets expired.
 */
create or replace function app.expire_credit_buckets(max_buckets integer default 5000) returns integer
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  due record;
  expired_buckets integer := 0;
begin
  perform app.renew_free_subscriptions();
  for due in
    select b.id, b.user_id from public.credit_buckets b
     where b.expired_at is null and b.expires_at <= now()
     order by b.expires_at
     limit max_buckets
  loop
    perform 1 from public.subscriptions s where s.user_id = due.user_id for update skip locked;
    -- (a spent bucket is closed too, with nothing to record; 0 also when another run or a
    -- renewal closed it first)
    if found and app._expire_bucket(due.id) > 0 then
      expired_buckets := expired_buckets + 1;
    end if;
  end loop;
  return expired_buckets;
end
$$;
grant execute on function app.expire_credit_buckets(integer) to sg_worker;

/**
 * The start of the latest period a renewal (paid or free) has begun for `uid`: every
 * period before it is over, whatever this server's clock says (Stripe's test clocks run
 * ahead of it).
 */
create or replace function app._renewed_through(uid uuid) returns timestamptz
language sql stable
set search_path = pg_catalog, pg_temp
as $$
  select coalesce(max(l.period_start), '-infinity') from public.credit_ledger l
   where l.user_id = uid and l.reason = 'renewal'
$$;

/**
 * Carries the unused plan credits of the period that the paid renewal granted in bucket
 * `renewal_bucket` began into a rollover bucket that expires with that renewal's period:
 * at most one allowance of the renewed plan (the renewal's amount). Only paid-plan buckets
 * (plan, renewal, upgrade, opening) that expired at that period's start count; rollover
 * buckets never roll again, free and signup credits never roll. What counts is what each
 * bucket had left at its expiry, so the result is the same whether the expiry job ran
 * first or not, and whether a grant of the ended period arrived before the renewal or
 * after it (a late grant settles the renewal again: only the difference is added, keyed
 * `rollover:<renewal key>:<credits already rolled>`). Returns the credits rolled so far.
 * The caller holds the balance lock.
 */
create or replace function app._settle_rollover(uid uuid, renewal_bucket uuid) returns integer
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  renewal record;
  unused integer;
  oldest timestamptz;
  already integer;
  target integer;
begin
  select l.period_start, l.idempotency_key, l.stripe_event_id, b.amount, b.expires_at, b.plan_tier into renewal
    from public.credit_ledger l join public.credit_buckets b on b.id = l.bucket_id
   where l.bucket_id = renewal_bucket and l.reason = 'renewal';
  if renewal.plan_tier is null or renewal.plan_tier = 'free' then
    return 0;
  end if;
  perform app._expire_due(uid, renewal.period_start);
  with ending as (
    update public.credit_buckets b set rolled_over = true
     where b.user_id = uid and b.plan_tier is not null and b.plan_tier <> 'free'
       and b.source in ('plan', 'renewal', 'upgrade', 'opening')
       and b.expires_at between renewal.period_start - interval '1 day' and renewal.period_start
    returning b.expired, b.created_at)
  select coalesce(sum(e.expired), 0), min(e.created_at) into unused, oldest from ending e;
  select coalesce(sum(l.delta), 0) into already from public.credit_ledger l
   where l.user_id = uid and l.reason = 'rollover' and l.delta > 0 and l.period_start = renewal.period_start;
  target := least(unused, renewal.amount);
  if target > already then
    perform app._open_bucket(uid, target - already, 'rollover',
                             'rollover:' || renewal.idempotency_key || ':' || already, 'rollover', renewal.expires_at,
                             stripe_event_id => renewal.stripe_event_id, period_start => renewal.period_start,
                             note => 'carried ' || target || ' of ' || unused || ' unused plan credits into the new period',
                             created_at => least(oldest, now()));
    -- that period may itself be over already (a grant arriving after two renewals)
    perform app._expire_due(uid, app._renewed_through(uid));
    return target;
  end if;
  return already;
end
$$;

/**
 * After a plan grant whose period ends at `period_end`: if a later renewal has already
 * begun (the grant arrived late), the grant's credits are over at once and that renewal
 * takes their unused part into its rollover. The caller holds the balance lock.
 */
create or replace function app._settle_late_grant(uid uuid, period_end timestamptz) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  renewal record;
begin
  if period_end is null or period_end > app._renewed_through(uid) then
    return;
  end if;
  perform app._expire_due(uid, app._renewed_through(uid));
  for renewal in
    select l.bucket_id from public.credit_ledger l
     where l.user_id = uid and l.reason = 'renewal' and l.period_start between period_end and period_end + interval '1 day'
  loop
    perform app._settle_rollover(uid, renewal.bucket_id);
  end loop;
end
$$;

/**
 * Takes back up to `credits` of what bucket `bucket` still has to spend (its purchase was
 * refunded or disputed): never more than is left, so never below zero, and nothing of an
 * expired bucket (it is gone anyway). Once per `idempotency_key`. Returns the credits
 * taken. Service functions only (the pack events in 54_packs.sql).
 */
create or replace function app._claw_back(bucket uuid, credits integer, idempotency_key text, note text default null)
returns integer
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  owner uuid;
  taken integer;
begin
  select b.user_id into owner from public.credit_buckets b where b.id = bucket;
  if not found then
    raise exception 'no credit bucket %', bucket using errcode = 'P0404';
  end if;
  perform app._lock_balance(owner);
  if exists (select 1 from public.credit_ledger l where l.idempotency_key = _claw_back.idempotency_key) then
    return 0;
  end if;
  with before as (
    select c.id, least(credits, c.remaining) as take from public.credit_buckets c
     where c.id = bucket and credits > 0 and c.remaining > 0 and c.expired_at is null
       and (c.expires_at is null or c.expires_at > now()))
  update public.credit_buckets b
     set remaining = b.remaining - before.take, clawed_back = b.clawed_back + before.take
    from before
   where b.id = before.id
  returning before.take into taken;
  taken := coalesce(taken, 0);
  if taken = 0 then
    return 0;
  end if;
  insert into public.credit_ledger (user_id, delta, reason, idempotency_key, bucket_id, note)
  values (owner, -taken, 'clawback', idempotency_key, bucket, note);
  update public.subscriptions s set credits_remaining = s.credits_remaining - taken, updated_at = now()
   where s.user_id = owner;
  return taken;
end
$$;

/**
 * The worker's expiring-soon notices (with `expire_credits`): each bucket is looked at
 * once, when its expiry comes within `ahead` (3 days); an account whose credits entering
 * that window on one day add up to 5 or more gets one mail for that day (key
 * credits_expiring:<user>:<date>), never twice. Returns the mails queued.
 */
create or replace function app.notify_expiring_credits(ahead interval default interval '3 days') returns integer
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  due record;
  queued integer := 0;
begin
  for due in
    with noticed as (
      update public.credit_buckets b set expiry_noticed = true
       where not b.expiry_noticed and b.expired_at is null and b.expires_at is not null and b.remaining > 0
         and b.expires_at <= now() + ahead and b.expires_at > now()
      returning b.user_id, b.remaining, b.expires_at)
    select n.user_id, (n.expires_at at time zone 'UTC')::date as day, sum(n.remaining)::integer as credits,
           min(n.expires_at) as first_at
      from noticed n group by 1, 2 having sum(n.remaining) >= 5
  loop
    if app._queue_email(due.user_id, 'credits_expiring', 'credits_expiring:' || due.user_id || ':' || due.day,
                        jsonb_build_object('credits', due.credits, 'expires_at', due.first_at)) then
      queued := queued + 1;
    end if;
  end loop;
  return queued;
end
$$;
grant execute on function app.notify_expiring_credits(interval) to sg_worker;
