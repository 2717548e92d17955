-- Top-up packs: credits bought on any plan, granted once per payment in a bucket that
-- expires 12 months after the purchase, and clawed back (only what is left of that
-- bucket, never below zero) when Stripe reports the charge refunded or disputed. Like a
-- plan's credits, they move only in the functions that apply a signed, stored event
-- (51_stripe_events.sql calls these), amounts from the event's payload and credit_packs.
--
-- Idempotency keys:
--   pack:<checkout session>            a pack bought through Checkout (mode=payment), paid
--   pack:<payment intent>              a pack bought off-session (auto top-up), succeeded
--   clawback:<charge>:<refunded cents> credits asked back for the charge's refunds so far
--   clawback:dispute:<dispute>         everything left of the bucket, for a dispute
set local role sg_owner;

-- the packs are a public price list, like plans: every role reads every row, none writes
select app._ensure_forced_row_security('public.credit_packs');
select app._ensure_policy('public.credit_packs', 'everyone reads the packs on sale', $policy$
  create policy "everyone reads the packs on sale" on public.credit_packs for select
  to sg_app, sg_owner, sg_service, sg_reporting using (true)
$policy$);
select app._ensure_policy('public.credit_packs', 'migrate sets the packs'' Stripe prices', $policy$
  create policy "migrate sets the packs' Stripe prices" on public.credit_packs for update to sg_owner
  using (true) with check (true)
$policy$);
grant select on public.credit_packs to sg_app, sg_service, sg_reporting;

select app._ensure_forced_row_security('public.pack_purchases');
select app._ensure_policy('public.pack_purchases', 'users reach only their own rows', $policy$
  create policy "users reach only their own rows" on public.pack_purchases for all to sg_app, sg_owner
  using (user_id = (select app.current_user_id()))
  with check (user_id = (select app.current_user_id()))
$policy$);
select app._ensure_policy('public.pack_purchases', 'service functions reach every row', $policy$
  create policy "service functions reach every row" on public.pack_purchases for all to sg_service
  using (true) with check (true)
$policy$);
select app._ensure_policy('public.pack_purchases', 'reporting reads every row', $policy$
  create policy "reporting reads every row" on public.pack_purchases for select to sg_reporting using (true)
$policy$);
grant select on public.pack_purchases to sg_app;
grant select, insert, update on public.pack_purchases to sg_service;
grant select (user_id, pack, credits, amount_cents, bucket_id, refunded_cents, refund_credits, disputed_at, created_at)
  on public.pack_purchases to sg_reporting;

/** The packs on sale (those with a Stripe price), cheapest first. Anyone may call it. */
create or replace function app.credit_packs()
returns table (pack text, name text, credits integer, price_cents integer, on_sale boolean)
language sql stable
as $$
  select p.pack, p.name, p.credits, p.price_cents, p.stripe_price_id is not null
    from public.credit_packs p order by p.sort_order, p.pack
$$;
grant execute on function app.credit_packs() to sg_app;

set local role sg_service;

-- How long bought credits last.
create or replace function app.pack_lifetime() returns interval
language sql immutable as $$ select interval '12 months' $$;

/**
 * Grants a paid pack once per payment (`payment_key`: the Checkout Session, or the
 * PaymentIntent of an auto top-up): a purchase row and a `pack` bucket expiring 12 months
 * from now. Refuses (raises, so the event stays unapplied and is retried) an unknown pack
 * or a payment below the pack's price. Refunds and disputes of its charge that arrived
 * before the grant (and so found no pack) are applied right after it. Returns what it did.
 */
create or replace function app._grant_pack(uid uuid, pack_name text, paid_cents integer, currency text,
                                           payment_key text, checkout_session_id text, payment_intent_id text,
                                           event_id text)
returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  sold public.credit_packs%rowtype;
  bucket uuid;
  waiting record;
