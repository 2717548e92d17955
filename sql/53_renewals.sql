-- Period resets: a paid renewal (from its signed, paid invoice: 51_stripe_events.sql) and
-- the free tier's monthly credits. Both expire what is left and grant the plan's credits,
-- once per period (keys in 50_billing.sql).
set local role sg_service;

/**
 * Resets a user's balance for a new period, once per key: the leftover expires
 * (ledger `expiry`) and `amount` is granted (`reason`), so balance = amount afterwards,
 * and (with move_period) the subscription's period moves to the new one; Stripe renewals
 * leave the period to the subscription's re-read. A renewal for a period older than one
 * already renewed is a late delivery and changes nothing. Returns true only for the call
 * that reset.
 */
create or replace function app.reset_credits(user_id uuid, amount integer, reason text, idempotency_key text,
                                             period_start timestamptz, period_end timestamptz,
                                             stripe_event_id text default null, move_period boolean default true)
returns boolean
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  leftover integer;
  movement uuid;
begin
  select s.credits_remaining into leftover
    from public.subscriptions s where s.user_id = reset_credits.user_id
     for update;
  if not found then
    raise exception 'no subscription for user %', user_id using errcode = 'P0404';
  end if;
  -- a renewal for an older period than one already applied arrived late: it changes nothing
  if exists (select 1 from public.credit_ledger l
              where l.user_id = reset_credits.user_id and l.reason = 'renewal'
                and l.period_start > reset_credits.period_start) then
    return false;
  end if;
  insert into public.credit_ledger as l (user_id, delta, reason, idempotency_key, stripe_event_id, period_start)
  values (user_id, amount, reason, idempotency_key, stripe_event_id, period_start)
  on conflict on constraint credit_ledger_idempotency_key_key do nothing
  returning l.id into movement;
  if movement is null then
    return false;
  end if;
  if leftover > 0 then
    insert into public.credit_ledger (user_id, delta, reason, idempotency_key, stripe_event_id, period_start)
    values (user_id, -leftover, 'expiry', 'expiry:' || idempotency_key, stripe_event_id, period_start);
  end if;
  update public.subscriptions s
     set credits_remaining = amount, credits_total = amount,
         current_period_start = case when move_period then reset_credits.period_start else s.current_period_start end,
         current_period_end = case when move_period then reset_credits.period_end else s.current_period_end end,
         updated_at = now()
   where s.user_id = reset_credits.user_id;
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
 * Gives every free subscription whose period has ended its monthly credits back (balance
 * reset to the free plan's credits) and starts the period that contains now, on the
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
    if app.reset_credits(due.user_id, free_credits, 'renewal',
                         'free:' || due.user_id || ':' || extract(epoch from next_period.period_start)::bigint,
                         next_period.period_start, next_period.period_end) then
      renewed := renewed + 1;
    end if;
  end loop;
  return renewed;
end
$$;
grant execute on function app.renew_free_subscriptions() to sg_worker;
