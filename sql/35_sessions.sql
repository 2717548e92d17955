-- Sessions: the account a request acts for, and the ways a request proves who it is
-- after signing in (access token, refresh-token rotation, browser session), and the
-- ends of sessions (logout, password change, disabled account).
--
-- Token signing happens in the web process (JWT); only token hashes reach the database.
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

-- Cross-tenant session functions run as sg_service.
set local role sg_service;

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
