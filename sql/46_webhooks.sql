-- Webhooks to customers (issue 20 item 3): events about a customer's own account, sent
-- to the endpoints they registered, signed like Stripe signs (`t=…,v1=HMAC-SHA256(t.body)`).
--
-- An event is written, with one delivery per subscribed endpoint and a `webhook_delivery`
-- pgqueuer entry per delivery, in the transaction of the business change that caused it
-- (a job finishing, a balance running low, a subscription changing, a payment failing),
-- so an event exists exactly when its change committed. The worker (worker/webhooks.py)
-- delivers at least once: each attempt is fenced by its number and logged; a failure is
-- retried 1, 3, 9 … minutes later (at most 12 hours apart) until three days have passed;
-- a delivery that gives up on an endpoint that has not answered 2xx since disables the
-- endpoint and mails its owner.
--
-- Event types, and the business fact each is emitted once for (its dedupe key):
--   render.completed      a job completed                       render.completed:<job>
--   render.failed         a job failed for good and was refunded render.failed:<job>
--   batch.completed       every job of a batch finished         batch.completed:<batch>
--   credits.low           the balance fell to 20% of the plan   credits.low:<user>:<period start>:<total>
--   credits.expiring      unused credits end within 3 days      credits.expiring:<user>:<period end>
--   subscription.updated  plan, status or cancellation changed  subscription.updated:<user>:<transaction>
--   payment.failed        Stripe could not take a payment       payment.failed:<invoice>
--   webhook.test          "send test event" (that endpoint only)  webhook.test:<random>

set local role sg_owner;

