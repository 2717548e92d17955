-- Sign-in and its throttle: each attempt is checked against the failure counters shared
-- by every web process before the password is verified (in the web process, argon2), and
-- a success is recorded in a second call. Login attempts are not tenant data.
--
-- The throttle follows OWASP's device-cookie pattern, so strangers cannot lock the owner
-- out. A client that signed in to the account before holds a device token (a cookie, or
-- the API's device_token) and is judged on its own failures alone: 10 in 15 minutes.
-- Any other client is judged by the account's failures from such clients (10 in 15
-- minutes since the last sign-in) and its address's (50 in 15 minutes). Signups are
-- counted per client network: 5 an hour, 20 a day.
set local role sg_service;

-- Signatures from before known devices and two-factor sign-in (see sql/35_sessions.sql
-- for why they are dropped by name): the old login_succeeded skipped the second factor.
drop function if exists app.login_attempt(text, inet);
drop function if exists app.login_succeeded(bigint, uuid, integer, text);
drop function if exists app.login_succeeded_with_refresh_token(bigint, uuid, integer, text, uuid, bytea, timestamptz);

/**
 * First half of a login: applies the throttle shared by every web process and, when
 * not throttled, records the attempt (it counts as a failure until app.login_succeeded
 * deletes it) and returns the stored hash to verify. `device_hashes` are the SHA-256s of
 * the device tokens the client holds; one that belongs to this account makes it a known
 * device (device_id, and device_hash says which token), judged on its own failures
 * only. Throttled (see the header) means retry_after is the seconds until the window
 * frees a slot, and nothing is recorded. two_factor says the sign-in needs a second
 * factor (sql/37_two_factor.sql) before it can finish.
 * user_id/password_hash are null for an unknown email (the caller still verifies against
 * a dummy hash, so both cases take the same time). session_version lets the caller sign
 * the new tokens before it finishes the login. `email` is expected in the normalised
 * form signup stores (web/accounts.py normalise_email); letter case does not matter.
 */
create or replace function app.login_attempt(email text, client_ip inet, device_hashes bytea[] default null)
returns table (attempt_id bigint, retry_after integer, user_id uuid, password_hash text, is_active boolean,
               session_version integer, device_id uuid, device_hash bytea, two_factor boolean)
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  window_start constant timestamptz := now() - interval '15 minutes';
  normalised constant text := lower(btrim(coalesce(email, '')));
  account record;
  device uuid;
  known_hash bytea;
  oldest timestamptz;
  failures integer;
  wait_until timestamptz;
  attempt bigint;
begin
  -- one login check at a time per email and per IP, so concurrent guesses cannot all
  -- pass the count before any of them is recorded
  perform pg_advisory_xact_lock(hashtextextended('login-email:' || normalised, 0));
  if client_ip is not null then
    perform pg_advisory_xact_lock(hashtextextended('login-ip:' || host(client_ip), 0));
  end if;

  select u.id, u.password_hash, u.is_active, u.session_version, u.last_login, f.enabled_at is not null as two_factor
    into account
    from public.users u left join public.two_factor f on f.user_id = u.id
   where lower(u.email) = normalised;
  if account.id is not null and device_hashes is not null then
    select d.id, d.token_hash into device, known_hash from public.trusted_devices d
     where d.token_hash = any(device_hashes[1:5]) and d.user_id = account.id and d.expires_at > now()
     limit 1;
  end if;

  if device is not null then
    -- a known device: its own failures only, so nobody else's guesses reach it
    select count(*), min(a.attempted_at) into failures, oldest
      from public.login_attempts a
     where a.kind = 'login' and a.device_id = device and a.attempted_at > window_start;
    if failures >= 10 then
      wait_until := oldest + interval '15 minutes';
    end if;
  else
    select count(*), min(a.attempted_at) into failures, oldest
      from public.login_attempts a
     where a.kind = 'login' and lower(a.email) = normalised and a.device_id is null
       and a.attempted_at > greatest(window_start, account.last_login);
    if failures >= 10 then
      wait_until := oldest + interval '15 minutes';
    end if;
    if client_ip is not null then
      select count(*), min(a.attempted_at) into failures, oldest
        from public.login_attempts a
       where a.kind = 'login' and a.client_ip = client_ip and a.device_id is null and a.attempted_at > window_start;
      if failures >= 50 then
        wait_until := greatest(wait_until, oldest + interval '15 minutes');
      end if;
    end if;
  end if;
  if wait_until is not null then
    return query select null::bigint, greatest(1, ceil(extract(epoch from wait_until - now()))::integer),
                        null::uuid, null::text, null::boolean, null::integer, null::uuid, null::bytea, null::boolean;
    return;
  end if;

  insert into public.login_attempts as a (email, client_ip, user_id, device_id)
  values (normalised, client_ip, account.id, device)
  returning a.id into attempt;
  return query select attempt, null::integer, account.id, account.password_hash, account.is_active,
                      account.session_version, device, known_hash, coalesce(account.two_factor, false);
end
$$;
grant execute on function app.login_attempt(text, inet, bytea[]) to sg_app;

/**
 * Finishes a sign-in whose factors all checked out: deletes the attempt, stamps
 * last_login (which resets the email's throttle) and the account's last_active_at, stores
 * a rehash when the parameters changed (an argon2id hash, nothing else), remembers the
 * device (`new_device_hash`, when the attempt came from no known device) or refreshes
 * the known one, and makes the user current for the rest of the transaction. Only for a
 * fresh attempt that login_attempt recorded for this very account, and only while the
 * account's session_version is still the one login_attempt returned: a password changed
 * in between may have made the verified password the old one. Called by
 * app.login_succeeded and app.finish_two_factor_login, never by the web role directly.
 */
