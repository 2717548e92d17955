-- Referrals (issue 20 item 6): a verified user's link; a referee who signs up through it
-- gets +5 credits when they confirm their address, and the referrer +10 when the referee's
-- first invoice is paid. Once per referee, never for the same person, at most 20 referrer
-- rewards per calendar month (UTC).
--
-- The same person is recognised, and the referral refused, by:
--   same_email           the referee's address is an alias of the referrer's (a+1@x = a@x;
--                        Gmail also ignores dots)                           at signup
--   same_device          the signup came from a browser holding the referrer's device
--                        cookie (sg_device, given at sign-in)               at signup
--   same_network         the signup came from the network (IPv4 address, IPv6 /64) the
--                        referrer signed up or fetched their link from in the last 24 hours
--                                                                           at signup
--   same_payment_method  the referee paid with a card (Stripe fingerprint) the referrer
--                        has paid with                                      at payment
--
-- Ledger grants (reason referral_grant), each keyed so it happens once whatever repeats:
--   referral:referee:<referee>    +5 to the referee when their address is confirmed
--   referral:referrer:<referee>   +10 to the referrer for the referee's first paid invoice,
--                                 decided by the worker an hour after it (`referral_reward`)
set local role sg_owner;

do $$
declare
  private_table text;
begin
  -- only the functions below read or write these: a referrer sees their referees through
  -- app.referrals_summary(), masked. Changed only where they differ: an unchanged policy
  -- takes no lock on the table.
  foreach private_table in array array['referral_codes', 'referrals', 'payment_fingerprints'] loop
    perform app._ensure_forced_row_security(format('public.%I', private_table)::regclass);
    perform app._ensure_policy(format('public.%I', private_table)::regclass, 'service functions reach every row',
      format('create policy "service functions reach every row" on public.%I for all to sg_service '
             'using (true) with check (true)', private_table));
  end loop;
end
$$;
grant select, insert, update on public.referral_codes, public.referrals to sg_service;
grant select, insert on public.payment_fingerprints to sg_service;

set local role sg_service;

-- What each side earns, the referrer's monthly ceiling, and how long after the referee's
-- first payment the referrer's reward is decided.
create or replace function app.referral_terms(out referee_credits integer, out referrer_credits integer,
                                              out monthly_cap integer, out reward_hold interval)
language sql immutable parallel safe
set search_path = pg_catalog, pg_temp
as $$ select 5, 10, 20, interval '1 hour' $$;
grant execute on function app.referral_terms() to sg_app;

/** One mailbox, whatever alias reaches it: lower case, no +tag, and for Gmail no dots. Anyone may call it. */
create or replace function app.email_alias(email text) returns text
language sql immutable parallel safe
set search_path = pg_catalog, pg_temp
as $$
  select case when domain in ('gmail.com', 'googlemail.com') then replace(local, '.', '') || '@gmail.com'
              else local || '@' || domain end
    from (select split_part(split_part(lower(email), '@', 1), '+', 1) as local,
                 split_part(lower(email), '@', 2) as domain) parts
$$;
grant execute on function app.email_alias(text) to sg_app;

/** The network a signup is judged by: an IPv4 address, an IPv6 /64. */
create or replace function app._signup_network(client_ip inet) returns inet
language sql immutable parallel safe
set search_path = pg_catalog, pg_temp
as $$
  select case when family(client_ip) = 6 then network(set_masklen(client_ip, 64))::inet
              else set_masklen(client_ip, 32) end
$$;

/**
 * The current (verified) user's referral code, made on first call, and a note of the
 * network they fetched it from (`client_ip`; a signup from there within 24 hours is
 * theirs). P0403 for an unconfirmed address.
 */
create or replace function app.referral_code(client_ip inet default null) returns text
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  uid uuid := app.require_user_id();
  found_code text;
begin
  if not coalesce((select u.is_verified from public.users u where u.id = uid), false) then
    raise exception 'Confirm your email address to get a referral link.' using errcode = 'P0403';
  end if;
  loop
    insert into public.referral_codes as r (user_id, code)
    values (uid, substr(replace(gen_random_uuid()::text, '-', ''), 1, 10))
    on conflict do nothing;
    select r.code into found_code from public.referral_codes r where r.user_id = uid;
    exit when found_code is not null;  -- else the random code was taken: draw again
  end loop;
  if client_ip is not null then
    update public.referral_codes r set last_seen_ip = app._signup_network(client_ip), last_seen_at = now()
     where r.user_id = uid;
  end if;
  return found_code;
end
$$;
grant execute on function app.referral_code(inet) to sg_app;

