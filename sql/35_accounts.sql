-- Accounts and identity: signup, login with a shared throttle, the three ways a
-- request proves who it is (access token, API key, browser session), refresh-token
-- rotation, password changes and API keys.
--
-- Password hashing and token signing happen in the web process (argon2, JWT); only
-- hashes reach the database, and only the functions here read password hashes.
set local role sg_owner;

/** What the API says about a user: identity, plan and balance. */
create type app.account as (
  id uuid, email text, full_name text, is_verified boolean, tier text,
  credits_remaining integer, created_at timestamptz, session_version integer);
grant usage on type app.account to sg_app, sg_service;

/** The account of `user_id`, read with the caller's privileges (RLS applies). */
create or replace function app.account_of(user_id uuid) returns app.account
language sql stable
as $$
  select u.id, u.email, u.full_name, u.is_verified, s.tier, s.credits_remaining, u.created_at, u.session_version
    from public.users u join public.subscriptions s on s.user_id = u.id
   where u.id = account_of.user_id
$$;
grant execute on function app.account_of(uuid) to sg_app, sg_service;

/** The signed-in user's account (GET /v1/auth/me). */
create or replace function app.me() returns app.account
language sql stable
as $$ select app.account_of(app.require_user_id()) $$;
grant execute on function app.me() to sg_app;

/**
 * Proves a request's access token is still good and makes its user current for the
 * transaction: the user exists, is active, and has not ended all sessions since the
 * token was issued (session_version). P0401 otherwise; P0403 for a disabled account.
 */
create or replace function app.authenticate_access(user_id uuid, session_version integer) returns uuid
language plpgsql
as $$
#variable_conflict use_variable
declare
  active boolean;
  current_version integer;
begin
  perform set_config('app.user_id', user_id::text, true);
  select u.is_active, u.session_version into active, current_version from public.users u where u.id = user_id;
  if not found or current_version <> session_version then
    perform set_config('app.user_id', '', true);
    raise exception 'Session expired. Please sign in again.' using errcode = 'P0401';
  end if;
  if not active then
    perform set_config('app.user_id', '', true);
    raise exception 'This account is disabled.' using errcode = 'P0403';
  end if;
  return user_id;
end
$$;
grant execute on function app.authenticate_access(uuid, integer) to sg_app;

/** Stores a new refresh token (its hash) for the current user. */
create or replace function app.issue_refresh_token(family_id uuid, token_hash bytea, expires_at timestamptz)
returns void
language sql security definer
set search_path = pg_catalog, pg_temp
as $$
  insert into public.refresh_tokens (user_id, family_id, token_hash, expires_at)
  values (app.require_user_id(), family_id, token_hash, expires_at)
$$;
grant execute on function app.issue_refresh_token(uuid, bytea, timestamptz) to sg_app;

/** Ends the refresh-token family of the presented token, if it is the current user's. */
create or replace function app.revoke_refresh_token(token_hash bytea) returns boolean
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
begin
  update public.refresh_tokens t set revoked_at = coalesce(t.revoked_at, now())
   where t.user_id = app.require_user_id()
     and t.family_id = (select f.family_id from public.refresh_tokens f where f.token_hash = token_hash);
  return found;
end
$$;
grant execute on function app.revoke_refresh_token(bytea) to sg_app;

/** Starts a browser session (cookie token hash) for the current user. */
create or replace function app.start_browser_session(token_hash bytea, expires_at timestamptz) returns void
language sql security definer
set search_path = pg_catalog, pg_temp
as $$
  insert into public.browser_sessions (user_id, token_hash, expires_at)
  values (app.require_user_id(), token_hash, expires_at)
$$;
grant execute on function app.start_browser_session(bytea, timestamptz) to sg_app;

/** The current user's argon2 hash, for re-checking the password before changing it. */
create or replace function app.current_password_hash() returns text
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$ select u.password_hash from public.users u where u.id = app.require_user_id() $$;
grant execute on function app.current_password_hash() to sg_app;

/**
 * Ends every refresh token and browser session of a user (password change or reset,
 * disabled account). Runs with the caller's rights: RLS decides whose rows it reaches.
 */
create or replace function app._end_sessions(uid uuid) returns void
language sql
set search_path = pg_catalog, pg_temp
as $$
  update public.refresh_tokens t set revoked_at = now() where t.user_id = uid and t.revoked_at is null;
  update public.browser_sessions b set revoked_at = now() where b.user_id = uid and b.revoked_at is null;
$$;
grant execute on function app._end_sessions(uuid) to sg_service;

/**
 * Sets the current user's password and ends every session issued before: refresh
 * tokens and browser sessions are revoked, and the bumped session_version rejects
 * outstanding access tokens. Returns the new session_version.
 */