-- Tenant tables: the owner reads its rows (never an endpoint's secret); only the
-- functions below write.
do $$
declare
  tenant_table text;
begin
  foreach tenant_table in array array['webhook_endpoints', 'webhook_events', 'webhook_deliveries',
                                         'webhook_attempts'] loop
    perform app._ensure_forced_row_security(format('public.%I', tenant_table)::regclass);
    perform app._ensure_policy(format('public.%I', tenant_table)::regclass, 'users reach only their own rows',
      format($policy$
      create policy "users reach only their own rows" on public.%I for all to sg_app, sg_owner
        using (user_id = (select app.current_user_id()))
        with check (user_id = (select app.current_user_id()))
    $policy$, tenant_table));
    perform app._ensure_policy(format('public.%I', tenant_table)::regclass, 'service functions reach every row',
      format($policy$
      create policy "service functions reach every row" on public.%I for all to sg_service
        using (true) with check (true)
    $policy$, tenant_table));
  end loop;
end
$$;

grant select (id, user_id, url, description, event_types, created_at, consecutive_failures, last_success_at,
              disabled_at, disabled_reason) on public.webhook_endpoints to sg_app;
grant select on public.webhook_events, public.webhook_deliveries, public.webhook_attempts to sg_app;
grant select, insert, update, delete on public.webhook_endpoints, public.webhook_events,
  public.webhook_deliveries, public.webhook_attempts to sg_service;

/** Every event type an endpoint may subscribe to. Anyone may call it. */
create or replace function app.webhook_event_types() returns text[]
language sql immutable parallel safe
set search_path = pg_catalog, pg_temp
as $$
  select array['render.completed', 'render.failed', 'batch.completed', 'credits.low', 'credits.expiring',
               'subscription.updated', 'payment.failed']
$$;
grant execute on function app.webhook_event_types() to sg_app, sg_service, sg_worker;

set local role sg_service;

/**
 * Queues an attempt of a delivery at `due` (a pgqueuer entry). `attempt_key` names it
 * (the retry's number, or a resend's own key), so a retry never collides with the entry
 * being worked on, nor a resend with a retry waiting for later. For the functions here.
 */
create or replace function app._queue_webhook_attempt(delivery_id uuid, attempt_key text, due timestamptz)
returns void
language sql security definer
set search_path = pg_catalog, pg_temp
as $$
  insert into public.pgqueuer (priority, entrypoint, payload, status, execute_after, dedupe_key)
  values (15, 'webhook_delivery', convert_to(json_build_object('delivery_id', delivery_id)::text, 'UTF8'),
          'queued', due, 'webhook:' || delivery_id || ':' || attempt_key)
  on conflict do nothing
$$;
grant execute on function app._queue_webhook_attempt(uuid, text, timestamptz) to sg_owner;

/**
 * Records an event for `uid` and queues it to every enabled endpoint of theirs that
 * subscribes to `event_type` (or only to `only_endpoint`), once per `dedupe_key`.
 * Runs in the caller's transaction, so the event commits with the change it reports.
 * Returns the event id, or null when nobody listens or the event was emitted before.
 * For SQL only: the triggers below, sql/51_stripe_events.sql, batch completion.
 */
create or replace function app._emit_webhook(uid uuid, event_type text, dedupe_key text, data jsonb,
                                             only_endpoint uuid default null)
returns uuid
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  event_id uuid := gen_random_uuid();
  created timestamptz := now();
  delivery record;
begin
  if not exists (select 1 from public.webhook_endpoints e
                  where e.user_id = uid and e.disabled_at is null
                    and (e.id = only_endpoint or (only_endpoint is null and event_type = any (e.event_types)))) then
    return null;
  end if;
  insert into public.webhook_events as ev (id, user_id, type, dedupe_key, body, created_at)
  values (event_id, uid, event_type, dedupe_key,
          jsonb_build_object('id', 'evt_' || replace(event_id::text, '-', ''), 'object', 'event',
                             'type', event_type, 'created', floor(extract(epoch from created))::bigint,
                             'data', jsonb_build_object('object', data)),
          created)
  on conflict on constraint webhook_events_dedupe_key_key do nothing;
  if not found then
    return null;
  end if;
  for delivery in
    insert into public.webhook_deliveries as d (user_id, event_id, endpoint_id, next_attempt_at)
    select uid, event_id, e.id, created from public.webhook_endpoints e
     where e.user_id = uid and e.disabled_at is null
       and (e.id = only_endpoint or (only_endpoint is null and event_type = any (e.event_types)))
    returning d.id
  loop
    perform app._queue_webhook_attempt(delivery.id, '1', created);
  end loop;
  return event_id;
end
$$;
grant execute on function app._emit_webhook(uuid, text, text, jsonb, uuid) to sg_owner;

/** A job's event as customers see it: render.completed, or render.failed with its refund. */
create or replace function app._job_webhook_data(job_id uuid) returns jsonb
language sql stable
set search_path = pg_catalog, pg_temp
as $$
  select jsonb_build_object(
           'job_id', j.id, 'status', j.status, 'platform', j.platform, 'topic', j.topic,
           'video_url', j.output_url, 'error', case when j.status = 'failed' then j.error_message end,
           'created_at', j.created_at, 'finished_at', j.finished_at)
         || case when j.status = 'failed' then jsonb_build_object(
              'credits_refunded', coalesce((select sum(l.delta) from public.credit_ledger l
                                             where l.idempotency_key = 'refund:' || j.id), 0))
            else '{}' end
    from public.jobs j where j.id = job_id
$$;

/**
 * Deferred to commit, so the event sees the job as it committed (a failed job's refund
 * is written after its status changes, in the same transaction).
 */
create or replace function app._webhook_on_job_finished() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if (select j.status from public.jobs j where j.id = new.id) in ('completed', 'failed') then
    perform app._emit_webhook(new.user_id, 'render.' || new.status, 'render.' || new.status || ':' || new.id,
                              app._job_webhook_data(new.id));
  end if;
  return null;
end
$$;

/**
 * credits.low when a balance falls to 20% of the plan's monthly credits (at least 1),
 * once per period and grant; subscription.updated once per transaction that changed the
 * plan, status or a scheduled change (deferred: the event carries the committed state).
 */
create or replace function app._webhook_on_balance_change() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  low integer;
begin
  select greatest(1, ceil(p.credits * 0.2))::integer into low from public.plans p where p.tier = new.tier;
  if new.credits_remaining <= low and old.credits_remaining > low then
    perform app._emit_webhook(new.user_id, 'credits.low',
                              'credits.low:' || new.user_id || ':' || extract(epoch from new.current_period_start)
                                || ':' || new.credits_total,
                              jsonb_build_object('credits_remaining', new.credits_remaining,
                                                 'credits_total', new.credits_total, 'tier', new.tier,
                                                 'renews_at', new.current_period_end));
  end if;
  return null;
end
$$;

create or replace function app._webhook_on_subscription_change() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  now_row public.subscriptions%rowtype;
begin
  select * into now_row from public.subscriptions s where s.id = new.id;
  if found then
    perform app._emit_webhook(now_row.user_id, 'subscription.updated',
                              'subscription.updated:' || now_row.user_id || ':' || pg_current_xact_id(),
                              jsonb_build_object('tier', now_row.tier, 'status', now_row.status,
                                                 'cancel_at_period_end', now_row.cancel_at_period_end,
                                                 'current_period_end', now_row.current_period_end,
                                                 'pending_tier', now_row.pending_tier,
                                                 'credits_remaining', now_row.credits_remaining));
  end if;
  return null;
end
$$;

-- whoever creates a trigger needs EXECUTE on its function (sg_owner, just below)
grant execute on function app._webhook_on_job_finished(), app._webhook_on_balance_change(),
  app._webhook_on_subscription_change() to sg_owner;

set local role sg_owner;

-- each (re)created only when it differs, as pg_get_triggerdef spells it: an unchanged
-- trigger takes no lock on jobs or subscriptions
select app._ensure_trigger('public.jobs', 'webhook_on_job_finished',
  'CREATE CONSTRAINT TRIGGER webhook_on_job_finished AFTER UPDATE OF status ON public.jobs DEFERRABLE INITIALLY '
  'DEFERRED FOR EACH ROW WHEN (((new.status = ANY (ARRAY[''completed''::text, ''failed''::text])) AND '
  '(old.status IS DISTINCT FROM new.status))) EXECUTE FUNCTION app._webhook_on_job_finished()');
select app._ensure_trigger('public.subscriptions', 'webhook_on_balance_change',
  'CREATE TRIGGER webhook_on_balance_change AFTER UPDATE OF credits_remaining ON public.subscriptions FOR EACH ROW '
  'WHEN ((new.credits_remaining < old.credits_remaining)) EXECUTE FUNCTION app._webhook_on_balance_change()');
select app._ensure_trigger('public.subscriptions', 'webhook_on_subscription_change',
  'CREATE CONSTRAINT TRIGGER webhook_on_subscription_change AFTER UPDATE ON public.subscriptions DEFERRABLE '
  'INITIALLY DEFERRED FOR EACH ROW WHEN (((new.tier IS DISTINCT FROM old.tier) OR (new.status IS DISTINCT FROM '
  'old.status) OR (new.cancel_at_period_end IS DISTINCT FROM old.cancel_at_period_end) OR (new.pending_tier IS '
  'DISTINCT FROM old.pending_tier))) EXECUTE FUNCTION app._webhook_on_subscription_change()');

set local role sg_service;

/**
 * credits.expiring for every balance with credits left whose period ends within
 * `within`: once per user and period. The worker's daily schedule calls it; returns how
 * many events it emitted.
 */
create or replace function app.emit_credits_expiring(within interval default '3 days') returns integer
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  expiring record;
  emitted integer := 0;
begin
  for expiring in
    select s.* from public.subscriptions s
     where s.credits_remaining > 0 and s.current_period_end between now() and now() + within
       and exists (select 1 from public.webhook_endpoints e
                    where e.user_id = s.user_id and e.disabled_at is null and 'credits.expiring' = any (e.event_types))
  loop
    if app._emit_webhook(expiring.user_id, 'credits.expiring',
                         'credits.expiring:' || expiring.user_id || ':' || extract(epoch from expiring.current_period_end),
                         jsonb_build_object('credits_remaining', expiring.credits_remaining,
                                            'expires_at', expiring.current_period_end, 'tier', expiring.tier)) is not null then
      emitted := emitted + 1;
    end if;
  end loop;
  return emitted;
end
$$;
grant execute on function app.emit_credits_expiring(interval) to sg_worker;

/**
 * The worker's start of one attempt: the URL, secret and exact body to send, and the
 * attempt number that fences the outcome (a later resend or retry supersedes it). No row
 * when the delivery succeeded already, or its endpoint is gone or disabled (then the
 * delivery is marked failed).
 */
create or replace function app.claim_webhook_delivery(delivery_id uuid)
returns table (attempt integer, url text, secret text, body text, event_id text, event_type text)
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  delivery public.webhook_deliveries%rowtype;
  endpoint public.webhook_endpoints%rowtype;
begin
  select * into delivery from public.webhook_deliveries d where d.id = delivery_id for update;
  if not found or delivery.status <> 'pending' then
    return;
  end if;
  select * into endpoint from public.webhook_endpoints e where e.id = delivery.endpoint_id;
  if endpoint.disabled_at is not null then
    update public.webhook_deliveries d
       set status = 'failed', finished_at = now(), next_attempt_at = null,
           last_error = 'Not sent: the endpoint is disabled.'
     where d.id = delivery_id;
    return;
  end if;
  update public.webhook_deliveries d set attempts = d.attempts + 1, last_attempt_at = now()
   where d.id = delivery_id returning d.attempts into delivery.attempts;
  return query
    select delivery.attempts, endpoint.url, endpoint.secret, ev.body::text, ev.body ->> 'id', ev.type
      from public.webhook_events ev where ev.id = delivery.event_id;
end
$$;
grant execute on function app.claim_webhook_delivery(uuid) to sg_worker;

/**
 * Records how attempt `attempt` went (a status code, or an error in the customer's
 * words) and decides what follows: succeeded on a 2xx; otherwise the next attempt
 * `retry_base` × 3^(attempt-1) later (at most 12 hours) while the delivery's three days
 * last; past them it fails, and if its endpoint has not answered 2xx since the delivery
 * began, the endpoint is disabled and its owner mailed. Returns 'succeeded', 'retrying',
 * 'failed', 'disabled' or 'superseded' (an attempt that is no longer the latest).
 */
create or replace function app.record_webhook_attempt(delivery_id uuid, attempt integer, status_code integer,
                                                      latency_ms integer, error text,
                                                      retry_base interval default '1 minute')
returns text
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  delivery public.webhook_deliveries%rowtype;
  endpoint public.webhook_endpoints%rowtype;
  ok boolean := coalesce(status_code between 200 and 299, false);
  wait interval;
begin
  select * into delivery from public.webhook_deliveries d where d.id = delivery_id for update;
  if not found or delivery.status <> 'pending' or delivery.attempts <> attempt then
    return 'superseded';
  end if;
  insert into public.webhook_attempts (delivery_id, user_id, attempt, status_code, latency_ms, error, succeeded)
  values (delivery_id, delivery.user_id, attempt, status_code, latency_ms, left(error, 500), ok);
  select * into endpoint from public.webhook_endpoints e where e.id = delivery.endpoint_id for update;
  if ok then
    update public.webhook_deliveries d
       set status = 'succeeded', last_status_code = status_code, last_latency_ms = latency_ms, last_error = null,
           next_attempt_at = null, finished_at = now()
     where d.id = delivery_id;
    update public.webhook_endpoints e set consecutive_failures = 0, last_success_at = now()
     where e.id = endpoint.id;
    return 'succeeded';
  end if;
  update public.webhook_endpoints e set consecutive_failures = e.consecutive_failures + 1 where e.id = endpoint.id;
  wait := least(retry_base * power(3, attempt - 1), interval '12 hours');
  if now() + wait <= delivery.retry_until then
    update public.webhook_deliveries d
       set last_status_code = status_code, last_latency_ms = latency_ms, last_error = left(error, 500),
           next_attempt_at = now() + wait
     where d.id = delivery_id;
    perform app._queue_webhook_attempt(delivery_id, (attempt + 1)::text, now() + wait);
    return 'retrying';
  end if;
  update public.webhook_deliveries d
     set status = 'failed', last_status_code = status_code, last_latency_ms = latency_ms,
         last_error = left(error, 500), next_attempt_at = null, finished_at = now()
   where d.id = delivery_id;
  if endpoint.disabled_at is null and (endpoint.last_success_at is null or endpoint.last_success_at < delivery.created_at) then
    update public.webhook_endpoints e
       set disabled_at = now(),
           disabled_reason = format('Deliveries kept failing for three days (%s attempts in a row).',
                                    endpoint.consecutive_failures + 1)
     where e.id = endpoint.id;
    perform app._queue_email(delivery.user_id, 'webhook_disabled', 'webhook_disabled:' || endpoint.id || ':' || now(),
                             jsonb_build_object('url', endpoint.url, 'failures', endpoint.consecutive_failures + 1,
                                                'last_error', coalesce(left(error, 200), 'HTTP ' || status_code)));
    return 'disabled';
  end if;
  return 'failed';
end
$$;
grant execute on function app.record_webhook_attempt(uuid, integer, integer, integer, text, interval) to sg_worker;

set local role sg_owner;

/**
 * Registers an endpoint for the current user (Pro and Agency, verified address; at most
 * 10): the URL is checked by the web process first (https outside development, and its
 * addresses public) and again before every delivery. Returns the row with its signing
 * secret, which is never shown again.
 */
create or replace function app.create_webhook_endpoint(endpoint_url text, endpoint_event_types text[],
                                                       endpoint_description text)
returns table (id uuid, url text, description text, event_types text[], secret text, created_at timestamptz)
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  uid uuid := app.require_user_id();
  allowed boolean;
begin
  select coalesce((p.features ->> 'api_keys')::boolean, false) into allowed
    from public.subscriptions s join public.plans p on p.tier = s.tier
   where s.user_id = uid and s.status in ('active', 'trialing', 'past_due');
  if not coalesce(allowed, false) then
    raise exception 'Webhooks are available on the Pro and Agency plans. Upgrade at /pricing.' using errcode = 'P0403';
  end if;
  if not (select u.is_verified from public.users u where u.id = uid) then
    raise exception 'Verify your email address before adding webhook endpoints.' using errcode = 'P0403';
  end if;
  if endpoint_url is null or endpoint_url !~ '^https?://[^/?#@\s]+' or length(endpoint_url) > 2000 then
    raise exception 'url: must be an http(s) URL of at most 2000 characters' using errcode = 'P0422';
  end if;
  if endpoint_event_types is null or cardinality(endpoint_event_types) = 0
     or not endpoint_event_types <@ app.webhook_event_types() then
    raise exception 'event_types: must be some of %', array_to_string(app.webhook_event_types(), ', ')
      using errcode = 'P0422';
  end if;
  -- one endpoint decision at a time per user, so the limit holds under concurrent requests
  perform 1 from public.subscriptions s where s.user_id = uid for update;
  if (select count(*) from public.webhook_endpoints e where e.user_id = uid) >= 10 then
    raise exception 'You already have 10 webhook endpoints; delete one first.' using errcode = 'P0409';
  end if;
  return query
    insert into public.webhook_endpoints as e (user_id, url, description, event_types, secret)
    values (uid, endpoint_url, nullif(btrim(endpoint_description), ''),
            array(select distinct t from unnest(endpoint_event_types) t order by t),
            'whsec_' || replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''))
    returning e.id, e.url, e.description, e.event_types, e.secret, e.created_at;
