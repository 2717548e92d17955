-- Stripe's webhook: the signature is checked here, in the database, so the web role can
-- store an event only if Stripe signed it; every event is stored before anything is
-- applied; the money an event moves (a paid invoice's credits) is applied in the same
-- transaction, keyed (50_billing.sql lists the keys); every subscription-affecting event
-- queues a re-read of its subscription (52_stripe_sync.sql), which alone changes state.
-- An event that fails to apply is kept with its error and retried by the worker with
-- backoff; Stripe is answered 2xx once the event is stored.
set local role sg_service;

/**
 * HMAC-SHA256 (RFC 2104) from Postgres's built-in sha256(), so the check needs no
 * extension: pgcrypto is missing from some Postgres builds (the embedded server that
 * `make run` starts has none). tests/test_stripe_events.py compares it with Python's hmac.
 */
create or replace function app.hmac_sha256(key bytea, message bytea) returns bytea
language plpgsql immutable strict parallel safe
set search_path = pg_catalog, pg_temp
as $$
declare
  block bytea := case when length(key) > 64 then sha256(key) else key end;
  inner_pad bytea := decode(repeat('36', 64), 'hex');
  outer_pad bytea := decode(repeat('5c', 64), 'hex');
begin
  block := block || decode(repeat('00', 64 - length(block)), 'hex');
  for i in 0..63 loop
    inner_pad := set_byte(inner_pad, i, get_byte(block, i) # 54);   -- 0x36
    outer_pad := set_byte(outer_pad, i, get_byte(block, i) # 92);   -- 0x5c
  end loop;
  return sha256(outer_pad || sha256(inner_pad || message));
end
$$;

/**
 * Raises P0400 unless `signature_header` (Stripe-Signature: t=<unix time>,v1=<hex>,…)
 * carries an HMAC-SHA256 of "<t>.<raw_body>" under one of the stored webhook secrets,
 * made within 300 seconds of now in either direction. Digests are compared, not the
 * signatures, so the comparison's time says nothing about the expected value.
 */
create or replace function app._verify_stripe_signature(raw_body text, signature_header text) returns void
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
  signed_at bigint;
  candidates text[];
begin
  -- Stripe's own parser: comma-separated items, each split at its first '='
  select max(case when split_part(item, '=', 1) = 't' and substr(item, 3) ~ '^\d{1,12}$'
                  then substr(item, 3)::bigint end),
         array_agg(substr(item, 4)) filter (where split_part(item, '=', 1) = 'v1')
    into signed_at, candidates
    from unnest(string_to_array(coalesce(signature_header, ''), ',')) as item;
  if signed_at is null or candidates is null then
    raise exception 'Invalid Stripe signature.' using errcode = 'P0400';
  end if;
  if abs(extract(epoch from now()) - signed_at) > 300 then
    raise exception 'Stripe signature timestamp is outside the 300-second tolerance.' using errcode = 'P0400';
  end if;
  if not exists (
      select 1
        from public.stripe_webhook_secrets s, unnest(candidates) as candidate
       where sha256(convert_to(candidate, 'UTF8')) = sha256(convert_to(encode(
               app.hmac_sha256(convert_to(s.secret, 'UTF8'), convert_to(signed_at || '.' || raw_body, 'UTF8')),
               'hex'), 'UTF8'))) then
    raise exception 'Invalid Stripe signature.' using errcode = 'P0400';
  end if;
end
$$;

/** The Stripe subscription an event's object belongs to, in any API version's shape (or null). */
create or replace function app.stripe_event_subscription(event_type text, obj jsonb) returns text
language sql immutable
as $$
  select case
    when event_type like 'customer.subscription.%' then obj ->> 'id'
    when event_type like 'invoice.%' then coalesce(obj #>> '{parent,subscription_details,subscription}',
                                                    obj ->> 'subscription')
    when event_type like 'checkout.session.%' or event_type like 'subscription_schedule.%' then obj ->> 'subscription'
  end
$$;

/** The Stripe price id of a subscription item or invoice line, whichever API version wrote it. */
create or replace function app.stripe_price_of(item jsonb) returns text
language sql immutable
as $$
  select coalesce(item #>> '{pricing,price_details,price}', item #>> '{price,id}',
                  case when jsonb_typeof(item -> 'price') = 'string' then item ->> 'price' end, item #>> '{plan,id}')
$$;

/**
 * Whether an invoice line is a proration: today's `parent.subscription_item_details` (an
 * immediate proration) or `parent.invoice_item_details` (a pending proration item billed
 * with the next renewal), or the old top-level flag.
 */
create or replace function app.stripe_line_is_proration(line jsonb) returns boolean
language sql immutable
as $$
  select coalesce((line #>> '{parent,subscription_item_details,proration}')::boolean,
                  (line #>> '{parent,invoice_item_details,proration}')::boolean,
                  (line ->> 'proration')::boolean, false)
$$;

/** Seconds since the epoch in a Stripe payload -> timestamptz (null stays null). */
create or replace function app.stripe_time(value jsonb) returns timestamptz
language sql immutable
as $$ select case when jsonb_typeof(value) = 'number' then to_timestamp((value #>> '{}')::double precision) end $$;

/**
 * The webhook's one call (as sg_app): checks the signature (P0400 if it is not Stripe's),
 * parses and stores the event, and applies it (app.apply_stripe_event). Returns that
 * outcome; 'duplicate: …' for an id already stored; 'refused: …' for a signed event whose
 * own time is not a moment at all (kept, marked failed, never applied).
 */
create or replace function app.receive_stripe_event(raw_body text, signature_header text) returns text
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  body jsonb;
  created numeric;
  stored public.stripe_events%rowtype;
begin
  perform app._verify_stripe_signature(raw_body, signature_header);
  begin
    body := raw_body::jsonb;
  exception when others then  -- malformed JSON, or text jsonb cannot hold (\u0000)
    raise exception 'Webhook body is not valid JSON.' using errcode = 'P0400';
  end;
  if jsonb_typeof(body) is distinct from 'object' or jsonb_typeof(body -> 'id') is distinct from 'string'
     or jsonb_typeof(body -> 'type') is distinct from 'string'
     or length(body ->> 'id') not between 1 and 255 or length(body ->> 'type') not between 1 and 255 then
    raise exception 'Webhook body is not a Stripe event.' using errcode = 'P0400';
  end if;
  select * into stored from public.stripe_events e where e.id = body ->> 'id';
  if found then
    return 'duplicate: ' || case when stored.processed_at is not null then 'already applied'
                                 else coalesce(stored.error, 'not applied yet') end;
  end if;
  insert into public.stripe_events (id, type, payload, subscription_id)
  values (body ->> 'id', body ->> 'type', body,
          app.stripe_event_subscription(body ->> 'type', body #> '{data,object}'))
  on conflict (id) do nothing;
  if not found then
    return 'duplicate: received concurrently';
  end if;
  created := case when jsonb_typeof(body -> 'created') = 'number' then (body ->> 'created')::numeric end;
  -- Stripe began in 2010, and a time past the year 9999 is no time at all (test clocks
  -- do date events in the simulated future, so the future as such is allowed)
  if created is null or created < 1262304000 or created > 253402300799 then
    update public.stripe_events e set error = 'refused: the event''s created time is out of range'
     where e.id = body ->> 'id';
    return 'refused: the event''s created time is out of range';
  end if;
  return app.apply_stripe_event(body ->> 'id');
end
$$;
grant execute on function app.receive_stripe_event(text, text) to sg_app;

/**
 * Stores an event without applying it; returns whether it was new and whether it has been
 * applied. For operators and tests that load events they already trust; the webhook uses
 * app.receive_stripe_event, which checks the signature first.
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
  insert into public.stripe_events as e (id, type, payload, subscription_id)
  values (event_id, event_type, payload, app.stripe_event_subscription(event_type, payload #> '{data,object}'))
  on conflict (id) do nothing
  returning e.id into inserted;
  return query select inserted is not null, e.processed_at is not null from public.stripe_events e where e.id = event_id;
end
$$;

/**
 * Applies one stored event, once (concurrent callers wait on the event's row lock; the
 * second sees it applied): queues a re-read of its subscription, then moves the money
 * the event says was paid. Returns 'applied', 'ignored' (a type that moves no money and
 * concerns no subscription), 'already applied', or 'failed: …' — a failure is kept
 * unprocessed with its error and retried later by the worker (app._retry_stripe_event_later);
 * it never raises, so one bad event blocks no other.
 */
create or replace function app.apply_stripe_event(event_id text) returns text
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  event public.stripe_events%rowtype;
  obj jsonb;
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
  if event.subscription_id is not null then
    perform app._request_stripe_sync(event.subscription_id);
  end if;
  begin
    outcome := case
      when event.type in ('invoice.paid', 'invoice.payment_succeeded') then app._apply_invoice_paid(event.id, obj)
      when event.type = 'invoice.payment_failed' then app._apply_payment_failed(event.id, obj)
      when event.type in ('checkout.session.completed', 'checkout.session.async_payment_succeeded',
                          'checkout.session.async_payment_failed') then app._apply_checkout(obj)
      when event.type = 'charge.succeeded' then app._note_payment_fingerprint(obj)
      when event.subscription_id is not null then 'state: re-read from Stripe'
    end;
  exception when others then
    update public.stripe_events e set error = sqlerrm, outcome = null, attempts = e.attempts + 1
     where e.id = event.id;
    perform app._retry_stripe_event_later(event.id, event.attempts + 1);
    return 'failed: ' || sqlerrm;
  end;
  update public.stripe_events e
     set processed_at = now(), error = null, attempts = e.attempts + 1, outcome = coalesce(outcome, 'ignored')
   where e.id = event.id;
  return case when outcome is null then 'ignored' else 'applied' end;
end
$$;

-- How many times the worker re-applies a failed event, and the longest wait between tries.
-- 1, 2, 4, … minutes: ten tries reach about 17 hours, well inside Stripe's own 3 days.
create or replace function app._retry_stripe_event_later(event_id text, attempts integer) returns void
language sql
set search_path = pg_catalog, pg_temp
as $$
  insert into public.pgqueuer (priority, entrypoint, payload, status, execute_after, dedupe_key)
  select 5, 'stripe_event_retry', convert_to(json_build_object('event_id', event_id)::text, 'UTF8'), 'queued',
         now() + make_interval(mins => power(2, attempts - 1)::integer),
         'stripe_event_retry:' || event_id || ':' || attempts
   where attempts < 10
  on conflict do nothing
$$;

/** The worker's retry of a failed event (see app.apply_stripe_event). */
create or replace function app.retry_stripe_event(event_id text) returns text
language sql security definer
set search_path = pg_catalog, pg_temp
as $$ select app.apply_stripe_event(event_id) $$;
grant execute on function app.retry_stripe_event(text) to sg_worker;

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
 * Whether `subscription_id` is (now) the user's current subscription, adopting it when the
 * user has none or the current one has ended (`live` false: the candidate itself has
 * ended, so it replaces nothing). Another live subscription is never replaced: its events
 * and invoices are kept and apply to nothing, and reconciliation reports it.
 */
create or replace function app._adopt_subscription(uid uuid, subscription_id text, live boolean default null)
returns boolean
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  current_id text;
  current_status text;
begin
  select s.stripe_subscription_id, s.status into current_id, current_status
    from public.subscriptions s where s.user_id = uid for update;
  if current_id = subscription_id then
    return true;
  end if;
  if current_id is null or (current_status in ('canceled', 'incomplete_expired') and live is distinct from false) then
    update public.subscriptions s set stripe_subscription_id = subscription_id, updated_at = now()
     where s.user_id = uid;
    return true;
  end if;
  return false;
end
$$;

/** The first period's plan grant: once per subscription, and not at all once a renewal of it has been applied. */
create or replace function app._grant_initial(uid uuid, subscription_id text, tier text, event_id text,
                                              period_start timestamptz)
returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  amount integer;
  granted boolean;
begin
  select p.credits into amount from public.plans p where p.tier = _grant_initial.tier;
  if amount is null or amount = 0 then
    return 'no credits for plan ' || coalesce(tier, '?');
  end if;
  -- a renewal of this subscription already reset the balance: the first period is over,
  -- and its grant (arriving late) would only inflate the new one
  if exists (select 1 from public.credit_ledger l
              where l.user_id = uid and l.reason = 'renewal'
                and l.idempotency_key like 'plan:' || subscription_id || ':%') then
    return 'first period already renewed';
  end if;
  select g.granted into granted
    from app.grant_credits(uid, amount, 'plan_grant', 'plan:' || subscription_id || ':initial',
                           event_id, period_start) g;
  return case when granted then 'granted ' || amount else 'already granted' end;
end
$$;

/** Credits of the plan sold at a Stripe price (null for a price that is no plan of ours). */
create or replace function app._plan_of_price(price_id text) returns public.plans
language sql stable
set search_path = pg_catalog, pg_temp
as $$ select p.* from public.plans p where p.stripe_price_id = price_id $$;

/**
 * invoice.paid / invoice.payment_succeeded (one invoice may come under both: keyed, so
 * once). Only a paid invoice of the user's current subscription moves credits, and the
 * plan is read from the invoice line that is the period's charge — never a proration,
 * never by position:
 *   subscription_create  the first period: the plan's credits
 *   subscription_cycle   a renewal: the balance resets to the plan's credits for that period
 *   subscription_update  an upgrade charged at once: the difference between the new and
 *                        the old plan's credits (its positive and negative proration lines)
 * An invoice of another subscription raises, so it stays unapplied with its error, is
 * retried, and is applied if that subscription becomes the current one.
 */
create or replace function app._apply_invoice_paid(event_id text, invoice jsonb)
returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  subscription_id text := app.stripe_event_subscription('invoice.paid', invoice);
  details jsonb := coalesce(invoice #> '{parent,subscription_details}', invoice -> 'subscription_details');
  uid uuid;
  period_line jsonb;
  plan public.plans;
  upgraded_from public.plans;
  upgraded_to public.plans;
  period_start timestamptz;
  period_end timestamptz;
  difference integer;
  granted boolean;
begin
  -- (API versions before 2018 had no status, only `paid`)
  if coalesce(invoice ->> 'status', case when (invoice ->> 'paid')::boolean then 'paid' end) is distinct from 'paid' then
    return 'invoice not paid (' || coalesce(invoice ->> 'status', 'no status') || '): nothing granted';
  end if;
  if subscription_id is null then
    return 'not a subscription invoice: nothing granted';
  end if;
  uid := app._stripe_user(details #>> '{metadata,user_id}', invoice ->> 'customer', subscription_id);
  if not app._adopt_subscription(uid, subscription_id) then
    raise exception 'invoice % is for subscription %, which is not the customer''s current subscription',
      invoice ->> 'id', subscription_id;
  end if;

  select line into period_line
    from jsonb_array_elements(coalesce(invoice #> '{lines,data}', '[]')) with ordinality as l(line, n)
   where not app.stripe_line_is_proration(line) and (app._plan_of_price(app.stripe_price_of(line))).tier is not null
   order by n limit 1;
  plan := app._plan_of_price(app.stripe_price_of(period_line));
  period_start := app.stripe_time(period_line #> '{period,start}');
  period_end := app.stripe_time(period_line #> '{period,end}');

  perform app._queue_email(uid, 'receipt', 'receipt:' || coalesce(invoice ->> 'id', event_id), jsonb_build_object(
    'plan', coalesce(plan.name, (select p.name from public.plans p join public.subscriptions s on s.tier = p.tier
                                  where s.user_id = uid)),
    'credits', plan.credits,
    'amount_cents', coalesce((invoice ->> 'amount_paid')::integer, plan.price_cents),
    'period_start', period_start, 'period_end', period_end,
    'renewal', invoice ->> 'billing_reason' = 'subscription_cycle'));
  perform app._reward_referrer(uid, invoice ->> 'id',
                               coalesce((invoice ->> 'amount_paid')::integer, (invoice ->> 'total')::integer));

  case coalesce(invoice ->> 'billing_reason', 'subscription_create')
    when 'subscription_cycle' then
      if plan.tier is null or period_start is null then
        raise exception 'renewal invoice % has no period line for a plan', invoice ->> 'id';
      end if;
      if app.reset_credits(uid, plan.credits, 'renewal',
                           'plan:' || subscription_id || ':' || extract(epoch from period_start)::bigint,
                           period_start, period_end, event_id, move_period => false) then
        return 'renewed: balance ' || plan.credits;
      end if;
      return 'renewal already applied (or older than one applied)';
    when 'subscription_update' then
      select p.* into upgraded_to
        from jsonb_array_elements(coalesce(invoice #> '{lines,data}', '[]')) as l(line)
        join public.plans p on p.stripe_price_id = app.stripe_price_of(line)
       where app.stripe_line_is_proration(line) and (line ->> 'amount')::numeric > 0
       order by (line ->> 'amount')::numeric desc limit 1;
      select p.* into upgraded_from
        from jsonb_array_elements(coalesce(invoice #> '{lines,data}', '[]')) as l(line)
        join public.plans p on p.stripe_price_id = app.stripe_price_of(line)
       where app.stripe_line_is_proration(line) and (line ->> 'amount')::numeric < 0
       order by (line ->> 'amount')::numeric limit 1;
      difference := coalesce(upgraded_to.credits, 0) - coalesce(upgraded_from.credits, 0);
      if upgraded_to.tier is null or upgraded_from.tier is null or difference <= 0 then
        return 'plan change without more credits: nothing granted';
      end if;
      -- arriving after the renewal that ended the upgraded period, it would only inflate the new one
      select max(app.stripe_time(line #> '{period,end}')) into period_end
        from jsonb_array_elements(coalesce(invoice #> '{lines,data}', '[]')) as l(line)
       where app.stripe_line_is_proration(line);
      if exists (select 1 from public.credit_ledger l
                  where l.user_id = uid and l.reason = 'renewal' and l.period_start >= period_end) then
        return 'upgrade of a period already renewed: nothing granted';
      end if;
      select g.granted into granted
        from app.grant_credits(uid, difference, 'upgrade_grant', 'upgrade:' || (invoice ->> 'id'), event_id) g;
      return case when granted then 'upgrade ' || upgraded_from.tier || ' -> ' || upgraded_to.tier
                                    || ': granted ' || difference
                  else 'upgrade already granted' end;
    when 'subscription_create' then
      if plan.tier is null then
        raise exception 'first invoice % has no period line for a plan', invoice ->> 'id';
      end if;
      return app._grant_initial(uid, subscription_id, plan.tier, event_id, period_start);
    else
      return 'billing_reason ' || (invoice ->> 'billing_reason') || ': nothing granted';
  end case;
end
$$;

/**
 * checkout.session.*: a subscription Checkout links the Stripe customer to its user and
 * adopts the subscription when the user has no live one. It grants nothing: a subscription's
 * credits come with its paid invoice (a delayed payment method pays it later, or never).
 */
create or replace function app._apply_checkout(session jsonb) returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  uid uuid;
begin
  if session ->> 'mode' is distinct from 'subscription' then
    return 'checkout in ' || coalesce(session ->> 'mode', 'no') || ' mode: nothing to apply';
  end if;
  uid := app._stripe_user(coalesce(session #>> '{metadata,user_id}', session ->> 'client_reference_id'),
                          session ->> 'customer', session ->> 'subscription');
  update public.subscriptions s set stripe_customer_id = session ->> 'customer', updated_at = now()
   where s.user_id = uid and s.stripe_customer_id is null and session ->> 'customer' is not null;
  if session ->> 'subscription' is not null and app._adopt_subscription(uid, session ->> 'subscription') then
    return 'linked subscription (payment ' || coalesce(session ->> 'payment_status', 'unknown') || ')';
  end if;
  return 'checkout of a subscription that is not the current one: linked nothing';
end
$$;

/** invoice.payment_failed of the current subscription: one notice per invoice (the status comes from the re-read). */
create or replace function app._apply_payment_failed(event_id text, invoice jsonb) returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  subscription_id text := app.stripe_event_subscription('invoice.payment_failed', invoice);
  details jsonb := coalesce(invoice #> '{parent,subscription_details}', invoice -> 'subscription_details');
  uid uuid;
begin
  if subscription_id is null then
    return 'not a subscription invoice';
  end if;
  uid := app._stripe_user(details #>> '{metadata,user_id}', invoice ->> 'customer', subscription_id);
  if not app._adopt_subscription(uid, subscription_id) then
    return 'ignored: not the customer''s current subscription';
  end if;
  perform app._queue_email(uid, 'payment_failed', 'payment_failed:' || coalesce(invoice ->> 'id', event_id));
  perform app._emit_webhook(uid, 'payment.failed', 'payment.failed:' || coalesce(invoice ->> 'id', event_id),
                            jsonb_build_object('invoice_id', invoice ->> 'id', 'amount_due', invoice -> 'amount_due',
                                               'currency', invoice ->> 'currency',
                                               'hosted_invoice_url', invoice ->> 'hosted_invoice_url'));
  return 'payment failure noted';
end
$$;

/**
 * Re-applies stored events (all, or received since `since`) in the order Stripe created
 * them: money movements are keyed, so only what is missing happens, and every
 * subscription is re-read. For operators (`flask --app web replay-stripe-events`).
 */
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
     where (since is null or e.received_at >= since) and coalesce(e.error, '') not like 'refused:%'
     order by coalesce((e.payload ->> 'created')::numeric, 0), e.received_at, e.id
  loop
    update public.stripe_events e set processed_at = null where e.id = stored.id;
    return query select stored.id, app.apply_stripe_event(stored.id);
  end loop;
end
$$;