create or replace function app.change_password(new_password_hash text) returns integer
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  uid uuid := app.require_user_id();
  version integer;
begin
  if new_password_hash is null or new_password_hash not like '$argon2id$%' then
    raise exception 'new_password_hash must be an argon2id hash' using errcode = 'P0422';
  end if;
  update public.users u
     set password_hash = new_password_hash, session_version = u.session_version + 1, updated_at = now()
   where u.id = uid
  returning u.session_version into version;
  perform app._end_sessions(uid);
  return version;
end
$$;
grant execute on function app.change_password(text) to sg_app;

/**
 * Creates an API key (its SHA-256 and visible prefix) for the current user. Only plans
 * whose features include api_keys may (P0403 with an upgrade hint); at most 25 live keys.
 */
create or replace function app.create_api_key(key_name text, key_prefix text, key_hash bytea)
returns table (id uuid, name text, prefix text, created_at timestamptz)
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
    raise exception 'API keys are available on the Pro and Agency plans. Upgrade at /pricing.'
      using errcode = 'P0403';
  end if;
  if not (select u.is_verified from public.users u where u.id = uid) then
    raise exception 'Verify your email address before creating API keys.' using errcode = 'P0403';
  end if;
  if key_name is null or length(btrim(key_name)) not between 1 and 100 then
    raise exception 'name must be 1 to 100 characters' using errcode = 'P0422';
  end if;
  -- serialise key creation per user so the limit holds under concurrent requests
  perform 1 from public.subscriptions s where s.user_id = uid for update;
  if (select count(*) from public.api_keys k where k.user_id = uid and k.revoked_at is null) >= 25 then
    raise exception 'You already have 25 active API keys; revoke one first.' using errcode = 'P0409';
  end if;
  return query
    insert into public.api_keys as k (user_id, name, prefix, key_hash)
    values (uid, btrim(key_name), key_prefix, key_hash)
    returning k.id, k.name, k.prefix, k.created_at;
end
$$;
grant execute on function app.create_api_key(text, text, bytea) to sg_app;

/** Revokes one of the current user's API keys; P0404 if there is no such live key. */
create or replace function app.revoke_api_key(key_id uuid) returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  update public.api_keys k set revoked_at = now()
   where k.id = key_id and k.user_id = app.require_user_id() and k.revoked_at is null;
  if not found then
    raise exception 'API key not found.' using errcode = 'P0404';
  end if;
end
$$;
grant execute on function app.revoke_api_key(uuid) to sg_app;

-- Cross-tenant identity functions run as sg_service.
set local role sg_service;

/**
 * Creates a user with the free plan and its signup grant of credits, in the caller's
 * transaction, and makes the new user current for the rest of it (so the caller can
 * store its first tokens). Email uniqueness ignores letter case; a duplicate raises
 * P0409 whatever the race. Runs as sg_service because the new user is nobody's tenant yet.
 */
create or replace function app.signup(email text, password_hash text, full_name text default null)
returns app.account
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  new_user public.users%rowtype;
  free_credits integer;
  balance integer;
begin
  if email is null or length(email) not between 3 and 254 or position('@' in email) = 0 then
    raise exception 'email is not a valid address' using errcode = 'P0422';
  end if;
  if password_hash is null or password_hash not like '$argon2id$%' then
    raise exception 'password_hash must be an argon2id hash' using errcode = 'P0422';
  end if;
  if full_name is not null and length(full_name) > 200 then
    raise exception 'full_name must be at most 200 characters' using errcode = 'P0422';
  end if;

  begin
    insert into public.users as u (email, password_hash, full_name)
    values (email, password_hash, nullif(btrim(full_name), ''))
    returning u.* into new_user;
  exception when unique_violation then
    raise exception 'An account with this email already exists.' using errcode = 'P0409';
  end;

  select p.credits into free_credits from public.plans p where p.tier = 'free';
  insert into public.subscriptions (user_id, tier) values (new_user.id, 'free');
  select g.credits_remaining into balance
    from app.grant_credits(new_user.id, free_credits, 'signup_grant', 'signup:' || new_user.id) g;

  perform app._queue_email(new_user.id, 'verify', 'verify:signup:' || new_user.id);
  perform set_config('app.user_id', new_user.id::text, true);
  return (new_user.id, new_user.email, new_user.full_name, new_user.is_verified,
          'free', balance, new_user.created_at, new_user.session_version)::app.account;
end
$$;
grant execute on function app.signup(text, text, text) to sg_app;

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

/**
 * Authenticates an API key by its SHA-256 and makes its owner current for the
 * transaction. P0401 for an unknown or revoked key; P0403 when the account is
 * disabled or its plan no longer includes API access. last_used_at is refreshed at
 * most every 10 seconds, so a busy key does not serialise its requests on one row.
 */