end
$$;
grant execute on function app.create_webhook_endpoint(text, text[], text) to sg_app;

/** Deletes one of the current user's endpoints (and its log); P0404 if there is none. */
create or replace function app.delete_webhook_endpoint(endpoint_id uuid) returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  delete from public.webhook_endpoints e where e.id = endpoint_id and e.user_id = app.require_user_id();
  if not found then
    raise exception 'Webhook endpoint not found.' using errcode = 'P0404';
  end if;
end
$$;
grant execute on function app.delete_webhook_endpoint(uuid) to sg_app;

/**
 * Turns one of the current user's endpoints on (its failure count starts again) or off;
 * P0404 if there is none.
 */
create or replace function app.set_webhook_endpoint_enabled(endpoint_id uuid, enabled boolean) returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
begin
  update public.webhook_endpoints e
     set disabled_at = case when enabled then null else coalesce(e.disabled_at, now()) end,
         disabled_reason = case when enabled then null else coalesce(e.disabled_reason, 'Turned off by you.') end,
         consecutive_failures = case when enabled then 0 else e.consecutive_failures end
   where e.id = endpoint_id and e.user_id = app.require_user_id();
  if not found then
    raise exception 'Webhook endpoint not found.' using errcode = 'P0404';
  end if;
end
$$;
grant execute on function app.set_webhook_endpoint_enabled(uuid, boolean) to sg_app;

