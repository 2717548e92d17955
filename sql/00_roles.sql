-- Roles and database-wide privileges. Run by the migrating administrator
-- (not as sg_owner) before the migrations, since the migrations run as sg_owner.
--
--   sg_owner    owns every table, view and user-facing function. Nobody logs in as it.
--   sg_service  owns the few SECURITY DEFINER functions that must cross tenants
--               (signup, login lookup, worker job control, Stripe events, renewals).
--               Nobody logs in as it; a policy per tenant table lets it see every row.
--   sg_app      the web process: LOGIN, owns nothing, no BYPASSRLS.
--   sg_worker   the render worker: pgqueuer's tables plus the job-control functions.
--   sg_reporting owns the reporting views: reads every tenant's rows (a SELECT-only policy),
--               writes nothing. Nobody logs in as it.
--   sg_analyst  SELECT on the reporting schema and nothing else.
--
-- Roles are cluster-wide, so this file may run concurrently for several databases
-- (test sessions do): creation tolerates a twin, and attributes are only altered
-- when they differ, since concurrent ALTER ROLE fails with "tuple concurrently updated".

do $$
declare
  wanted constant jsonb := '{
    "sg_owner":   "nologin nosuperuser nobypassrls nocreaterole nocreatedb noinherit",
    "sg_service": "nologin nosuperuser nobypassrls nocreaterole nocreatedb noinherit",
    "sg_reporting": "nologin nosuperuser nobypassrls nocreaterole nocreatedb noinherit",
    "sg_app":     "login   nosuperuser nobypassrls nocreaterole nocreatedb noinherit",
    "sg_worker":  "login   nosuperuser nobypassrls nocreaterole nocreatedb noinherit",
    "sg_analyst": "login   nosuperuser nobypassrls nocreaterole nocreatedb noinherit"
  }';
  role_name text;
  attributes text;
  existing pg_roles%rowtype;
begin
  for role_name, attributes in select key, value #>> '{}' from jsonb_each(wanted) loop
    select * into existing from pg_roles where rolname = role_name;
    if not found then
      begin
        execute format('create role %I %s', role_name, attributes);
      exception when duplicate_object or unique_violation then
        null;  -- another session created it first
      end;
    elsif existing.rolcanlogin <> (attributes like 'login%')
       or existing.rolsuper or existing.rolbypassrls or existing.rolinherit then
      execute format('alter role %I %s', role_name, attributes);
    end if;
  end loop;

  -- A non-superuser administrator (CREATEROLE) needs membership to act as the owners.
  if not (select rolsuper from pg_roles where rolname = current_user) then
    execute format('grant sg_owner, sg_service, sg_reporting to %I', current_user);
  end if;

  execute format('grant connect, create on database %I to sg_owner', current_database());
  execute format('grant connect on database %I to sg_app, sg_worker, sg_analyst', current_database());
end
$$;

grant usage, create on schema public to sg_owner;

-- Nothing is executable by PUBLIC unless granted by name (PostgREST's schema isolation).
alter default privileges for role sg_owner revoke execute on functions from public;
alter default privileges for role sg_service revoke execute on functions from public;
alter default privileges for role sg_reporting revoke execute on functions from public;