create or replace function app.authenticate_api_key(key_hash bytea) returns uuid
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  key record;
begin
  select k.id, k.user_id, k.last_used_at, u.is_active,
         coalesce((p.features ->> 'api_keys')::boolean, false)
           and s.status in ('active', 'trialing', 'past_due') as plan_allows
    into key
    from public.api_keys k
    join public.users u on u.id = k.user_id
    join public.subscriptions s on s.user_id = k.user_id
    join public.plans p on p.tier = s.tier
   where k.key_hash = key_hash and k.revoked_at is null;
  if not found then
    raise exception 'Invalid API key.' using errcode = 'P0401';
  end if;
  if not key.is_active then
    raise exception 'This account is disabled.' using errcode = 'P0403';
  end if;
  if not key.plan_allows then
    raise exception 'API keys need the Pro or Agency plan. Upgrade at /pricing.' using errcode = 'P0403';
  end if;
  if key.last_used_at is null or key.last_used_at < now() - interval '10 seconds' then
    update public.api_keys k set last_used_at = now() where k.id = key.id;
  end if;
  perform set_config('app.user_id', key.user_id::text, true);
  return key.user_id;
end
$$;
grant execute on function app.authenticate_api_key(bytea) to sg_app;

/**
 * Authenticates a browser session cookie (by its token's SHA-256) and makes its user
 * current. Returns no row when the session is unknown, revoked, expired, or the user
 * is disabled.
 */
create or replace function app.authenticate_browser_session(token_hash bytea) returns setof app.account
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  owner uuid;
begin
  select b.user_id into owner
    from public.browser_sessions b join public.users u on u.id = b.user_id
   where b.token_hash = token_hash and b.revoked_at is null and b.expires_at > now() and u.is_active;
  if owner is null then
    return;
  end if;
  perform set_config('app.user_id', owner::text, true);
  return next app.account_of(owner);
end
$$;
grant execute on function app.authenticate_browser_session(bytea) to sg_app;

/** Ends the browser session with this cookie token hash (logout). */
create or replace function app.end_browser_session(token_hash bytea) returns boolean
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
begin
  update public.browser_sessions b set revoked_at = now() where b.token_hash = token_hash and b.revoked_at is null;
  return found;
end
$$;
grant execute on function app.end_browser_session(bytea) to sg_app;

/**
 * Rotates a refresh token: the presented one (by hash) is revoked and a new one in the
 * same family stored, and its user made current. Outcomes other than 'rotated' change
 * nothing, except 'reused': a revoked token presented again means it was stolen or
 * replayed, so the whole family is revoked (committed by the caller, which then
 * answers 401).
 */
create or replace function app.rotate_refresh_token(old_hash bytea, new_hash bytea, new_expires_at timestamptz)
returns table (outcome text, user_id uuid, session_version integer)
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  token public.refresh_tokens%rowtype;
  owner public.users%rowtype;
begin
  select * into token from public.refresh_tokens t where t.token_hash = old_hash for update;
  if not found then
    return query select 'invalid', null::uuid, null::integer;
    return;
  end if;
  if token.revoked_at is not null then
    update public.refresh_tokens t set revoked_at = now()
     where t.family_id = token.family_id and t.revoked_at is null;
    return query select 'reused', token.user_id, null::integer;
    return;
  end if;
  if token.expires_at <= now() then
    return query select 'expired', token.user_id, null::integer;
    return;
  end if;
  select * into owner from public.users u where u.id = token.user_id;
  if not owner.is_active then
    return query select 'disabled', token.user_id, null::integer;
    return;
  end if;
  update public.refresh_tokens t set revoked_at = now() where t.id = token.id;
  insert into public.refresh_tokens (user_id, family_id, token_hash, expires_at)
  values (token.user_id, token.family_id, new_hash, new_expires_at);
  perform set_config('app.user_id', token.user_id::text, true);
  return query select 'rotated', token.user_id, owner.session_version;
end
$$;
grant execute on function app.rotate_refresh_token(bytea, bytea, timestamptz) to sg_app;

/**
 * Enables or disables an account (operators, through the admin CLI). Disabling ends
 * every session at once: tokens, keys and browser sessions stop working.
 */
create or replace function app.set_user_active(email text, active boolean) returns uuid
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  uid uuid;
begin
  update public.users u
     set is_active = active,
         session_version = u.session_version + case when active then 0 else 1 end,
         updated_at = now()
   where lower(u.email) = lower(btrim(email))
  returning u.id into uid;
  if uid is null then
    raise exception 'No user with email %', email using errcode = 'P0404';
  end if;
  if not active then
    perform app._end_sessions(uid);
  end if;
  return uid;
end
$$;
