-- A subscription's state comes from Stripe itself. Every subscription-affecting event
-- queues a re-read (`stripe_sync` entries for the worker, at most one waiting per
-- subscription); the worker retrieves the subscription (with its schedule) and applies
-- what Stripe says now, so delivery order, same-second ties and duplicates cannot
-- corrupt the state. A re-read is applied only if it started after the one applied last.
--
-- What each Stripe status means here (the README has the same table):
--   active, trialing      the price's plan and its features
--   past_due              the plan is kept while Stripe retries the payment (the page warns)
--   incomplete            not paid yet: free features, no credits
--   incomplete_expired    never paid: free
--   unpaid, canceled      paid features end; credits already granted stay until the
--                         period ends, then the free tier's monthly reset takes over
--   paused                no paid features and no grants
-- Applying a re-read never moves credits: a Stripe API response is not signed, so only
-- the signed events of 51_stripe_events.sql may.
set local role sg_service;

/** Queues a re-read of a Stripe subscription unless one is already waiting. */
create or replace function app._request_stripe_sync(subscription_id text) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
begin
  insert into public.stripe_syncs as y (subscription_id, sync_queued) values (subscription_id, true)
  on conflict on constraint stripe_syncs_pkey do update set sync_queued = true where not y.sync_queued;
  if found then
    insert into public.pgqueuer (priority, entrypoint, payload, status)
    values (30, 'stripe_sync', convert_to(json_build_object('subscription', subscription_id)::text, 'UTF8'),
            'queued');
  end if;
end
$$;

/**
 * The worker's first step of a re-read: marks that no re-read is waiting any more (an
 * event from now on queues a new one) and returns the read's start time, which
 * app.apply_stripe_subscription needs.
 */
create or replace function app.start_stripe_sync(subscription_id text) returns timestamptz
language sql security definer
set search_path = pg_catalog, pg_temp
as $$
  insert into public.stripe_syncs as y (subscription_id, sync_queued, last_started_at)
  values (start_stripe_sync.subscription_id, false, clock_timestamp())
  on conflict on constraint stripe_syncs_pkey do update set sync_queued = false, last_started_at = excluded.last_started_at
  returning y.last_started_at
$$;
grant execute on function app.start_stripe_sync(text) to sg_worker;