/**
 * Records that the current user, signing up in this transaction, came through `code`:
 * from `client_ip`, in a browser holding the device tokens whose SHA-256 are
 * `device_hashes`. Refused (kept, with the reason, so nobody is rewarded) when the
 * referee is the referrer by address alias, device or network. Only for an account made
 * in the last hour and not yet confirmed, once. Returns what happened: 'recorded',
 * 'refused: <reason>', or why nothing was recorded.
 */
create or replace function app.record_referral(code text, client_ip inet, device_hashes bytea[] default '{}')
returns text
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  referee public.users%rowtype;
  referrer public.users%rowtype;
  link public.referral_codes%rowtype;
  network inet := app._signup_network(client_ip);
  loopback boolean := client_ip is null or client_ip << inet '127.0.0.0/8' or client_ip = inet '::1';
  reason text;
begin
  select * into referee from public.users u where u.id = app.require_user_id();
  if referee.is_verified or referee.created_at < now() - interval '1 hour' then
    return 'ignored: only a new account can be referred';
  end if;
  select * into link from public.referral_codes r where r.code = lower(btrim(record_referral.code));
  if not found then
    return 'ignored: no such referral code';
  end if;
  select * into referrer from public.users u where u.id = link.user_id;
  if referrer.id = referee.id or not referrer.is_active then
    return 'ignored: not a referrer';
  end if;
  reason := case
    when app.email_alias(referee.email) = app.email_alias(referrer.email) then 'same_email'
    when exists (select 1 from public.trusted_devices d
                  where d.user_id = referrer.id and d.token_hash = any (coalesce(device_hashes, '{}'))) then 'same_device'
    -- loopback is this machine (a proxy without TRUSTED_PROXY_COUNT): it says nothing of the client
    when not loopback and ((link.last_seen_ip = network and link.last_seen_at > now() - interval '24 hours')
         or exists (select 1 from public.login_attempts a
                     where a.kind = 'signup' and lower(a.email) = lower(referrer.email) and a.client_ip = network
                       and a.attempted_at > now() - interval '24 hours')) then 'same_network'
  end;
  insert into public.referrals as r (referrer_id, referee_id, status, refused_reason)
  values (referrer.id, referee.id, case when reason is null then 'pending' else 'refused' end, reason)
  on conflict (referee_id) do nothing;
  if not found then
    return 'ignored: already referred';
  end if;
  return case when reason is null then 'recorded' else 'refused: ' || reason end;
end
$$;
grant execute on function app.record_referral(text, inet, bytea[]) to sg_app;

/** The referee's +5 when their address is confirmed (users trigger below), once. */
create or replace function app._reward_referee() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  referral public.referrals%rowtype;
begin
  select * into referral from public.referrals r where r.referee_id = new.id for update;
  if not found or referral.status = 'refused' or referral.referee_rewarded_at is not null then
    return null;
  end if;
  perform app.grant_credits(new.id, (app.referral_terms()).referee_credits, 'referral_grant',
                            'referral:referee:' || new.id);
  update public.referrals r set referee_rewarded_at = now() where r.id = referral.id;
  return null;
end
$$;
grant execute on function app._reward_referee() to sg_owner;

/**
 * A card the user paid with (a charge.succeeded event's fingerprint). A referral whose
 * referee pays with a card their referrer used is refused while it still waits for its
 * reward. Called by app.apply_stripe_event; returns what it did.
 */
create or replace function app._note_payment_fingerprint(charge jsonb) returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  card_fingerprint text := charge #>> '{payment_method_details,card,fingerprint}';
  uid uuid;
begin
  if card_fingerprint is null or length(card_fingerprint) > 100 then
    return 'no card fingerprint';
  end if;
  select s.user_id into uid from public.subscriptions s where s.stripe_customer_id = charge ->> 'customer';
  if uid is null then
    return 'no user for the charge''s customer';
  end if;
  insert into public.payment_fingerprints (user_id, fingerprint) values (uid, card_fingerprint) on conflict do nothing;
  update public.referrals r set status = 'refused', refused_reason = 'same_payment_method'
   where r.status = 'pending' and r.referrer_rewarded_at is null
     and (r.referee_id = uid or r.referrer_id = uid)
     and exists (select 1 from public.payment_fingerprints a join public.payment_fingerprints b using (fingerprint)
                  where a.user_id = r.referee_id and b.user_id = r.referrer_id);
  return 'card noted';
end
$$;

/**
 * `referee`'s first paid invoice (called by the invoice.paid applier,
 * sql/51_stripe_events.sql): the referrer's reward is due an hour later, when the
 * worker decides it (app.settle_referral_reward), so a charge event that Stripe sends
 * after the invoice's still counts. Once per referee. Returns what it did.
 */
