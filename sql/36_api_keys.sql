-- API keys (Pro and Agency plans): created and revoked by their owner, and checked on
-- every request that presents one. Only a key's SHA-256 and visible prefix are stored.
set local role sg_owner;

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

-- The request-time check crosses tenants (a key names its user), so it runs as sg_service.
set local role sg_service;

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