begin
  select * into sold from public.credit_packs p where p.pack = pack_name;
  if not found then
    raise exception 'unknown credit pack %', coalesce(pack_name, '(none)');
  end if;
  if coalesce(lower(currency), '') <> 'usd' or coalesce(paid_cents, 0) < sold.price_cents then
    raise exception 'payment % of % % is less than the % pack''s price', payment_key, paid_cents, currency, pack_name;
  end if;
  perform app._lock_balance(uid);
  bucket := app._open_bucket(uid, sold.credits, 'pack_grant', 'pack:' || payment_key, 'pack',
                             now() + app.pack_lifetime(), stripe_event_id => event_id,
                             note => sold.name || ' for $' || to_char(paid_cents / 100.0, 'FM999999990.00'));
  if bucket is null then
    return 'pack already granted';
  end if;
  -- (a grant counts toward the period's credits; a purchase is not the plan's allowance)
  update public.subscriptions s set credits_total = s.credits_total - sold.credits where s.user_id = uid;
  insert into public.pack_purchases (user_id, pack, credits, amount_cents, checkout_session_id, payment_intent_id,
                                     bucket_id)
  values (uid, sold.pack, sold.credits, paid_cents, checkout_session_id, payment_intent_id, bucket);
  for waiting in
    select e.id from public.stripe_events e
     where e.type in ('charge.refunded', 'charge.dispute.created')
       and e.payload #>> '{data,object,payment_intent}' = payment_intent_id
       and (e.processed_at is null or e.outcome like 'not a pack''s charge (yet)%')
     order by (e.payload ->> 'created')::numeric, e.id
  loop
    update public.stripe_events e set processed_at = null where e.id = waiting.id;
    perform app.apply_stripe_event(waiting.id);
  end loop;
  return 'granted ' || sold.credits || ' (' || sold.name || ')';
end
$$;

/**
 * checkout.session.completed / async_payment_succeeded of a pack Checkout (mode=payment):
 * grants once per session, and only when Stripe says it is paid (a delayed payment method
 * completes unpaid and is granted by its async_payment_succeeded).
 */
