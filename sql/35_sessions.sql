-- Sessions: the account a request acts for, and the ways a request proves who it is
-- after signing in (access token, refresh-token rotation, browser session), and the
-- ends of sessions (logout, password change, disabled account).
--
-- Token signing happens in the web process (JWT); only token hashes reach the database.
set local role sg_owner;

/** What the API says about a user: identity, plan and balance. */
do $$
declare
  wanted constant text := 'id uuid, email text, full_name text, is_verified boolean, tier text, '
                          'credits_remaining integer, created_at timestamptz, session_version integer';
begin
  -- created once, and again only when its fields change (the functions returning it are
  -- re-created by this file and the files after it)
  if (select string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ', ' order by a.attnum)
        from pg_attribute a where a.attrelid = to_regclass('app.account') and a.attnum > 0 and not a.attisdropped)
     is distinct from wanted then
    drop type if exists app.account cascade;
    execute format('create type app.account as (%s)', wanted);
  end if;
end
$$;
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

-- Signatures these functions had before access tokens named their session and rotation
-- served concurrent retries. Dropped by name, so that a migrate that replaces functions in
-- place (rather than rebuilding the schema) leaves no older overload callable: the old
-- authenticate_access would accept a token whose session has ended.
drop function if exists app.authenticate_access(uuid, integer);
drop function if exists app.revoke_refresh_token(bytea);
do $$
begin
  -- same arguments, new result columns: create or replace cannot change a result type
  -- (null, so no drop, when there is no such function yet)
  if pg_get_function_result(to_regprocedure('app.rotate_refresh_token(bytea, bytea, timestamptz)'))
     not like '%expires_at%' then
    drop function app.rotate_refresh_token(bytea, bytea, timestamptz);
  end if;
end
$$;

/**
 * Proves a request's access token is still good and makes its user current for the
 * transaction: the user exists, is active, has not ended all sessions since the token
 * was issued (session_version), and the token's own session (its refresh family) is
 * the user's and has not ended (logout, reuse detected). P0401 otherwise; P0403 for a
 * disabled account.
 */
create or replace function app.authenticate_access(user_id uuid, session_version integer, session_id uuid)
returns uuid
language plpgsql
as $$
#variable_conflict use_variable
declare
  active boolean;
  current_version integer;
  session_live boolean;
begin
  perform set_config('app.user_id', user_id::text, true);
  select u.is_active, u.session_version, f.id is not null and f.revoked_at is null
    into active, current_version, session_live
    from public.users u left join public.refresh_families f on f.id = session_id and f.user_id = u.id
   where u.id = user_id;
  if not found or current_version <> session_version or not session_live then
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
grant execute on function app.authenticate_access(uuid, integer, uuid) to sg_app;

/** Starts a new session (refresh-token family) for the current user with its first refresh token. */
create or replace function app.issue_refresh_token(family_id uuid, token_hash bytea, expires_at timestamptz)
returns void
language sql security definer
set search_path = pg_catalog, pg_temp
as $$
  insert into public.refresh_families (id, user_id) values (family_id, app.require_user_id());
  insert into public.refresh_tokens (user_id, family_id, token_hash, expires_at)
  values (app.require_user_id(), family_id, token_hash, expires_at);
$$;
grant execute on function app.issue_refresh_token(uuid, bytea, timestamptz) to sg_app;

/**
 * Logout: ends the session the request's access token belongs to (session_id) and the
 * session of the presented refresh token, where they are the current user's. Their
 * access tokens stop at once (app.authenticate_access reads the family). True when a
 * session ended.
 */
create or replace function app.revoke_refresh_token(token_hash bytea, session_id uuid default null)
returns boolean
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  uid uuid := app.require_user_id();
  ended uuid[];
begin
  -- the family rows first, as rotation locks them: one waits for the other
  with revoked as (
    update public.refresh_families f set revoked_at = now()
     where f.user_id = uid and f.revoked_at is null
       and (f.id = session_id
            or f.id = (select t.family_id from public.refresh_tokens t where t.token_hash = token_hash))
    returning f.id
  )
  select array_agg(r.id) into ended from revoked r;
  update public.refresh_tokens t set revoked_at = now()
   where t.user_id = uid and t.family_id = any(ended) and t.revoked_at is null;
  return ended is not null;