create or replace function app._reward_referrer(referee uuid, invoice_id text, amount_paid integer) returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  due timestamptz := now() + (app.referral_terms()).reward_hold;
begin
  if coalesce(amount_paid, 0) <= 0 then
    return 'nothing paid';
  end if;
  update public.referrals r set rewarded_invoice = invoice_id, reward_due_at = due
   where r.referee_id = referee and r.status = 'pending' and r.reward_due_at is null;
  if not found then
    return 'no referral to reward';
  end if;
  insert into public.pgqueuer (priority, entrypoint, payload, status, execute_after, dedupe_key)
  values (15, 'referral_reward', convert_to(json_build_object('referee', referee)::text, 'UTF8'), 'queued', due,
          'referral_reward:' || referee)
  on conflict do nothing;
  return 'referrer reward due at ' || due;
end
$$;

/**
 * The worker's decision on a referrer's reward once it is due: +10, once per referee;
 * refused when the referee paid with a card the referrer has used; none past the
 * referrer's 20 rewards this calendar month (UTC), decided one at a time per referrer so
 * the cap holds under concurrent decisions. Returns what it did.
 */
create or replace function app.settle_referral_reward(referee uuid) returns text
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  referral public.referrals%rowtype;
  this_month timestamptz := date_trunc('month', now() at time zone 'UTC') at time zone 'UTC';
begin
  select * into referral from public.referrals r where r.referee_id = referee;
  if not found or referral.status <> 'pending' or referral.reward_due_at is null then
    return 'no reward to decide';
  end if;
  if referral.reward_due_at > now() then
    return 'not due until ' || referral.reward_due_at;
  end if;
  perform 1 from public.referral_codes c where c.user_id = referral.referrer_id for update;
  select * into referral from public.referrals r where r.id = referral.id for update;
  if referral.status <> 'pending' then
    return 'no reward to decide';
  end if;
  if exists (select 1 from public.payment_fingerprints a join public.payment_fingerprints b using (fingerprint)
              where a.user_id = referral.referee_id and b.user_id = referral.referrer_id) then
    update public.referrals r set status = 'refused', refused_reason = 'same_payment_method' where r.id = referral.id;
    return 'referral refused: the same card';
  end if;
  if (select count(*) from public.referrals r
       where r.referrer_id = referral.referrer_id and r.referrer_rewarded_at >= this_month)
     >= (app.referral_terms()).monthly_cap then
    update public.referrals r set status = 'capped' where r.id = referral.id;
    return 'referrer at the monthly cap: nothing granted';
  end if;
  perform app.grant_credits(referral.referrer_id, (app.referral_terms()).referrer_credits, 'referral_grant',
                            'referral:referrer:' || referral.referee_id);
  update public.referrals r set status = 'rewarded', referrer_rewarded_at = now() where r.id = referral.id;
  return 'referrer rewarded';
end
$$;
grant execute on function app.settle_referral_reward(uuid) to sg_worker;

/**
 * The current user's referral programme: their code (see app.referral_code), this month's
 * rewards against the cap, credits earned, and each referee (address masked) with where
 * their referral stands.
 */
create or replace function app.referrals_summary()
returns table (referee text, joined_at timestamptz, status text, refused_reason text, confirmed boolean,
               referee_rewarded boolean, reward_due_at timestamptz, referrer_rewarded_at timestamptz)
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
  select left(split_part(u.email, '@', 1), 1) || '•••@' || split_part(u.email, '@', 2), r.created_at, r.status,
         r.refused_reason, u.is_verified, r.referee_rewarded_at is not null, r.reward_due_at, r.referrer_rewarded_at
    from public.referrals r join public.users u on u.id = r.referee_id
   where r.referrer_id = app.require_user_id()
   order by r.created_at desc, r.id
   limit 200
$$;
grant execute on function app.referrals_summary() to sg_app;

/**
 * The current user's standing as a referrer: rewards this calendar month (UTC, against
 * the cap) and the credits their referrals have earned them, read from the ledger.
 */
create or replace function app.referral_standing(out rewards_this_month integer, out credits_earned integer)
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
  select (select count(*)::integer from public.referrals r
           where r.referrer_id = app.require_user_id()
             and r.referrer_rewarded_at >= date_trunc('month', now() at time zone 'UTC') at time zone 'UTC'),
         (select coalesce(sum(l.delta), 0)::integer from public.credit_ledger l
           where l.user_id = app.require_user_id() and l.reason = 'referral_grant'
             and l.idempotency_key like 'referral:referrer:%')
$$;
grant execute on function app.referral_standing() to sg_app;

set local role sg_owner;

-- (re)created only when it differs, as pg_get_triggerdef spells it: no lock on users otherwise
select app._ensure_trigger('public.users', 'reward_referee',
  'CREATE TRIGGER reward_referee AFTER UPDATE OF is_verified ON public.users FOR EACH ROW '
  'WHEN ((new.is_verified AND (NOT old.is_verified))) EXECUTE FUNCTION app._reward_referee()');
