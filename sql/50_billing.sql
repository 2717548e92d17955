-- Billing: Stripe customers, webhook events (stored, then applied exactly once, in any
-- order), plan grants and renewals, and the free tier's monthly reset.
--
-- Grants are keyed so each happens once whatever the delivery order or duplication:
--   plan:<subscription>:initial          first period (checkout.session.completed or the
--                                        subscription's first invoice, whichever comes first)
--   plan:<subscription>:<period start>   each renewal (invoice for billing_reason subscription_cycle)
--   free:<user>:<period start>           the free tier's monthly reset
-- State (tier, status, period) is only changed by an event at least as new as the last
-- one applied to that subscription (events' own `created` timestamps).
set local role sg_owner;

/**
 * The current user's Stripe customer id, locking their subscription row until the
 * transaction ends, so concurrent checkouts create the customer once.
 */
create or replace function app.lock_billing_customer()
returns table (stripe_customer_id text, email text)
language sql security definer
set search_path = pg_catalog, pg_temp
as $$
  select s.stripe_customer_id, u.email
    from public.subscriptions s join public.users u on u.id = s.user_id
   where s.user_id = app.require_user_id()
     for update of s
$$;
grant execute on function app.lock_billing_customer() to sg_app;

/** Stores the current user's Stripe customer id (once; a different second id is refused). */
create or replace function app.set_stripe_customer(customer_id text) returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if customer_id is null or customer_id !~ '^cus_[A-Za-z0-9_]{1,200}$' then
    raise exception 'invalid Stripe customer id' using errcode = 'P0422';
  end if;
  update public.subscriptions s set stripe_customer_id = customer_id, updated_at = now()
   where s.user_id = app.require_user_id()
     and (s.stripe_customer_id is null or s.stripe_customer_id = customer_id);
  if not found then
    raise exception 'This account already has a different Stripe customer.' using errcode = 'P0409';
  end if;
end
$$;
grant execute on function app.set_stripe_customer(text) to sg_app;

set local role sg_service;

/**
 * Resets a user's balance for a new period, once per key: the leftover expires
 * (ledger `expiry`) and `amount` is granted (`reason`), so balance = amount afterwards,
 * and (with move_period) the subscription's period moves to the new one; Stripe renewals
 * leave the period to the subscription events, which are ordered by time. A renewal for
 * a period older than one already renewed is a late delivery and changes nothing.
 * Returns true only for the call that reset.
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
-- only the renewal and Stripe functions (sg_service) call it; no runtime role may
revoke execute on function app.reset_credits(uuid, integer, text, text, timestamptz, timestamptz, text, boolean)
  from public, sg_app, sg_worker;

/**
 * Gives every free subscription whose period has ended its monthly credits back (balance
 * reset to the free plan's credits) and starts its next period. Once per period however
 * often it runs: the period moves on and each reset is keyed by it. Returns how many.
 */
create or replace function app.renew_free_subscriptions() returns integer
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  due record;
  free_credits integer;
  next_start timestamptz;
  renewed integer := 0;
begin
  select p.credits into free_credits from public.plans p where p.tier = 'free';
  for due in
    select s.user_id, s.current_period_end from public.subscriptions s
     where s.tier = 'free' and s.current_period_end <= now()
     for update skip locked
  loop
    -- a subscription idle for months starts its new period in the current month
    next_start := due.current_period_end;
    while next_start + interval '1 month' <= now() loop
      next_start := next_start + interval '1 month';
    end loop;
    if app.reset_credits(due.user_id, free_credits, 'renewal',
                         'free:' || due.user_id || ':' || extract(epoch from next_start)::bigint,
                         next_start, next_start + interval '1 month') then
      renewed := renewed + 1;
    end if;
  end loop;
  return renewed;
end
$$;
grant execute on function app.renew_free_subscriptions() to sg_worker;

/**
 * Stores a verified Stripe event (before anything is applied). Returns whether it was
 * new and whether it has already been applied; a repeated id changes nothing.
 */
create or replace function app.record_stripe_event(event_id text, event_type text, payload jsonb)
returns table (is_new boolean, processed boolean)
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  inserted text;
begin
  if event_id is null or length(event_id) not between 1 and 255 or event_type is null then
    raise exception 'event id and type are required' using errcode = 'P0422';
  end if;
  insert into public.stripe_events as e (id, type, payload) values (event_id, event_type, payload)
  on conflict (id) do nothing
  returning e.id into inserted;
  return query select inserted is not null, e.processed_at is not null from public.stripe_events e where e.id = event_id;
end
$$;
grant execute on function app.record_stripe_event(text, text, jsonb) to sg_app;

/** The Stripe price id of a subscription or invoice line, whichever API version wrote it. */
create or replace function app.stripe_price_of(item jsonb) returns text
language sql immutable
as $$
  select coalesce(item #>> '{price,id}', item ->> 'price', item #>> '{plan,id}',
                  item #>> '{pricing,price_details,price}')
$$;

/** Seconds since the epoch in a Stripe payload -> timestamptz (null stays null). */
create or replace function app.stripe_time(value jsonb) returns timestamptz
language sql immutable
as $$ select case when jsonb_typeof(value) = 'number' then to_timestamp((value #>> '{}')::double precision) end $$;

/**
 * Applies one stored Stripe event, exactly once (concurrent callers wait on the event's
 * row lock; the second sees it processed). Returns 'applied', 'already applied',
 * 'ignored' (a type we do not act on), or 'failed: …' (kept unprocessed with its error,
 * to be re-applied later). Never raises for a bad event: one bad event must not block others.
 */
create or replace function app.apply_stripe_event(event_id text) returns text
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  event public.stripe_events%rowtype;
  obj jsonb;
  created timestamptz;
  outcome text;
begin
  select * into event from public.stripe_events e where e.id = event_id for update;
  if not found then
    raise exception 'no stored event %', event_id using errcode = 'P0404';
  end if;
  if event.processed_at is not null then
    return 'already applied';
  end if;
  obj := event.payload #> '{data,object}';
  created := coalesce(app.stripe_time(event.payload -> 'created'), event.received_at);
  begin
    outcome := case event.type
      when 'checkout.session.completed' then app._apply_checkout_completed(event.id, obj, created)
      when 'invoice.paid' then app._apply_invoice_paid(event.id, obj, created)
      when 'invoice.payment_succeeded' then app._apply_invoice_paid(event.id, obj, created)
      when 'invoice.payment_failed' then app._apply_payment_failed(event.id, obj, created)
      when 'customer.subscription.created' then app._apply_subscription_object(obj, created, false)
      when 'customer.subscription.updated' then app._apply_subscription_object(obj, created, false)
      when 'customer.subscription.deleted' then app._apply_subscription_object(obj, created, true)
      else 'ignored'
    end;
  exception when others then
    update public.stripe_events e set error = sqlerrm, attempts = e.attempts + 1 where e.id = event.id;
    return 'failed: ' || sqlerrm;
  end;
  update public.stripe_events e set processed_at = now(), error = null, attempts = e.attempts + 1
   where e.id = event.id;
  return outcome;
end
$$;
grant execute on function app.apply_stripe_event(text) to sg_app;

/**
 * The webhook's one call: stores a verified event and applies it in the same
 * transaction. An event that cannot be applied is still stored, with its error, since
 * apply_stripe_event records failures rather than raising; a repeated delivery answers
 * 'already applied'. Returns apply_stripe_event's outcome.
 */
create or replace function app.receive_stripe_event(event_id text, event_type text, payload jsonb) returns text
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  perform app.record_stripe_event(event_id, event_type, payload);
  return app.apply_stripe_event(event_id);
end
$$;
grant execute on function app.receive_stripe_event(text, text, jsonb) to sg_app;

/** The user a Stripe object belongs to: metadata.user_id, else by customer or subscription id. */
create or replace function app._stripe_user(metadata_user text, customer_id text, subscription_id text)
returns uuid
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
  found_user uuid;
begin
  if metadata_user ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
    select s.user_id into found_user from public.subscriptions s where s.user_id = metadata_user::uuid;
  end if;
  if found_user is null and customer_id is not null then
    select s.user_id into found_user from public.subscriptions s where s.stripe_customer_id = customer_id;
  end if;
  if found_user is null and subscription_id is not null then
    select s.user_id into found_user from public.subscriptions s where s.stripe_subscription_id = subscription_id;
  end if;
  if found_user is null then
    raise exception 'no user for customer % / subscription %', customer_id, subscription_id;
  end if;
  return found_user;
end
$$;

/**
 * Moves a user's subscription state to what an event says. Each group of fields (plan:
 * tier and subscription id; status; period) only takes the event's values if no newer
 * event has set that group already, so any delivery order ends in the state of applying
 * the events in the order Stripe created them. Null arguments leave a group alone.
 */
create or replace function app._apply_subscription_state(customer_id text, subscription_id text, new_tier text,
                                                          new_status text, period_start timestamptz,
                                                          period_end timestamptz, as_of timestamptz,
                                                          user_hint text default null)
returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  uid uuid := app._stripe_user(user_hint, customer_id, subscription_id);
  sub public.subscriptions%rowtype;
  plan_news boolean;
  status_news boolean;
  period_news boolean;
begin
  select * into sub from public.subscriptions s where s.user_id = uid for update;
  plan_news := new_tier is not null and (sub.stripe_updated_at is null or sub.stripe_updated_at <= as_of);
  status_news := new_status is not null and (sub.stripe_status_at is null or sub.stripe_status_at <= as_of);
  period_news := period_start is not null and (sub.stripe_period_at is null or sub.stripe_period_at <= as_of);
  update public.subscriptions s
     set tier = case when plan_news then new_tier else s.tier end,
         stripe_subscription_id = case when not plan_news then s.stripe_subscription_id
                                       when new_tier = 'free' then null
                                       else coalesce(subscription_id, s.stripe_subscription_id) end,
         stripe_updated_at = case when plan_news then as_of else s.stripe_updated_at end,
         status = case when status_news then new_status else s.status end,
         stripe_status_at = case when status_news then as_of else s.stripe_status_at end,
         current_period_start = case when period_news then period_start else s.current_period_start end,
         current_period_end = case when period_news then coalesce(period_end, s.current_period_end)
                                   else s.current_period_end end,
         stripe_period_at = case when period_news then as_of else s.stripe_period_at end,
         stripe_customer_id = coalesce(s.stripe_customer_id, customer_id),
         updated_at = now()
   where s.user_id = uid;
  return case when plan_news or status_news or period_news or (new_tier is null and new_status is null
                                                                and period_start is null)
              then 'applied' else 'stale: newer events were already applied' end;
end
$$;

/**
 * The first period's plan grant: once per subscription, whichever event brings it, and
 * not at all once a renewal of that subscription has been applied.
 */
create or replace function app._grant_initial(uid uuid, subscription_id text, tier text, event_id text,
                                              period_start timestamptz)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  amount integer;
begin
  select p.credits into amount from public.plans p where p.tier = _grant_initial.tier;
  if amount is null or amount = 0 or subscription_id is null then
    return;
  end if;
  -- a renewal of this subscription already reset the balance: the first period is over,
  -- and its grant (arriving late) would only inflate the new one
  if exists (select 1 from public.credit_ledger l
              where l.user_id = uid and l.reason = 'renewal'
                and l.idempotency_key like 'plan:' || subscription_id || ':%') then
    return;
  end if;
  perform app.grant_credits(uid, amount, 'plan_grant', 'plan:' || subscription_id || ':initial',
                            event_id, period_start);
end
$$;

/** checkout.session.completed: link Stripe ids, move to the bought tier, grant its credits. */
create or replace function app._apply_checkout_completed(event_id text, session jsonb, as_of timestamptz)
returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  uid uuid := app._stripe_user(coalesce(session #>> '{metadata,user_id}', session ->> 'client_reference_id'),
                               session ->> 'customer', session ->> 'subscription');
  bought text := session #>> '{metadata,tier}';
begin
  if bought is null or not exists (select 1 from public.plans p where p.tier = bought and p.price_cents > 0) then
    raise exception 'checkout session without a paid tier in metadata';
  end if;
  perform app._apply_subscription_state(session ->> 'customer', session ->> 'subscription', bought, 'active',
                                        null, null, as_of, uid::text);
  perform app._grant_initial(uid, session ->> 'subscription', bought, event_id, null);
  return 'applied';
end
$$;

/**
 * invoice.paid / invoice.payment_succeeded: the first invoice grants the first period
 * (unless checkout already did); a subscription_cycle invoice resets the balance to the
 * plan's credits for the new period.
 */
create or replace function app._apply_invoice_paid(event_id text, invoice jsonb, as_of timestamptz)
returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  line jsonb := invoice #> '{lines,data,0}';
  subscription_id text := coalesce(invoice ->> 'subscription', invoice #>> '{parent,subscription_details,subscription}');
  uid uuid;
  paid_tier text;
  amount integer;
  period_start timestamptz := coalesce(app.stripe_time(line #> '{period,start}'), app.stripe_time(invoice -> 'period_start'));
  period_end timestamptz := coalesce(app.stripe_time(line #> '{period,end}'), app.stripe_time(invoice -> 'period_end'));
begin
  if subscription_id is null then
    return 'ignored: not a subscription invoice';
  end if;
  uid := app._stripe_user(coalesce(invoice #>> '{subscription_details,metadata,user_id}',
                                   invoice #>> '{parent,subscription_details,metadata,user_id}'),
                          invoice ->> 'customer', subscription_id);
  -- the plan: by the invoice's price, else the tier our checkout put in the metadata,
  -- else the tier the subscription already has
  select p.tier, p.credits into paid_tier, amount from public.plans p where p.stripe_price_id = app.stripe_price_of(line);
  if paid_tier is null then
    select p.tier, p.credits into paid_tier, amount from public.plans p
     where p.tier = coalesce(invoice #>> '{subscription_details,metadata,tier}',
                             invoice #>> '{parent,subscription_details,metadata,tier}');
  end if;
  if paid_tier is null then
    select s.tier, p.credits into paid_tier, amount
      from public.subscriptions s join public.plans p on p.tier = s.tier where s.user_id = uid;
  end if;
  if paid_tier is null or paid_tier = 'free' then
    raise exception 'invoice for subscription % names no paid plan', subscription_id;
  end if;
  -- a paid invoice means the subscription is in good standing, unless newer news says otherwise
  perform app._apply_subscription_state(invoice ->> 'customer', subscription_id, paid_tier, 'active',
                                        period_start, period_end, as_of, uid::text);
  perform app._queue_email(uid, 'receipt', 'receipt:' || coalesce(invoice ->> 'id', event_id), jsonb_build_object(
    'plan', (select p.name from public.plans p where p.tier = paid_tier), 'credits', amount,
    'amount_cents', coalesce((invoice ->> 'amount_paid')::integer,
                             (select p.price_cents from public.plans p where p.tier = paid_tier)),
    'period_start', period_start, 'period_end', period_end,
    'renewal', invoice ->> 'billing_reason' = 'subscription_cycle'));
  if invoice ->> 'billing_reason' = 'subscription_cycle' then
    if period_start is not null then
      perform app.reset_credits(uid, amount, 'renewal',
                                'plan:' || subscription_id || ':' || extract(epoch from period_start)::bigint,
                                period_start, period_end, event_id, move_period => false);
    end if;
  else
    -- the subscription's first invoice (subscription_create, or unset by older API versions)
    perform app._grant_initial(uid, subscription_id, paid_tier, event_id, period_start);
  end if;
  return 'applied';
end
$$;

/**
 * customer.subscription.created/updated/deleted: status and tier follow the subscription;
 * unpaid, canceled or deleted ends paid features (back to free; credits already granted
 * stay until the period ends, then the free reset applies); an incomplete one changes no tier.
 */
create or replace function app._apply_subscription_object(subscription jsonb, as_of timestamptz, deleted boolean)
returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  item jsonb := subscription #> '{items,data,0}';
  stripe_status text := subscription ->> 'status';
  mapped_status text;
  new_tier text;
begin
  mapped_status := case
    when deleted then 'canceled'
    when stripe_status in ('active', 'trialing', 'past_due', 'unpaid', 'canceled', 'incomplete') then stripe_status
    when stripe_status = 'incomplete_expired' then 'canceled'
    else null
  end;
  if deleted or mapped_status in ('unpaid', 'canceled') then
    new_tier := 'free';
  elsif mapped_status in ('active', 'trialing', 'past_due') then
    select p.tier into new_tier from public.plans p
     where p.stripe_price_id = coalesce(app.stripe_price_of(item), app.stripe_price_of(subscription));
    if new_tier is null then
      new_tier := nullif(subscription #>> '{metadata,tier}', '');
    end if;
  end if;
  return app._apply_subscription_state(
    subscription ->> 'customer', subscription ->> 'id', new_tier, mapped_status,
    coalesce(app.stripe_time(subscription -> 'current_period_start'), app.stripe_time(item -> 'current_period_start')),
    coalesce(app.stripe_time(subscription -> 'current_period_end'), app.stripe_time(item -> 'current_period_end')),
    as_of, subscription #>> '{metadata,user_id}');
end
$$;

/** Re-applies stored events (all, or received since `since`) in the order Stripe created them. */
create or replace function app.replay_stripe_events(since timestamptz default null)
returns table (event_id text, outcome text)
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  stored record;
begin
  for stored in
    select e.id from public.stripe_events e
     where since is null or e.received_at >= since
     order by coalesce((e.payload ->> 'created')::bigint, 0), e.received_at, e.id
  loop
    update public.stripe_events e set processed_at = null where e.id = stored.id;
    return query select stored.id, app.apply_stripe_event(stored.id);
  end loop;
end
$$;

/** invoice.payment_failed: past_due (access kept while Stripe retries) and one notice per invoice. */
create or replace function app._apply_payment_failed(event_id text, invoice jsonb, as_of timestamptz)
returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  outcome text := app._apply_subscription_state(invoice ->> 'customer', invoice ->> 'subscription', null,
                                                'past_due', null, null, as_of);
begin
  perform app._queue_email(app._stripe_user(null, invoice ->> 'customer', invoice ->> 'subscription'),
                           'payment_failed', 'payment_failed:' || coalesce(invoice ->> 'id', event_id));
  return outcome;
end
$$;