end
$$;
grant execute on function app.revoke_refresh_token(bytea, uuid) to sg_app;

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
 * Ends every session of a user: refresh families (and so their access tokens), refresh
 * tokens and browser sessions (password change or reset, disabled account). Runs with
 * the caller's rights: RLS decides whose rows it reaches.
 */
create or replace function app._end_sessions(uid uuid) returns void
language sql
set search_path = pg_catalog, pg_temp
as $$
  update public.refresh_families f set revoked_at = now() where f.user_id = uid and f.revoked_at is null;
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
 * same family stored, and its user made current. Rotation and revocation of one family
 * happen one at a time (both lock its row), so whichever comes second sees the first's
 * work: a revoked family refuses rotation ('revoked'), and a reuse revokes a token
 * rotated a moment earlier too.
 *
 * Outcomes: 'rotated' (token_hash/expires_at are the new token's); 'repeated' when the
 * presented token was rotated within the last 10 seconds into a token that is still
 * live: a concurrent request (a second tab, a client retry) gets that same token again
 * (the caller re-signs the identical pair and checks its hash against token_hash);
 * 'reused' when a token rotated earlier comes back, which revokes the whole family
 * (committed by the caller, which then answers 401); 'invalid', 'expired', 'disabled'
 * and 'revoked' change nothing.
 */
create or replace function app.rotate_refresh_token(old_hash bytea, new_hash bytea, new_expires_at timestamptz)
returns table (outcome text, user_id uuid, session_version integer, family_id uuid, token_hash bytea,
               expires_at timestamptz)
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  grace constant interval := interval '10 seconds';
  token public.refresh_tokens%rowtype;
  family public.refresh_families%rowtype;
  successor public.refresh_tokens%rowtype;
  owner public.users%rowtype;
  new_id uuid;
begin
  select * into token from public.refresh_tokens t where t.token_hash = old_hash;
  if not found then
    return query select 'invalid', null::uuid, null::integer, null::uuid, null::bytea, null::timestamptz;
    return;
  end if;
  select * into family from public.refresh_families f where f.id = token.family_id for update;
  -- read again now that the family is ours: a rotation that held it may have used the token
  select * into token from public.refresh_tokens t where t.id = token.id;
  if family.revoked_at is not null then
    return query select 'revoked', token.user_id, null::integer, family.id, null::bytea, null::timestamptz;
    return;
  end if;
  select * into owner from public.users u where u.id = token.user_id;

  if token.revoked_at is not null then
    if token.replaced_by is not null and token.revoked_at > clock_timestamp() - grace and owner.is_active then
      select * into successor from public.refresh_tokens t where t.id = token.replaced_by and t.revoked_at is null;
      if found then
        perform set_config('app.user_id', token.user_id::text, true);
        return query select 'repeated', token.user_id, owner.session_version, family.id, successor.token_hash,
                            successor.expires_at;
        return;
      end if;
    end if;
    update public.refresh_families f set revoked_at = now() where f.id = family.id;
    update public.refresh_tokens t set revoked_at = now() where t.family_id = family.id and t.revoked_at is null;
    return query select 'reused', token.user_id, null::integer, family.id, null::bytea, null::timestamptz;
    return;
  end if;
  if token.expires_at <= now() then
    return query select 'expired', token.user_id, null::integer, family.id, null::bytea, null::timestamptz;
    return;
  end if;
  if not owner.is_active then
    return query select 'disabled', token.user_id, null::integer, family.id, null::bytea, null::timestamptz;
    return;
  end if;
  insert into public.refresh_tokens as t (user_id, family_id, token_hash, expires_at)
  values (token.user_id, family.id, new_hash, new_expires_at)
  returning t.id into new_id;
  -- the clock, not the transaction's start: the grace window counts from the rotation itself
  update public.refresh_tokens t set revoked_at = clock_timestamp(), replaced_by = new_id where t.id = token.id;
  perform set_config('app.user_id', token.user_id::text, true);
  return query select 'rotated', token.user_id, owner.session_version, family.id, new_hash, new_expires_at;
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