/** The plan a subscription's price is, from its items (the first item whose price is one of ours). */
create or replace function app._subscription_item(subscription jsonb) returns jsonb
language sql stable
set search_path = pg_catalog, pg_temp
as $$
  select coalesce(
    (select item from jsonb_array_elements(coalesce(subscription #> '{items,data}', '[]')) with ordinality as i(item, n)
      where exists (select 1 from public.plans p where p.stripe_price_id = app.stripe_price_of(item))
      order by n limit 1),
    subscription #> '{items,data,0}')
$$;

/**
 * Applies a subscription as Stripe reported it (a re-read that started at `read_started_at`)
 * to its user: tier (the price's plan while active/trialing/past_due, else free), status,
 * period (items' current_period_*, or the old top-level fields), cancellation and a
 * scheduled plan change. Only the user's current subscription changes the user (see
 * app._adopt_subscription). With source 'reconcile', every field it changes is recorded
 * in stripe_drift. Adopting a subscription re-applies its events kept unapplied meanwhile.
 * Returns what it did: 'synced', 'unchanged', 'stale read', or 'superseded by sub_…'.
 */
create or replace function app.apply_stripe_subscription(subscription jsonb, read_started_at timestamptz,
                                                         source text default 'sync')
returns text
language plpgsql security definer
set search_path = pg_catalog, pg_temp
set timezone = 'UTC'
as $$
#variable_conflict use_variable
declare
  subscription_id text := subscription ->> 'id';
  stripe_status text := subscription ->> 'status';
  item jsonb := app._subscription_item(subscription);
  price_tier text;
  new_tier text;
  live boolean;
  uid uuid;
  before public.subscriptions%rowtype;
  after public.subscriptions%rowtype;
  schedule jsonb := case when jsonb_typeof(subscription -> 'schedule') = 'object' then subscription -> 'schedule' end;
  current_phase_end timestamptz;
  next_phase jsonb;
  next_tier text;
  period_start timestamptz;
  period_end timestamptz;
  last_read timestamptz;
  deferred record;
  changes integer;
begin
  if subscription_id is null or stripe_status is null then
    raise exception 'not a Stripe subscription' using errcode = 'P0422';
  end if;
  uid := app._stripe_user(subscription #>> '{metadata,user_id}', subscription ->> 'customer', subscription_id);
  select y.last_applied_read into last_read from public.stripe_syncs y where y.subscription_id = subscription_id
     for update;
  if last_read > read_started_at then
    return 'stale read';
  end if;
  insert into public.stripe_syncs as y (subscription_id, last_applied_read) values (subscription_id, read_started_at)
  on conflict on constraint stripe_syncs_pkey do update set last_applied_read = excluded.last_applied_read;

  select * into before from public.subscriptions s where s.user_id = uid for update;
  live := stripe_status not in ('canceled', 'incomplete_expired');
  if not app._adopt_subscription(uid, subscription_id, live) then
    return 'superseded by ' || before.stripe_subscription_id;
  end if;

  select p.tier into price_tier from public.plans p where p.stripe_price_id = app.stripe_price_of(item);
  if price_tier is null then
    raise exception 'subscription % has no price that is one of our plans', subscription_id;
  end if;
  new_tier := case when stripe_status in ('active', 'trialing', 'past_due') then price_tier else 'free' end;
  period_start := coalesce(app.stripe_time(item -> 'current_period_start'),
                           app.stripe_time(subscription -> 'current_period_start'));
  period_end := coalesce(app.stripe_time(item -> 'current_period_end'),
                         app.stripe_time(subscription -> 'current_period_end'));
  if schedule is not null and schedule ->> 'status' in ('active', 'not_started') then
    current_phase_end := coalesce(app.stripe_time(schedule #> '{current_phase,end_date}'), period_end);
    select phase into next_phase from jsonb_array_elements(coalesce(schedule -> 'phases', '[]')) as ph(phase)
     where app.stripe_time(phase -> 'start_date') >= current_phase_end
     order by (phase ->> 'start_date')::numeric limit 1;
    select p.tier into next_tier from public.plans p
     where p.stripe_price_id = app.stripe_price_of(next_phase #> '{items,0}');
  end if;

  update public.subscriptions s
     set tier = new_tier,
         subscribed_tier = price_tier,
         status = stripe_status,
         -- a subscription that never started keeps the account's own (free) periods
         current_period_start = case when stripe_status in ('incomplete', 'incomplete_expired') then s.current_period_start
                                     else coalesce(period_start, s.current_period_start) end,
         current_period_end = case when stripe_status in ('incomplete', 'incomplete_expired') then s.current_period_end
                                   else coalesce(period_end, s.current_period_end) end,
         -- once paid features end, the free months count from the end of the paid period
         period_anchor = case when new_tier = 'free' and (s.tier <> 'free' or s.period_anchor is null)
                                   and stripe_status not in ('incomplete', 'incomplete_expired')
                              then coalesce(period_end, s.period_anchor) else s.period_anchor end,
         cancel_at_period_end = coalesce((subscription ->> 'cancel_at_period_end')::boolean, false) and live,
         cancel_at = case when live then app.stripe_time(subscription -> 'cancel_at') end,
         pending_tier = case when live and next_tier is distinct from price_tier then next_tier end,
         pending_change_at = case when live and next_tier is distinct from price_tier then current_phase_end end,
         stripe_schedule_id = case when schedule is not null and schedule ->> 'status' in ('active', 'not_started')
                                   then schedule ->> 'id'
                                   when jsonb_typeof(subscription -> 'schedule') = 'string'
                                   then subscription ->> 'schedule' end,
         stripe_customer_id = coalesce(s.stripe_customer_id, subscription ->> 'customer'),
         stripe_synced_at = now(),
         updated_at = now()
   where s.user_id = uid
  returning * into after;

  -- what changed, recorded as drift when reconciliation (not an event) found it
  with diff as (
    select b.key as field, b.value #>> '{}' as was, a.value #>> '{}' as is_now
      from jsonb_each(to_jsonb(before)) b join jsonb_each(to_jsonb(after)) a using (key)
     where b.key in ('tier', 'subscribed_tier', 'status', 'stripe_subscription_id', 'current_period_start',
                     'current_period_end', 'cancel_at_period_end', 'cancel_at', 'pending_tier', 'pending_change_at')
       and a.value is distinct from b.value
  ), drift as (
    insert into public.stripe_drift (user_id, subscription_id, field, before, after)
    select uid, subscription_id, d.field, d.was, d.is_now from diff d where source = 'reconcile'
  )
  select count(*) into changes from diff;

  -- invoices of this subscription that arrived before it was adopted can now apply
  for deferred in
    select e.id from public.stripe_events e
     where e.subscription_id = subscription_id and e.processed_at is null and e.error is not null
       and e.error not like 'refused:%'
     order by e.received_at
  loop
    perform app.apply_stripe_event(deferred.id);
  end loop;

  return case when changes > 0 then 'synced' else 'unchanged' end;
end
$$;
grant execute on function app.apply_stripe_subscription(jsonb, timestamptz, text) to sg_worker;

/**
 * Reconciliation's view of one customer: our user and the subscription we consider
 * current, so the worker knows which of Stripe's list to apply. P0404 for a customer we
 * do not know.
 */
create or replace function app.stripe_customer_state(customer_id text)
returns table (user_id uuid, current_subscription text)
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
  select s.user_id, s.stripe_subscription_id from public.subscriptions s where s.stripe_customer_id = customer_id
$$;
grant execute on function app.stripe_customer_state(text) to sg_worker;

/** Every Stripe customer we know (reconciliation walks them all). */
create or replace function app.stripe_customers() returns setof text
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$ select s.stripe_customer_id from public.subscriptions s where s.stripe_customer_id is not null order by 1 $$;
grant execute on function app.stripe_customers() to sg_worker;

/** Records a live subscription that is not the customer's current one (never adopted: reconciliation reports it). */
create or replace function app.record_extra_subscription(customer_id text, subscription_id text, stripe_status text)
returns boolean
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  uid uuid := (select s.user_id from public.subscriptions s where s.stripe_customer_id = customer_id);
begin
  if exists (select 1 from public.stripe_drift d
              where d.subscription_id = subscription_id and d.field = 'extra live subscription'
                and d.after = stripe_status) then
    return false;
  end if;
  insert into public.stripe_drift (user_id, subscription_id, field, before, after)
  values (uid, subscription_id, 'extra live subscription', null, stripe_status);
  return true;
end
$$;
grant execute on function app.record_extra_subscription(text, text, text) to sg_worker;
