-- Period renewals: a paid renewal (from its signed, paid invoice: 51_stripe_events.sql) and
-- the free tier's monthly credits. Both expire the buckets that are due and grant the
-- plan's credits in a bucket of the new period; a paid one first rolls the unused plan
-- credits over (capped at one allowance), once per period (keys in 50_billing.sql and
-- 31_buckets.sql).
set local role sg_service;

/**
 * Renews a user's credits for a new period, once per key: every bucket due by the
 * period's start expires; `amount` is granted (`reason`) in a bucket expiring at
 * `period_end`; for a paid plan (`plan_tier` not free) the unused plan credits of the
 * period that ended roll over into a bucket expiring with the new period, at most one
 * allowance (`amount`). Credits of other sources (packs, operators, a later period) are
 * untouched. With move_period (the free tier) the subscription's period moves to the new
 * one, and a renewal for a period older than one already renewed changes nothing; Stripe
 * renewals leave the period to the subscription's re-read, and one arriving after a later
 * renewal is granted already over, its credits rolling into that later renewal, so the
 * outcome does not depend on the order Stripe's events arrive in. Returns true only for
 * the call that renewed.
 */
create or replace function app.renew_credits(user_id uuid, amount integer, reason text, idempotency_key text,
                                             period_start timestamptz, period_end timestamptz,
                                             stripe_event_id text default null, move_period boolean default true,
                                             plan_tier text default null)
returns boolean
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  bucket uuid;
  rolled integer := 0;
  late boolean;
begin
  perform app._lock_balance(user_id);
  if period_start is null or period_end is null or period_end <= period_start then
    raise exception 'a renewal needs a period that ends after it starts' using errcode = 'P0422';
  end if;
  if exists (select 1 from public.credit_ledger l where l.idempotency_key = renew_credits.idempotency_key) then
    return false;
  end if;
  late := app._renewed_through(user_id) > period_start;
  if late and move_period then
    return false;
  end if;
  perform app._expire_due(user_id, period_start);
  bucket := app._open_bucket(user_id, amount, reason, idempotency_key, 'renewal', period_end,
                             nullif(plan_tier, 'free'), stripe_event_id, period_start);
  rolled := app._settle_rollover(user_id, bucket);
  perform app._settle_late_grant(user_id, period_end);
  if not late then
    update public.subscriptions s
       set credits_total = amount + rolled,
           current_period_start = case when move_period then renew_credits.period_start else s.current_period_start end,
           current_period_end = case when move_period then renew_credits.period_end else s.current_period_end end,
           updated_at = now()
     where s.user_id = renew_credits.user_id;
  end if;
  return true;
end
$$;

/**
 * The free period that contains `at`: [anchor + n months, anchor + n+1 months), counted
 * from the anchor each time, in UTC, so a period anchored on the 31st ends on the 28th
 * or 30th in short months and on the 31st again after them (never drifting to the 28th).
 */
create or replace function app.free_period_at(anchor timestamptz, at timestamptz)
returns table (period_start timestamptz, period_end timestamptz)
language plpgsql stable
set search_path = pg_catalog, pg_temp
set timezone = 'UTC'
as $$
declare
  months integer := greatest(0, (extract(year from age(at, anchor)) * 12 + extract(month from age(at, anchor)))::integer);
begin
  -- age() counts whole months by calendar; step back or on when clamping put `at` outside
  while anchor + make_interval(months => months) > at and months > 0 loop
    months := months - 1;
  end loop;
  while anchor + make_interval(months => months + 1) <= at loop
    months := months + 1;
  end loop;
  return query select anchor + make_interval(months => months), anchor + make_interval(months => months + 1);
end
$$;

/**
 * Gives every free subscription whose period has ended its monthly credits (a bucket of
 * the free plan's credits for the new period; the old period's free credits expire) and starts the period that contains now, on the
 * account's anchor day (sign-up, or the end of its last paid period). An account idle for
 * months gets one reset, not one per month missed. If the period that just ended did not
 * end on an anchor boundary (periods made before anchors existed), the new one starts where
 * it ended and runs to the next boundary. Once per period however often it runs (each reset
 * is keyed by its start). Returns how many were reset.
 */
create or replace function app.renew_free_subscriptions() returns integer
language plpgsql security definer
set search_path = pg_catalog, pg_temp
set timezone = 'UTC'
as $$
declare
  due record;
  free_credits integer;
  next_period record;
  renewed integer := 0;
begin
  select p.credits into free_credits from public.plans p where p.tier = 'free';
  for due in
    select s.user_id, s.current_period_end, coalesce(s.period_anchor, s.created_at) as anchor
      from public.subscriptions s
     where s.tier = 'free' and s.current_period_end <= now()
     for update skip locked
  loop
    select * into next_period from app.free_period_at(due.anchor, now());
    if next_period.period_start < due.current_period_end then
      next_period.period_start := due.current_period_end;
    end if;
    if app.renew_credits(due.user_id, free_credits, 'renewal',
                         'free:' || due.user_id || ':' || extract(epoch from next_period.period_start)::bigint,
                         next_period.period_start, next_period.period_end) then
      renewed := renewed + 1;
    end if;
  end loop;
  return renewed;
end
$$;
grant execute on function app.renew_free_subscriptions() to sg_worker;
