-- API keys (Pro and Agency plans): created and revoked by their owner, and checked on
-- every request that presents one. Only a key's SHA-256 and visible prefix are stored.
--
-- A key has scopes, and the request's operation names the one it needs:
--   videos:write     generate a video, a batch
--   videos:read      read jobs and batches
--   credits:read     read the balance and usage
--   webhooks:manage  the account's webhook endpoints
-- Everything else (keys, billing, password, sessions) needs a signed-in session.
-- A key may have a monthly credit budget: the jobs it pays for in a calendar month (UTC),
-- failed (refunded) ones not counted, are checked when each job row is inserted, in the
-- spend's own transaction, so concurrent requests cannot overrun it.
set local role sg_owner;

grant select (scopes, monthly_budget) on public.api_keys to sg_app;

/** The scopes an API key can have. */
create or replace function app.api_key_scopes() returns text[]
language sql immutable
as $$ select array['videos:write', 'videos:read', 'credits:read', 'webhooks:manage'] $$;
grant execute on function app.api_key_scopes() to sg_app, sg_service;

/** The first instant of the budget month that contains `at` (calendar months, UTC). */
create or replace function app.budget_month_start(at timestamptz default now()) returns timestamptz
language sql immutable
as $$ select date_trunc('month', at at time zone 'UTC') at time zone 'UTC' $$;
grant execute on function app.budget_month_start(timestamptz) to sg_app, sg_service;

/**
 * Credits the key has spent this budget month: its jobs created since the month began,
 * except failed ones (their credit was refunded). Read with the caller's privileges.
 */
create or replace function app.api_key_budget_used(key_id uuid) returns integer
language sql stable
as $$
  select count(*)::integer from public.jobs j
   where j.api_key_id = key_id and j.created_at >= app.budget_month_start() and j.status <> 'failed'
$$;
grant execute on function app.api_key_budget_used(uuid) to sg_app, sg_service;

/**
 * Trigger on jobs (before insert): a job paid through an API key with a monthly budget
 * is refused (P0403, changing nothing) once the key's budget for the month is spent.
 * The key row is locked first, so concurrent spends through one key count one another.
 */
create or replace function app.enforce_api_key_budget() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  budget integer;
  used integer;
begin
  if new.api_key_id is null then
    return new;
  end if;
  select k.monthly_budget into budget from public.api_keys k where k.id = new.api_key_id for update;
  if budget is null then
    return new;
  end if;
  used := app.api_key_budget_used(new.api_key_id);
  if used >= budget then
    raise exception 'This API key''s monthly budget of % credits is used up; it renews on %.',
      budget, to_char(app.budget_month_start() + interval '1 month', 'YYYY-MM-DD')
      using errcode = 'P0403';
  end if;
  return new;
end
$$;
-- (re)created only when it differs, as pg_get_triggerdef spells it: no lock on jobs otherwise
select app._ensure_trigger('public.jobs', 'jobs_api_key_budget',
  'CREATE TRIGGER jobs_api_key_budget BEFORE INSERT ON public.jobs FOR EACH ROW '
  'EXECUTE FUNCTION app.enforce_api_key_budget()');

-- the signature before scopes and budgets
drop function if exists app.create_api_key(text, text, bytea);

/**
 * Creates an API key (its SHA-256 and visible prefix) for the current user, with its
 * scopes (at least one of app.api_key_scopes()) and an optional monthly credit budget.
 * Only plans whose features include api_keys may (P0403 with an upgrade hint); at most
 * 25 live keys (P0409); P0422 for a bad name, scope or budget.
 */
create or replace function app.create_api_key(key_name text, key_prefix text, key_hash bytea,
                                              key_scopes text[] default null, key_budget integer default null)
returns table (id uuid, name text, prefix text, created_at timestamptz, last_used_at timestamptz,
               scopes text[], monthly_budget integer)
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  uid uuid := app.require_user_id();
  allowed boolean;
  wanted text[] := coalesce(key_scopes, app.api_key_scopes());
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
  if cardinality(wanted) is distinct from cardinality(array(select distinct unnest(wanted)))
     or cardinality(wanted) < 1 or not wanted <@ app.api_key_scopes() or array_position(wanted, null) is not null then
    raise exception 'scopes must be one or more of %, each once', array_to_string(app.api_key_scopes(), ', ')
      using errcode = 'P0422';
  end if;
  if key_budget is not null and key_budget not between 1 and 1000000 then
    raise exception 'monthly_budget must be from 1 to 1000000 credits, or null for none' using errcode = 'P0422';
  end if;
  -- serialise key creation per user so the limit holds under concurrent requests
  perform 1 from public.subscriptions s where s.user_id = uid for update;
  if (select count(*) from public.api_keys k where k.user_id = uid and k.revoked_at is null) >= 25 then
    raise exception 'You already have 25 active API keys; revoke one first.' using errcode = 'P0409';
  end if;
  return query
    insert into public.api_keys as k (user_id, name, prefix, key_hash, scopes, monthly_budget)
    values (uid, btrim(key_name), key_prefix, key_hash,
            array(select s from unnest(app.api_key_scopes()) s where s = any(wanted)), key_budget)
    returning k.id, k.name, k.prefix, k.created_at, k.last_used_at, k.scopes, k.monthly_budget;
end
$$;
grant execute on function app.create_api_key(text, text, bytea, text[], integer) to sg_app;

/**
 * The current user's live API keys, newest first, with what each has spent of its
 * budget this month.
 */
create or replace function app.list_api_keys()
returns table (id uuid, name text, prefix text, created_at timestamptz, last_used_at timestamptz,
               scopes text[], monthly_budget integer, budget_used integer)
language sql stable
as $$
  select k.id, k.name, k.prefix, k.created_at, k.last_used_at, k.scopes, k.monthly_budget,
         app.api_key_budget_used(k.id)
    from public.api_keys k
   where k.user_id = app.require_user_id() and k.revoked_at is null
   order by k.created_at desc, k.id
$$;
grant execute on function app.list_api_keys() to sg_app;

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

-- the signature before scopes
drop function if exists app.authenticate_api_key(bytea);

/**
 * Authenticates an API key by its SHA-256 for an operation that needs `required_scope`
 * (one of app.api_key_scopes(); 'any' for what every key may do, such as reading its
 * own account; null for operations that need a signed-in session), and makes its owner
 * current for the transaction, and the key itself (app.api_key_id: the jobs it pays for
 * count against its budget). P0401 for an unknown or revoked key; P0403 when the account
 * is disabled, its plan no longer includes API access, or the key lacks the scope (the
 * message names it). last_used_at is refreshed at most every 10 seconds, so a busy key
 * does not serialise its requests on one row.
 */
create or replace function app.authenticate_api_key(key_hash bytea, required_scope text default 'any')
returns uuid
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  key record;
begin
  select k.id, k.user_id, k.last_used_at, k.scopes, u.is_active,
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
  if required_scope is null then
    raise exception 'API keys cannot do this: sign in (an access token) to manage keys, billing and the account.'
      using errcode = 'P0403';
  end if;
  if required_scope <> 'any' and not required_scope = any(key.scopes) then
    raise exception 'This API key lacks the % scope.', required_scope using errcode = 'P0403';
  end if;
  if key.last_used_at is null or key.last_used_at < now() - interval '10 seconds' then
    update public.api_keys k set last_used_at = now() where k.id = key.id;
  end if;
  perform set_config('app.user_id', key.user_id::text, true);
  perform set_config('app.api_key_id', key.id::text, true);
  return key.user_id;
end
$$;
grant execute on function app.authenticate_api_key(bytea, text) to sg_app;