/**
 * Sends a `webhook.test` event to one of the current user's enabled endpoints, whatever
 * types it subscribes to; returns the delivery. P0404 if there is no such endpoint, P0409
 * if it is disabled.
 */
create or replace function app.send_test_webhook(endpoint_id uuid) returns uuid
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  uid uuid := app.require_user_id();
  endpoint public.webhook_endpoints%rowtype;
  test_event uuid;
begin
  select * into endpoint from public.webhook_endpoints e where e.id = endpoint_id and e.user_id = uid;
  if not found then
    raise exception 'Webhook endpoint not found.' using errcode = 'P0404';
  end if;
  if endpoint.disabled_at is not null then
    raise exception 'This endpoint is disabled; enable it first.' using errcode = 'P0409';
  end if;
  test_event := app._emit_webhook(uid, 'webhook.test', 'webhook.test:' || gen_random_uuid(),
                                jsonb_build_object('message', 'A test event from Story Genius.',
                                                   'endpoint_id', endpoint.id),
                                only_endpoint => endpoint.id);
  return (select d.id from public.webhook_deliveries d where d.event_id = test_event);
end
$$;
grant execute on function app.send_test_webhook(uuid) to sg_app;

/**
 * Sends one of the current user's deliveries again now, with three more days of
 * retries (the same event id and body: receivers that dedupe by id stay correct).
 * P0404 if there is no such delivery, P0409 if its endpoint is disabled.
 */
create or replace function app.resend_webhook_delivery(delivery_id uuid) returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  delivery public.webhook_deliveries%rowtype;
begin
  select * into delivery from public.webhook_deliveries d
   where d.id = delivery_id and d.user_id = app.require_user_id() for update;
  if not found then
    raise exception 'Delivery not found.' using errcode = 'P0404';
  end if;
  if (select e.disabled_at from public.webhook_endpoints e where e.id = delivery.endpoint_id) is not null then
    raise exception 'This endpoint is disabled; enable it first.' using errcode = 'P0409';
  end if;
  update public.webhook_deliveries d
     set status = 'pending', finished_at = null, next_attempt_at = now(), retry_until = now() + interval '3 days'
   where d.id = delivery_id;
  perform app._queue_webhook_attempt(delivery_id, 'resend:' || gen_random_uuid(), now());
end
$$;
grant execute on function app.resend_webhook_delivery(uuid) to sg_app;
