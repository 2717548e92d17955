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

grant select on public.credit_packs to sg_app, sg_service, sg_reporting;

alter table public.pack_purchases enable row level security;
alter table public.pack_purchases force row level security;
drop policy if exists "users reach only their own rows" on public.pack_purchases;
create policy "users reach only their own rows" on public.pack_purchases for all to sg_app, sg_owner
  using (user_id = (select app.current_user_id()))
  with check (user_id = (select app.current_user_id()));
drop policy if exists "service functions reach every row" on public.pack_purchases;
create policy "service functions reach every row" on public.pack_purchases for all to sg_service
  using (true) with check (true);
drop policy if exists "reporting reads every row" on public.pack_purchases;
create policy "reporting reads every row" on public.pack_purchases for select to sg_reporting using (true);
grant select on public.pack_purchases to sg_app;
grant select, insert, update on public.pack_purchases to sg_service;
grant select (user_id, pack, credits, amount_cents, refunded_cents, refund_credits, disputed_at, created_at)
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
create or replace function app._apply_charge_refunded(event_id text, charge jsonb) returns text
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
create or replace function app._apply_dispute(event_id text, dispute jsonb) returns text
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
