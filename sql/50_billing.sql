-- Billing as the signed-in user sees it: their Stripe customer, their subscription's
-- state, and the statement of their credits.
--
-- How billing is split across files:
--   50_billing.sql        this file: the user-facing functions
--   51_stripe_events.sql  the webhook: signature check, storage, the money each event moves
--   52_stripe_sync.sql    the subscription's state, re-read from Stripe by the worker
--   53_renewals.sql       period resets: paid renewals and the free tier's monthly credits
--
-- Stripe is the source of truth for subscription state: every subscription-affecting event
-- queues a re-read (52), and only that re-read changes tier, status, period, cancellation
-- and pending plan changes. Credits move only when a signed, stored event says money was
-- paid (51), keyed so each happens once whatever the order or duplication:
--   plan:<subscription>:initial          a subscription's first paid invoice (subscription_create)
--   plan:<subscription>:<period start>   each renewal invoice (subscription_cycle; resets the balance)
--   expiry:plan:<subscription>:<start>   what that renewal expired
--   upgrade:<invoice>                    an upgrade's paid proration invoice: the plans' difference
--   free:<user>:<period start>           the free tier's monthly reset (53), and expiry:free:…
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

/**
 * The statement of the current user's credits: every ledger movement between `since` and
 * `until` (newest first, at most `max_rows`), with the balance after it and, for videos
 * and refunds, the video's topic. Movements of one transaction (a renewal's expiry and
 * grant) are listed debit first. RLS confines it to the caller's own ledger.
 */
create or replace function app.credit_statement(since timestamptz default '-infinity', until timestamptz default 'infinity',
                                                max_rows integer default 100)
returns table (created_at timestamptz, reason text, delta integer, balance_after bigint, topic text, job_id uuid)
language sql stable
as $$
  select m.created_at, m.reason, m.delta, m.balance_after, j.topic, m.job_id
    from (select l.*, sum(l.delta) over (order by l.created_at, l.delta, l.id) as balance_after
            from public.credit_ledger l
           where l.user_id = app.require_user_id()) m
    left join public.jobs j on j.id = m.job_id
   where m.created_at >= since and m.created_at < until
   order by m.created_at desc, m.delta desc, m.id desc
   limit greatest(least(max_rows, 1000), 1)
$$;
grant execute on function app.credit_statement(timestamptz, timestamptz, integer) to sg_app;

set local role sg_service;

/**
 * The current user's subscription as the billing page and GET /v1/billing/subscription
 * show it: the plan in use, Stripe's status and period, a scheduled downgrade or
 * cancellation, and whether a re-read from Stripe is still on its way (`syncing`).
 * SECURITY DEFINER (sg_service) only to read that last fact; every row is the caller's.
 */
create or replace function app.billing_subscription()
returns table (tier text, status text, subscribed_tier text, credits_remaining integer, credits_granted integer,
               current_period_start timestamptz, current_period_end timestamptz, cancel_at_period_end boolean,
               cancel_at timestamptz, pending_tier text, pending_change_at timestamptz, has_customer boolean,
               has_subscription boolean, subscription_live boolean, syncing boolean, synced_at timestamptz)
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
  select s.tier, s.status, s.subscribed_tier, s.credits_remaining, s.credits_total,
         s.current_period_start, s.current_period_end, s.cancel_at_period_end, s.cancel_at,
         s.pending_tier, s.pending_change_at, s.stripe_customer_id is not null,
         s.stripe_subscription_id is not null,
         s.stripe_subscription_id is not null and s.status not in ('canceled', 'incomplete_expired'),
         coalesce(y.sync_queued, false), s.stripe_synced_at
    from public.subscriptions s
    left join public.stripe_syncs y on y.subscription_id = s.stripe_subscription_id
   where s.user_id = app.require_user_id()
$$;
grant execute on function app.billing_subscription() to sg_app;

/**
 * Queues a re-read from Stripe of the current user's subscription, or of `subscription_id`
 * (one the web process has just found at Stripe, which may not be known here yet).
 * Harmless to call often: one re-read waits at a time, and a re-read only ever applies
 * what Stripe says to the subscription's own customer. Returns whether one was queued.
 */
create or replace function app.request_stripe_sync(subscription_id text default null) returns boolean
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  wanted text := subscription_id;
begin
  if wanted is null then
    select s.stripe_subscription_id into wanted from public.subscriptions s where s.user_id = app.require_user_id();
  elsif wanted !~ '^sub_[A-Za-z0-9_]{1,200}$' then
    raise exception 'invalid Stripe subscription id' using errcode = 'P0422';
  end if;
  if wanted is null then
    return false;
  end if;
  perform app._request_stripe_sync(wanted);
  return true;
end
$$;
grant execute on function app.request_stripe_sync(text) to sg_app;