create or replace function app._finish_login(attempt_id bigint, user_id uuid, session_version integer,
                                             new_password_hash text, new_device_hash bytea)
returns app.account
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  device uuid;
begin
  if new_password_hash is not null and new_password_hash not like '$argon2id$%' then
    raise exception 'new_password_hash must be an argon2id hash' using errcode = 'P0422';
  end if;
  delete from public.login_attempts a
   using public.users u
   where a.id = attempt_id and a.kind = 'login' and a.user_id = user_id and u.id = user_id
     and u.session_version = session_version and a.attempted_at > now() - interval '5 minutes'
  returning a.device_id into device;
  if not found then
    raise exception 'No such login attempt.' using errcode = 'P0401';
  end if;
  update public.users u
     set last_login = now(),
         password_hash = coalesce(new_password_hash, u.password_hash)
   where u.id = user_id;
  update public.subscriptions s set last_active_at = now() where s.user_id = user_id;
  if device is not null then
    update public.trusted_devices d set last_used_at = now(), expires_at = now() + interval '1 year'
     where d.id = device;
  elsif new_device_hash is not null then
    insert into public.trusted_devices (user_id, token_hash) values (user_id, new_device_hash)
    on conflict (token_hash) do nothing;
  end if;
  perform set_config('app.user_id', user_id::text, true);
  return app.account_of(user_id);
end
$$;

/**
 * Second half of a successful one-factor login (see app._finish_login). An account with
 * two-factor sign-in on is refused (P0401): its sign-in finishes through
 * app.finish_two_factor_login, with a code.
 */
create or replace function app.login_succeeded(attempt_id bigint, user_id uuid, session_version integer,
                                               new_password_hash text default null,
                                               new_device_hash bytea default null)
returns app.account
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
begin
  if exists (select 1 from public.two_factor f where f.user_id = user_id and f.enabled_at is not null) then
    raise exception 'This account signs in with a second factor.' using errcode = 'P0401';
  end if;
  return app._finish_login(attempt_id, user_id, session_version, new_password_hash, new_device_hash);
end
$$;
grant execute on function app.login_succeeded(bigint, uuid, integer, text, bytea) to sg_app;

/**
 * An API sign-in's second half in one call: app.login_succeeded, then a new refresh
 * token family for the user it made current (the caller signed the token with the
 * session_version that login_succeeded has just confirmed).
 */
create or replace function app.login_succeeded_with_refresh_token(
  attempt_id bigint, user_id uuid, session_version integer, new_password_hash text,
  family_id uuid, token_hash bytea, expires_at timestamptz, new_device_hash bytea default null)
returns app.account
language plpgsql
as $$
declare
  account app.account := app.login_succeeded(attempt_id, user_id, session_version, new_password_hash,
                                              new_device_hash);
begin
  perform app.issue_refresh_token(family_id, token_hash, expires_at);
  return account;
end
$$;
grant execute on function app.login_succeeded_with_refresh_token(bigint, uuid, integer, text, uuid, bytea, timestamptz,
                                                                 bytea)
  to sg_app;

/**
 * Counts a signup from `client_ip` and refuses it (P0429, DETAIL = seconds to wait) when
 * the client's network (the address, or its /64 for IPv6) made 5 in the last hour or 20
 * in the last day. Loopback is not a client's address: the app sees it only from its own
 * machine (development, a benchmark) or from a proxy that was not declared with
 * TRUSTED_PROXY_COUNT, and one counter for every client would shut signup for everyone.
 * Runs in the signup's transaction, so a signup that fails is not counted.
 */
create or replace function app._count_signup(email text, client_ip inet) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  network inet;
  last_hour integer;
  oldest_in_hour timestamptz;
  last_day integer;
  oldest_in_day timestamptz;
  wait_until timestamptz;
begin
  if client_ip is null or client_ip << inet '127.0.0.0/8' or client_ip = inet '::1' then
    return;
  end if;
  network := case when family(client_ip) = 6 then network(set_masklen(client_ip, 64))::inet
                  else set_masklen(client_ip, 32) end;
  perform pg_advisory_xact_lock(hashtextextended('signup-ip:' || network::text, 0));
  select count(*) filter (where a.attempted_at > now() - interval '1 hour'),
         min(a.attempted_at) filter (where a.attempted_at > now() - interval '1 hour'),
         count(*), min(a.attempted_at)
    into last_hour, oldest_in_hour, last_day, oldest_in_day
    from public.login_attempts a
   where a.kind = 'signup' and a.client_ip = network and a.attempted_at > now() - interval '1 day';
  if last_hour >= 5 then
    wait_until := oldest_in_hour + interval '1 hour';
  end if;
  if last_day >= 20 then
    wait_until := greatest(wait_until, oldest_in_day + interval '1 day');
  end if;
  if wait_until is not null then
    raise exception 'Too many new accounts from your network. Try again later.'
      using errcode = 'P0429', detail = greatest(1, ceil(extract(epoch from wait_until - now())))::integer::text;
  end if;
  insert into public.login_attempts (email, client_ip, kind) values (lower(email), network, 'signup');
end
$$;

/**
 * Forgets login, reset and signup attempts older than a day (the throttles look back a
 * day at most) and devices not seen for a year. Called hourly by the worker
 * (worker/main.py); returns how many attempts went.
 */
create or replace function app.purge_login_attempts() returns integer
language sql security definer
set search_path = pg_catalog, pg_temp
as $$
  delete from public.trusted_devices d where d.expires_at < now();
  with purged as (
    delete from public.login_attempts a where a.attempted_at < now() - interval '1 day' returning 1
  )
  select count(*)::integer from purged
$$;
grant execute on function app.purge_login_attempts() to sg_worker;
