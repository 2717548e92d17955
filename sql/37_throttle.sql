-- Sign-in and its throttle: each attempt is checked against the failure counters shared
-- by every web process before the password is verified (in the web process, argon2), and
-- a success is recorded in a second call. Login attempts are not tenant data.
set local role sg_service;

/**
 * First half of a login: applies the throttle shared by every web process and, when
 * not throttled, records the attempt (it counts as a failure until app.login_succeeded
 * deletes it) and returns the stored hash to verify. Throttled when, within 15 minutes,
 * the email has 10 failures since its last successful sign-in, or the client IP has 50
 * failures; then retry_after is the seconds until the window frees a slot and nothing is
 * recorded. user_id/password_hash are null for an unknown email (the caller still
 * verifies against a dummy hash, so both cases take the same time). session_version
 * lets the caller sign the new tokens before it finishes the login.
 */
create or replace function app.login_attempt(email text, client_ip inet)
returns table (attempt_id bigint, retry_after integer, user_id uuid, password_hash text, is_active boolean,
               session_version integer)
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  window_start constant timestamptz := now() - interval '15 minutes';
  normalised constant text := lower(btrim(coalesce(email, '')));
  account record;
  oldest_email_failure timestamptz;
  email_failures integer;
  oldest_ip_failure timestamptz;
  ip_failures integer := 0;
  wait_until timestamptz;
  attempt bigint;
begin
  -- one login check at a time per email and per IP, so concurrent guesses cannot all
  -- pass the count before any of them is recorded
  perform pg_advisory_xact_lock(hashtextextended('login-email:' || normalised, 0));
  if client_ip is not null then
    perform pg_advisory_xact_lock(hashtextextended('login-ip:' || host(client_ip), 0));
  end if;

  select u.id, u.password_hash, u.is_active, u.session_version, u.last_login into account
    from public.users u where lower(u.email) = normalised;
  select count(*), min(a.attempted_at) into email_failures, oldest_email_failure
    from public.login_attempts a
   where a.kind = 'login' and lower(a.email) = normalised
     and a.attempted_at > greatest(window_start, account.last_login);
  if client_ip is not null then
    select count(*), min(a.attempted_at) into ip_failures, oldest_ip_failure
      from public.login_attempts a
     where a.kind = 'login' and a.client_ip = client_ip and a.attempted_at > window_start;
  end if;

  if email_failures >= 10 then
    wait_until := oldest_email_failure + interval '15 minutes';
  end if;
  if ip_failures >= 50 then
    wait_until := greatest(wait_until, oldest_ip_failure + interval '15 minutes');
  end if;
  if wait_until is not null then
    return query select null::bigint, greatest(1, ceil(extract(epoch from wait_until - now()))::integer),
                        null::uuid, null::text, null::boolean, null::integer;
    return;
  end if;

  insert into public.login_attempts as a (email, client_ip) values (normalised, client_ip)
  returning a.id into attempt;
  return query select attempt, null::integer, account.id, account.password_hash, account.is_active,
                      account.session_version;
end
$$;
grant execute on function app.login_attempt(text, inet) to sg_app;

/**
 * Second half of a successful login: deletes the attempt, stamps last_login (which
 * resets the email's throttle) and the account's last_active_at, stores a
 * rehash when the parameters changed, and makes the user current for the rest of the
 * transaction. Only for a fresh attempt on that user's own email, and only while the
 * account's session_version is still the one login_attempt returned: a password
 * changed in between may have made the verified password the old one.
 */
create or replace function app.login_succeeded(attempt_id bigint, user_id uuid, session_version integer,
                                               new_password_hash text default null)
returns app.account
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
begin
  delete from public.login_attempts a
   using public.users u
   where a.id = attempt_id and a.kind = 'login' and u.id = user_id and lower(u.email) = a.email
     and u.session_version = session_version and a.attempted_at > now() - interval '5 minutes';
  if not found then
    raise exception 'No such login attempt.' using errcode = 'P0401';
  end if;
  update public.users u
     set last_login = now(),
         password_hash = coalesce(new_password_hash, u.password_hash)
   where u.id = user_id;
  update public.subscriptions s set last_active_at = now() where s.user_id = user_id;
  perform set_config('app.user_id', user_id::text, true);
  return app.account_of(user_id);
end
$$;
grant execute on function app.login_succeeded(bigint, uuid, integer, text) to sg_app;

/**
 * An API sign-in's second half in one call: app.login_succeeded, then a new refresh
 * token family for the user it made current (the caller signed the token with the
 * session_version that login_succeeded has just confirmed).
 */
create or replace function app.login_succeeded_with_refresh_token(
  attempt_id bigint, user_id uuid, session_version integer, new_password_hash text,
  family_id uuid, token_hash bytea, expires_at timestamptz)
returns app.account
language plpgsql
as $$
declare
  account app.account := app.login_succeeded(attempt_id, user_id, session_version, new_password_hash);
begin
  perform app.issue_refresh_token(family_id, token_hash, expires_at);
  return account;
end
$$;
grant execute on function app.login_succeeded_with_refresh_token(bigint, uuid, integer, text, uuid, bytea, timestamptz)
  to sg_app;

/**
 * Forgets login and reset attempts older than a day: the throttles look back an hour at
 * most, and the day left is for an operator looking into an attack. Called hourly by the
 * worker (worker/main.py); returns how many rows went.
 */
create or replace function app.purge_login_attempts() returns integer
language sql security definer
set search_path = pg_catalog, pg_temp
as $$
  with purged as (
    delete from public.login_attempts a where a.attempted_at < now() - interval '1 day' returning 1
  )
  select count(*)::integer from purged
$$;
grant execute on function app.purge_login_attempts() to sg_worker;
