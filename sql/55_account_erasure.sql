-- Account erasure and export (GDPR Art. 17 and 20).
--
-- An erased account stays as a tombstone: the users row keeps its id and gains
-- `deleted_at`; its email becomes 'erased:<id>' (no address has that form, so the
-- address is free for a new signup), its name, password hash and verification go. The
-- credit ledger is append-only, so its rows stay exactly as they were, as do the usage
-- rows, both under that id, which is now a pseudonym: the books still add up
-- (balance = sum(ledger) for every id, erased or not) and nothing in them names a person.
--
-- What erasure removes, and what it keeps:
--   removed   sessions (browser sessions, refresh families and tokens), API keys, trusted
--             devices, two-factor secret, recovery codes, pending second-factor sign-ins,
--             emailed link tokens, mails queued or sent (their data can hold the name),
--             webhook endpoints with their events, deliveries and attempt logs, the brand
--             (logo and colours), the referral code and the card fingerprints, the stored
--             answers to idempotent API requests
--   blanked   jobs: topic, title, options (a script of the user's own), output, error, note;
--             unfinished jobs end as failed, unrefunded (the worker's claim then finds
--             nothing to do); the web process deletes the video files and posters, and an
--             `erase_media` queue entry due in 30 minutes has the worker delete those of
--             renders that were running and wrote their files after the erasure
--   kept,     login, reset and signup attempts under the tombstone's address, so the
--   anonymous per-network signup limit (38_signup.sql) still counts this signup
--   kept      ledger, usage, subscription (balance cache, Stripe ids: pseudonyms whose
--             customer at Stripe is scrubbed and whose subscription is canceled first),
--             credit buckets and pack purchases (the books); auto top-up is turned off and a
--             purchase still waiting is dropped, so nothing charges the card again
--   scrubbed  stored Stripe events of the user's customer: names, addresses, emails and
--             phones are nulled wherever they occur (amounts and ids stay), now and for
--             every event that arrives later
--
-- Signing up again with the same address afterwards makes a new account with the usual
-- signup grant: the tombstone keeps nothing to recognise the address by, and free-credit
-- farming by erase-and-return meets the same per-network signup limits as new addresses.
-- erasure deletes what these features keep about a person (app.erase_my_account below)
set local role sg_owner;
grant delete on public.referral_codes, public.payment_fingerprints, public.auto_top_up to sg_service;

set local role sg_service;

/**
 * `payload` with every value that can identify a person nulled, at any depth: Stripe's
 * email, name, phone, address, shipping, customer_* and *_details fields. Everything else
 * (ids, amounts, periods, statuses) is kept, so a scrubbed event still applies.
 */
create or replace function app.scrub_personal_fields(payload jsonb) returns jsonb
language plpgsql immutable parallel safe
set search_path = pg_catalog, pg_temp
as $$
declare
  personal constant text[] := array['email', 'name', 'phone', 'address', 'shipping', 'description',
    'customer_email', 'customer_name', 'customer_phone', 'customer_address', 'customer_shipping',
    'customer_details', 'customer_tax_ids', 'billing_details', 'receipt_email', 'shipping_details',
    'account_name', 'statement_descriptor'];
  scrubbed jsonb;
begin
  case jsonb_typeof(payload)
    when 'object' then
      select coalesce(jsonb_object_agg(key, case when key = any(personal) and jsonb_typeof(value) <> 'null'
                                                 then 'null'::jsonb
                                                 else app.scrub_personal_fields(value) end), '{}')
        into scrubbed
        from jsonb_each(payload);
      return scrubbed;
    when 'array' then
      select coalesce(jsonb_agg(app.scrub_personal_fields(value) order by n), '[]')
        into scrubbed
        from jsonb_array_elements(payload) with ordinality as e(value, n);
      return scrubbed;
    else
      return payload;
  end case;
end
$$;
grant execute on function app.scrub_personal_fields(jsonb) to sg_owner;

/** The Stripe customer a stored event is about (its object's `customer`, or the customer itself). */
create or replace function app.stripe_event_customer(payload jsonb) returns text
language sql immutable parallel safe
set search_path = pg_catalog, pg_temp
as $$
  select case when payload #>> '{data,object,object}' = 'customer' then payload #>> '{data,object,id}'
              else payload #>> '{data,object,customer}' end
$$;

/**
 * Before a Stripe event is stored: when it is about an erased user's customer, its
 * personal fields are scrubbed, so a late webhook cannot bring an erased address back.
 * The erased user's row is read FOR SHARE: an erasure running at the same moment either
 * finishes first (and this sees it) or waits for this event and then scrubs it itself.
 */
create or replace function app._scrub_erased_customer_event() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  erased timestamptz;
  customer text := app.stripe_event_customer(new.payload);
begin
  if customer is null then
    return new;
  end if;
  select u.deleted_at into erased
    from public.subscriptions s join public.users u on u.id = s.user_id
   where s.stripe_customer_id = customer
     for share of u;
  if erased is not null then
    new.payload := app.scrub_personal_fields(new.payload);
  end if;
  return new;
end
$$;
grant execute on function app._scrub_erased_customer_event() to sg_owner;

/** Before a mail is queued: none for an erased account (a late receipt from Stripe, say). */
create or replace function app._no_mail_for_erased_users() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if exists (select from public.users u where u.id = new.user_id and u.deleted_at is not null) then
    return null;
  end if;
  return new;
end
$$;
grant execute on function app._no_mail_for_erased_users() to sg_owner;

/**
 * Whether app.erase_my_account would accept this second factor for the current user, without
 * using it up: true when two-factor sign-in is off, for a TOTP step newer than the last one
 * accepted, or for an unused recovery code. Asked before anything is canceled at Stripe.
 * Callable by sg_app.
 */
create or replace function app.second_factor_would_pass(totp_step bigint, recovery_hash bytea) returns boolean
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
  select case
    when not exists (select from public.two_factor f where f.user_id = app.require_user_id() and f.enabled_at is not null)
      then true
    when totp_step is not null
      then exists (select from public.two_factor f
                    where f.user_id = app.require_user_id() and (f.last_step is null or f.last_step < totp_step))
    when recovery_hash is not null
      then exists (select from public.recovery_codes r
                    where r.user_id = app.require_user_id() and r.code_hash = recovery_hash and r.used_at is null)
    else false
  end
$$;
grant execute on function app.second_factor_would_pass(bigint, bytea) to sg_app;

/**
 * Erases the current user's account (see the top of this file), given the second factor
 * when two-factor sign-in is on (a new TOTP step or an unused recovery code; P0422 when it
 * is missing, P0403 when it is wrong). The caller has checked the password and has already
 * canceled the Stripe subscription. Returns every job id of the account, whose video files
 * the caller deletes. The ledger is not touched. P0404 for an account erased already.
 * Callable by sg_app for the signed-in user only.
 */
create or replace function app.erase_my_account(totp_step bigint default null, recovery_hash bytea default null)
returns table (job_id uuid)
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  uid uuid := app.require_user_id();
  account public.users%rowtype;
  tombstone text := 'erased:' || uid;
  customer text;
  unfinished uuid[];
begin
  -- FOR UPDATE first: a Stripe event being stored for this customer (which reads the row
  -- FOR SHARE) is then either visible to the scrub below or sees deleted_at itself
  select * into account from public.users u where u.id = uid for update;
  if account.deleted_at is not null then
    raise exception 'This account has been deleted.' using errcode = 'P0404';
  end if;
  if exists (select from public.two_factor f where f.user_id = uid and f.enabled_at is not null) then
    if totp_step is null and recovery_hash is null then
      raise exception 'code: two-factor sign-in is on: enter a code from your authenticator app'
        using errcode = 'P0422';
    end if;
    if not app._use_second_factor(uid, totp_step, recovery_hash) then
      raise exception 'code: That code is not correct.' using errcode = 'P0403';
    end if;
  end if;

  delete from public.login_challenges c where c.user_id = uid;
  delete from public.recovery_codes r where r.user_id = uid;
  delete from public.two_factor f where f.user_id = uid;
  delete from public.refresh_tokens t where t.user_id = uid;
  delete from public.refresh_families f where f.user_id = uid;
  delete from public.browser_sessions b where b.user_id = uid;
  delete from public.api_keys k where k.user_id = uid;
  delete from public.email_tokens t where t.user_id = uid;
  delete from public.email_outbox o where o.user_id = uid;
  update public.login_attempts a set email = tombstone, device_id = null
   where a.user_id = uid or lower(a.email) = lower(account.email);
  delete from public.trusted_devices d where d.user_id = uid;
  -- what the other features keep about the person: their logo and colours, webhook
  -- endpoints (URLs, secrets) and deliveries (payloads name their videos), kept API answers,
  -- their referral link (with the network it was last fetched from), card fingerprints and
  -- auto top-up setting. Referral rows stay: they hold only ids, and the ledger's keys
  -- name them.
  delete from public.brands b where b.user_id = uid;
  delete from public.webhook_attempts a where a.user_id = uid;
  delete from public.webhook_deliveries d where d.user_id = uid;
  delete from public.webhook_events e where e.user_id = uid;
  delete from public.webhook_endpoints e where e.user_id = uid;
  delete from public.idempotency_keys k where k.user_id = uid;
  delete from public.referral_codes c where c.user_id = uid;
  delete from public.payment_fingerprints f where f.user_id = uid;
  delete from public.auto_top_up a where a.user_id = uid;
  -- with no webhook endpoint left nothing is emitted for the account again
  -- (app._emit_webhook); a queued delivery finds nothing to send. A top-up purchase still
  -- waiting is dropped, so the worker's app.auto_top_up_job finds nothing to charge.
  update public.auto_top_up_attempts t set status = 'failed', error = 'Account deleted.', finished_at = now()
   where t.user_id = uid and t.status = 'pending';

  -- a render running now may still write its video after this commits (its completion is
  -- then refused): the worker looks for those files again once such a render is over
  select array_agg(j.id) into unfinished from public.jobs j
   where j.user_id = uid and j.status in ('queued', 'processing');
  if unfinished is not null then
    insert into public.pgqueuer (priority, entrypoint, payload, status, execute_after, dedupe_key)
    values (20, 'erase_media', convert_to(json_build_object('job_ids', unfinished)::text, 'UTF8'), 'queued',
            now() + interval '30 minutes', 'erase_media:' || uid);
  end if;

  update public.jobs j
     set topic = '[erased]', title = null, options = '{}', output_url = null, note = null,
         status = case when j.status in ('queued', 'processing') then 'failed' else j.status end,
         error_message = case when j.status in ('queued', 'processing') then 'Account deleted.' end,
         finished_at = coalesce(j.finished_at, now())
   where j.user_id = uid;

  select s.stripe_customer_id into customer from public.subscriptions s where s.user_id = uid;
  if customer is not null then
    update public.stripe_events e set payload = app.scrub_personal_fields(e.payload)
     where app.stripe_event_customer(e.payload) = customer;
  end if;
  -- a Checkout's own events can name the user before any customer exists
  update public.stripe_events e set payload = app.scrub_personal_fields(e.payload)
   where e.payload #>> '{data,object,client_reference_id}' = uid::text
      or e.payload #>> '{data,object,metadata,user_id}' = uid::text;

  update public.users u
     set email = tombstone, password_hash = '!erased', full_name = null, is_active = false,
         is_verified = false, session_version = u.session_version + 1, last_login = null,
         deleted_at = now(), updated_at = now()
   where u.id = uid;
  perform set_config('app.user_id', '', true);

  return query select j.id from public.jobs j where j.user_id = uid;
end
$$;
grant execute on function app.erase_my_account(bigint, bytea) to sg_app;

/**
 * Everything the current user's account holds about them, as one JSON document (GDPR Art.
 * 20): profile, subscription, credit ledger, usage, jobs, API keys, sessions, trusted
 * devices, two-factor status, sign-in attempts and mails. Never a password, key, token,
 * device or recovery-code hash, nor the two-factor secret. Callable by sg_app.
 */
create or replace function app.export_my_account() returns jsonb
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
  with me as (select app.require_user_id() as uid)
  select jsonb_build_object(
    'exported_at', now(),
    'profile', (select jsonb_build_object('id', u.id, 'email', u.email, 'full_name', u.full_name,
                                          'is_verified', u.is_verified, 'is_active', u.is_active,
                                          'created_at', u.created_at, 'updated_at', u.updated_at,
                                          'last_login', u.last_login)
                  from public.users u, me where u.id = me.uid),
    'subscription', (select jsonb_build_object('tier', s.tier, 'status', s.status, 'subscribed_tier', s.subscribed_tier,
                                               'credits_total', s.credits_total, 'credits_remaining', s.credits_remaining,
                                               'current_period_start', s.current_period_start,
                                               'current_period_end', s.current_period_end,
                                               'cancel_at_period_end', s.cancel_at_period_end,
                                               'pending_tier', s.pending_tier,
                                               'stripe_customer_id', s.stripe_customer_id,
                                               'stripe_subscription_id', s.stripe_subscription_id,
                                               'created_at', s.created_at)
                       from public.subscriptions s, me where s.user_id = me.uid),
    'credit_ledger', coalesce((select jsonb_agg(jsonb_build_object('delta', l.delta, 'reason', l.reason, 'job_id', l.job_id,
                                                                   'note', l.note, 'created_at', l.created_at)
                                                order by l.created_at, l.id)
                                 from public.credit_ledger l, me where l.user_id = me.uid), '[]'),
    'usage', coalesce((select jsonb_agg(jsonb_build_object('action', g.action, 'credits', g.credits_used,
                                                           'job_id', g.job_id, 'created_at', g.created_at)
                                        order by g.created_at, g.id)
                         from public.usage_logs g, me where g.user_id = me.uid), '[]'),
    'jobs', coalesce((select jsonb_agg(jsonb_build_object('id', j.id, 'platform', j.platform, 'topic', j.topic,
                                                          'title', j.title, 'deleted_at', j.deleted_at,
                                                          'options', j.options, 'status', j.status,
                                                          'output_url', j.output_url, 'error', j.error_message,
                                                          'note', j.note, 'tier', j.tier_at_creation,
                                                          'created_at', j.created_at, 'finished_at', j.finished_at)
                                       order by j.created_at, j.id)
                        from public.jobs j, me where j.user_id = me.uid), '[]'),
    'api_keys', coalesce((select jsonb_agg(jsonb_build_object('id', k.id, 'name', k.name, 'prefix', k.prefix,
                                                              'created_at', k.created_at, 'last_used_at', k.last_used_at,
                                                              'revoked_at', k.revoked_at) order by k.created_at, k.id)
                            from public.api_keys k, me where k.user_id = me.uid), '[]'),
    'sessions', coalesce((select jsonb_agg(jsonb_build_object('kind', 'api', 'id', f.id, 'created_at', f.created_at,
                                                              'revoked_at', f.revoked_at) order by f.created_at, f.id)
                            from public.refresh_families f, me where f.user_id = me.uid), '[]')
                || coalesce((select jsonb_agg(jsonb_build_object('kind', 'browser', 'id', b.id,
                                                                 'created_at', b.created_at, 'expires_at', b.expires_at,
                                                                 'revoked_at', b.revoked_at) order by b.created_at, b.id)
                               from public.browser_sessions b, me where b.user_id = me.uid), '[]'),
    'trusted_devices', coalesce((select jsonb_agg(jsonb_build_object('created_at', d.created_at,
                                                                     'last_used_at', d.last_used_at,
                                                                     'expires_at', d.expires_at) order by d.created_at)
                                   from public.trusted_devices d, me where d.user_id = me.uid), '[]'),
    'two_factor', (select jsonb_build_object('enabled', f.enabled_at is not null, 'enabled_at', f.enabled_at,
                                             'recovery_codes_left', (select count(*) from public.recovery_codes r
                                                                      where r.user_id = me.uid and r.used_at is null))
                     from public.two_factor f, me where f.user_id = me.uid),
    'sign_in_attempts', coalesce((select jsonb_agg(jsonb_build_object('kind', a.kind, 'client_ip', host(a.client_ip),
                                                                      'attempted_at', a.attempted_at)
                                                   order by a.attempted_at)
                                    from public.login_attempts a, me where a.user_id = me.uid), '[]'),
    'emails', coalesce((select jsonb_agg(jsonb_build_object('kind', o.kind, 'created_at', o.created_at,
                                                            'sent_at', o.sent_at) order by o.created_at)
                          from public.email_outbox o, me where o.user_id = me.uid), '[]'),
    'webhook_endpoints', coalesce((select jsonb_agg(jsonb_build_object('id', w.id, 'url', w.url,
                                                                       'description', w.description,
                                                                       'event_types', w.event_types,
                                                                       'created_at', w.created_at,
                                                                       'disabled_at', w.disabled_at)
                                                    order by w.created_at, w.id)
                                     from public.webhook_endpoints w, me where w.user_id = me.uid), '[]'),
    'webhook_events', coalesce((select jsonb_agg(w.body order by w.created_at, w.id)
                                  from public.webhook_events w, me where w.user_id = me.uid), '[]'),
    'brand', (select jsonb_build_object('primary_colour', b.primary_colour, 'accent_colour', b.accent_colour,
                                        'has_logo', b.logo_png is not null, 'updated_at', b.updated_at)
                from public.brands b, me where b.user_id = me.uid),
    'referral_code', (select jsonb_build_object('code', r.code, 'created_at', r.created_at)
                        from public.referral_codes r, me where r.user_id = me.uid),
    'referrals', coalesce((select jsonb_agg(jsonb_build_object('role', case when r.referrer_id = me.uid
                                                                           then 'referrer' else 'referee' end,
                                                               'status', r.status, 'created_at', r.created_at)
                                            order by r.created_at)
                             from public.referrals r, me where me.uid in (r.referrer_id, r.referee_id)), '[]'))
$$;
grant execute on function app.export_my_account() to sg_app;

-- The triggers belong to the tables' owner.
set local role sg_owner;

select app._ensure_trigger('public.stripe_events', 'stripe_events_scrub_erased_customers',
  'CREATE TRIGGER stripe_events_scrub_erased_customers BEFORE INSERT ON public.stripe_events '
  'FOR EACH ROW EXECUTE FUNCTION app._scrub_erased_customer_event()');
select app._ensure_trigger('public.email_outbox', 'email_outbox_none_for_erased_users',
  'CREATE TRIGGER email_outbox_none_for_erased_users BEFORE INSERT ON public.email_outbox '
  'FOR EACH ROW EXECUTE FUNCTION app._no_mail_for_erased_users()');