create or replace function app._apply_pack_checkout(event_id text, session jsonb) returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  uid uuid;
begin
  if session #>> '{metadata,pack}' is null then
    return 'payment checkout of no pack: nothing to apply';
  end if;
  if session ->> 'payment_status' is distinct from 'paid' then
    return 'pack checkout not paid (' || coalesce(session ->> 'payment_status', 'no status') || '): nothing granted';
  end if;
  uid := app._stripe_user(coalesce(session #>> '{metadata,user_id}', session ->> 'client_reference_id'),
                          session ->> 'customer', null);
  return app._grant_pack(uid, session #>> '{metadata,pack}', (session ->> 'amount_total')::integer,
                         session ->> 'currency', session ->> 'id', session ->> 'id', session ->> 'payment_intent',
                         event_id);
end
$$;

/** The pack purchase a charge paid for (null: not a pack's charge). */
create or replace function app._purchase_of_charge(charge jsonb) returns public.pack_purchases
language sql stable
set search_path = pg_catalog, pg_temp
as $$
  select p.* from public.pack_purchases p where p.payment_intent_id = charge ->> 'payment_intent'
$$;

/**
 * charge.refunded: takes back the credits the refunded share of a pack's charge stands for
 * (a partial refund a share, rounded up; the whole refund all), limited to what is still
 * unspent in the pack's bucket. Each refunded total is applied once. Stripe's events come
 * in any order: one that arrives before the pack's grant is applied by that grant.
 */
create or replace function app._apply_charge_refunded(charge jsonb) returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  purchase public.pack_purchases;
  refunded integer := (charge ->> 'amount_refunded')::integer;
  charged integer := (charge ->> 'amount')::integer;
  owed integer;
  taken integer;
begin
  purchase := app._purchase_of_charge(charge);
  if purchase.id is null then
    return 'not a pack''s charge (yet): nothing to take back';
  end if;
  perform app._lock_balance(purchase.user_id);
  select * into purchase from public.pack_purchases p where p.id = purchase.id;
  if refunded is null or charged is null or charged <= 0 or refunded <= purchase.refunded_cents then
    return 'refund already applied';
  end if;
  owed := ceil(purchase.credits * least(refunded, charged)::numeric / charged)::integer - purchase.refund_credits;
  taken := app._claw_back(purchase.bucket_id, owed, 'clawback:' || (charge ->> 'id') || ':' || refunded,
                          format('%s refunded ($%s): the unspent credits of this pack', purchase.pack,
                                 to_char(refunded / 100.0, 'FM999999990.00')));
  update public.pack_purchases p set refunded_cents = refunded, refund_credits = p.refund_credits + owed
   where p.id = purchase.id;
  return 'refund: took back ' || taken || ' of ' || owed || ' credits';
end
$$;

/** charge.dispute.created: takes back everything still unspent of the disputed pack, once per dispute. */
create or replace function app._apply_dispute(dispute jsonb) returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  purchase public.pack_purchases;
  taken integer;
begin
  purchase := app._purchase_of_charge(dispute);
  if purchase.id is null then
    return 'not a pack''s charge (yet): nothing to take back';
  end if;
  taken := app._claw_back(purchase.bucket_id, purchase.credits, 'clawback:dispute:' || (dispute ->> 'id'),
                          purchase.pack || ' disputed: the unspent credits of this pack');
  update public.pack_purchases p set disputed_at = coalesce(p.disputed_at, now()) where p.id = purchase.id;
  return 'dispute: took back ' || taken || ' credits';
end
$$;

-- -- Auto top-up -------------------------------------------------------------------------
--
-- A paid account may choose a pack to buy off-session (a PaymentIntent with its saved
-- card) whenever a spend leaves fewer than `threshold` credits: at most once per
-- `min_hours_between` hours and `max_per_month` times a calendar month, one at a time.
-- The spend queues the attempt in its own transaction (app._after_spend); the worker
-- asks Stripe (worker/billing.py); the credits come only with Stripe's signed
-- payment_intent.succeeded (key pack:<payment intent>), like every other credit. A
-- failed payment turns auto top-up off and mails the user.
set local role sg_owner;

select app._ensure_forced_row_security('public.auto_top_up');
select app._ensure_forced_row_security('public.auto_top_up_attempts');
do $$
declare
  tenant_table text;
begin
  foreach tenant_table in array array['auto_top_up', 'auto_top_up_attempts'] loop
    -- changed only where they differ: an unchanged policy takes no lock on the table
    perform app._ensure_policy(format('public.%I', tenant_table)::regclass, 'users reach only their own rows',
      format('create policy "users reach only their own rows" on public.%I for all to sg_app, sg_owner '
             'using (user_id = (select app.current_user_id())) '
             'with check (user_id = (select app.current_user_id()))', tenant_table));
    perform app._ensure_policy(format('public.%I', tenant_table)::regclass, 'service functions reach every row',
      format('create policy "service functions reach every row" on public.%I for all to sg_service '
             'using (true) with check (true)', tenant_table));
  end loop;
end
$$;
grant select on public.auto_top_up, public.auto_top_up_attempts to sg_app;
grant select, insert, update on public.auto_top_up, public.auto_top_up_attempts to sg_service;

/** The current user's auto top-up setting (no row: never set up). */
create or replace function app.auto_top_up()
returns table (enabled boolean, pack text, threshold integer, min_hours_between integer, max_per_month integer,
               disabled_reason text, bought_this_month integer, last_attempt_at timestamptz)
language sql stable
as $$
  select a.enabled, a.pack, a.threshold, a.min_hours_between, a.max_per_month, a.disabled_reason,
         (select count(*)::integer from public.auto_top_up_attempts t
           where t.user_id = a.user_id and t.status = 'succeeded'
             and t.created_at >= date_trunc('month', now(), 'UTC')),
         (select max(t.created_at) from public.auto_top_up_attempts t where t.user_id = a.user_id)
    from public.auto_top_up a
   where a.user_id = app.require_user_id()
$$;
grant execute on function app.auto_top_up() to sg_app;

/**
 * Sets the current user's auto top-up. Turning it on needs a paid plan and a confirmed
 * address (P0403) and a pack on sale (P0422); off is always allowed. P0422 for limits out
 * of range. Clears a reason it was turned off for.
 */
create or replace function app.set_auto_top_up(enabled boolean, pack text, threshold integer,
                                               min_hours_between integer default 24, max_per_month integer default 3)
returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  uid uuid := app.require_user_id();
begin
  if enabled is null then
    raise exception 'enabled must be true or false' using errcode = 'P0422';
  end if;
  if pack is null or not exists (select 1 from public.credit_packs p where p.pack = set_auto_top_up.pack
                                                                    and p.stripe_price_id is not null) then
    raise exception 'pack must be one of the packs on sale' using errcode = 'P0422';
  end if;
  if threshold is null or threshold not between 1 and 1000 then
    raise exception 'threshold must be from 1 to 1000 credits' using errcode = 'P0422';
  end if;
  if min_hours_between is null or min_hours_between not between 1 and 720 then
    raise exception 'min_hours_between must be from 1 to 720' using errcode = 'P0422';
  end if;
  if max_per_month is null or max_per_month not between 1 and 31 then
    raise exception 'max_per_month must be from 1 to 31' using errcode = 'P0422';
  end if;
  if enabled then
    if (select s.tier from public.subscriptions s where s.user_id = uid) = 'free' then
      raise exception 'Auto top-up is for paid plans.' using errcode = 'P0403';
    end if;
    if not (select u.is_verified from public.users u where u.id = uid) then
      raise exception 'Confirm your email address first.' using errcode = 'P0403';
    end if;
  end if;
  insert into public.auto_top_up as a (user_id, enabled, pack, threshold, min_hours_between, max_per_month)
  values (uid, enabled, pack, threshold, min_hours_between, max_per_month)
  on conflict (user_id) do update
    set enabled = excluded.enabled, pack = excluded.pack, threshold = excluded.threshold,
        min_hours_between = excluded.min_hours_between, max_per_month = excluded.max_per_month,
        disabled_reason = null, updated_at = now();
end
$$;
grant execute on function app.set_auto_top_up(boolean, text, integer, integer, integer) to sg_app;

set local role sg_service;

/**
 * What a spend sets off, in the spend's transaction (which holds the balance lock, so two
 * spends never both act): the low-balance mail when this spend took the balance below 20 %
 * of the plan's allowance (once per period: key low_balance:<user>:<period start>), and an
 * auto top-up attempt when the balance is below the account's threshold and the limits
 * allow one (no attempt waiting, none within min_hours_between, fewer than max_per_month
 * this month). Called by app.spend_credit_and_create_job only.
 */
create or replace function app._after_spend(uid uuid, left_after integer) returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  allowance integer;
  period_start timestamptz;
  paid boolean;
  setting public.auto_top_up%rowtype;
  attempt uuid;
begin
  select p.credits, s.current_period_start, s.tier <> 'free' into allowance, period_start, paid
    from public.subscriptions s join public.plans p on p.tier = s.tier where s.user_id = uid;
  if left_after < allowance * 0.2 and left_after + 1 >= allowance * 0.2 then
    perform app._queue_email(uid, 'low_balance', 'low_balance:' || uid || ':' || extract(epoch from period_start)::bigint,
                             jsonb_build_object('credits_left', left_after, 'allowance', allowance));
  end if;
  select * into setting from public.auto_top_up a where a.user_id = uid and a.enabled and left_after < a.threshold;
  if not found or not paid then
    return;
  end if;
  if exists (select 1 from public.auto_top_up_attempts t
              where t.user_id = uid
                and (t.status = 'pending' or t.created_at > now() - make_interval(hours => setting.min_hours_between)))
     or (select count(*) from public.auto_top_up_attempts t
          where t.user_id = uid and t.status <> 'failed'
            and t.created_at >= date_trunc('month', now(), 'UTC')) >= setting.max_per_month then
    return;
  end if;
  insert into public.auto_top_up_attempts (user_id, pack) values (uid, setting.pack) returning id into attempt;
  insert into public.pgqueuer (priority, entrypoint, payload, status, dedupe_key)
  values (10, 'auto_top_up', convert_to(json_build_object('attempt_id', attempt)::text, 'UTF8'), 'queued',
          'auto_top_up:' || attempt);
end
$$;
grant execute on function app._after_spend(uuid, integer) to sg_owner;

/**
 * The worker's view of a waiting auto top-up attempt: whom to charge (the Stripe customer),
 * for which price and amount. No row once the attempt is finished.
 */
create or replace function app.auto_top_up_job(attempt uuid)
returns table (user_id uuid, pack text, customer_id text, price_id text, amount_cents integer)
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
  select t.user_id, t.pack, s.stripe_customer_id, p.stripe_price_id, p.price_cents
    from public.auto_top_up_attempts t
    join public.subscriptions s on s.user_id = t.user_id
    join public.credit_packs p on p.pack = t.pack
   where t.id = attempt and t.status = 'pending'
$$;
grant execute on function app.auto_top_up_job(uuid) to sg_worker;

/**
 * The worker records what Stripe answered for an attempt, once: the PaymentIntent it
 * created, and `error` when the payment failed (auto top-up is then turned off and the
 * user mailed). It grants nothing: the credits come with the signed
 * payment_intent.succeeded. Returns the attempt's status.
 */
create or replace function app.finish_auto_top_up(attempt uuid, payment_intent_id text, error text default null)
returns text
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  done public.auto_top_up_attempts%rowtype;
begin
  update public.auto_top_up_attempts t
     set payment_intent_id = coalesce(t.payment_intent_id, finish_auto_top_up.payment_intent_id),
         status = case when error is null then t.status else 'failed' end,
         error = left(finish_auto_top_up.error, 500), finished_at = case when error is null then t.finished_at else now() end
   where t.id = attempt and t.status = 'pending'
  returning t.* into done;
  if not found then
    return (select t.status from public.auto_top_up_attempts t where t.id = attempt);
  end if;
  if error is not null then
    update public.auto_top_up a
       set enabled = false, updated_at = now(),
           disabled_reason = left('The payment for your automatic top-up failed: ' || error, 500)
     where a.user_id = done.user_id;
    perform app._queue_email(done.user_id, 'auto_top_up_failed', 'auto_top_up_failed:' || attempt,
                             jsonb_build_object('pack', done.pack, 'error', left(error, 200)));
  end if;
  return done.status;
end
$$;
grant execute on function app.finish_auto_top_up(uuid, text, text) to sg_worker;

/**
 * payment_intent.succeeded of an auto top-up (metadata.auto_top_up_attempt): grants the
 * attempt's pack once per PaymentIntent, for what Stripe says was received. Other
 * PaymentIntents (Checkout's) are granted by their checkout event.
 */
create or replace function app._apply_auto_top_up_paid(event_id text, intent jsonb) returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  attempt public.auto_top_up_attempts%rowtype;
  outcome text;
begin
  if intent #>> '{metadata,auto_top_up_attempt}' !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
    return 'not an auto top-up: nothing to apply';
  end if;
  select * into attempt from public.auto_top_up_attempts t
   where t.id = (intent #>> '{metadata,auto_top_up_attempt}')::uuid;
  if not found or attempt.pack is distinct from intent #>> '{metadata,pack}' then
    raise exception 'payment intent % names no auto top-up attempt of ours', intent ->> 'id';
  end if;
  outcome := app._grant_pack(attempt.user_id, attempt.pack, (intent ->> 'amount_received')::integer,
                             intent ->> 'currency', intent ->> 'id', null, intent ->> 'id', event_id);
  update public.auto_top_up_attempts t
     set status = 'succeeded', payment_intent_id = intent ->> 'id', finished_at = coalesce(t.finished_at, now())
   where t.id = attempt.id and t.status = 'pending';
  return 'auto top-up: ' || outcome;
end
$$;
