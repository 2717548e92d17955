-- The `app` schema: every function the web process and the worker may call.
--
-- Errors raised on purpose carry SQLSTATEs of class P0 that the web layer maps to HTTP:
--   P0401 not signed in, P0402 out of credits, P0403 forbidden, P0404 not found,
--   P0409 conflict, P0422 invalid input, P0429 throttled.
--
-- The schema holds no data, only functions and types. It is never dropped: dropping it
-- would drop every policy that calls app.current_user_id(), which locks every tenant table
-- (ACCESS EXCLUSIVE) until the release commits. `flask migrate` replaces functions in
-- place, re-applies only the files that changed (and those after them), and drops the
-- functions a changed file no longer defines (web/migrate.py), so what these files
-- define is exactly what exists.
set local role sg_owner;

create schema if not exists app;
grant usage on schema app to sg_app, sg_worker, sg_service;
-- sg_service creates (and so owns) its own SECURITY DEFINER functions here.
grant create on schema app to sg_service;

/**
 * The user this transaction acts for, from set_config('app.user_id', …, true),
 * or null when none is set. Policies call it; anyone with a tenant grant may.
 */
create or replace function app.current_user_id() returns uuid
language sql stable parallel safe
as $$ select nullif(current_setting('app.user_id', true), '')::uuid $$;
grant execute on function app.current_user_id() to sg_app, sg_service, sg_worker;

/**
 * The current user's id, or P0401 when no user is set: the first line of
 * every user-facing function.
 */
create or replace function app.require_user_id() returns uuid
language plpgsql stable
as $$
declare
  uid uuid := app.current_user_id();
begin
  if uid is null then
    raise exception 'Not signed in.' using errcode = 'P0401';
  end if;
  return uid;
end
$$;
grant execute on function app.require_user_id() to sg_app, sg_service;

/**
 * Makes `definition` (a CREATE [CONSTRAINT] TRIGGER statement for `trigger_name` on
 * `table_name`) true, (re)creating the trigger only when it is missing or was created from
 * other text (the md5 of its text is kept as the trigger's comment): replacing a trigger
 * locks its table (SHARE ROW EXCLUSIVE, which waits for writers; a constraint trigger,
 * which cannot be replaced, is dropped first: ACCESS EXCLUSIVE), so an unchanged trigger
 * is left alone. For the sql/ files, run by the table's owner.
 */
create or replace function app._ensure_trigger(table_name regclass, trigger_name name, definition text) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
-- `definition` is DDL the sql/ files pass in, never user input: it is run as written
-- @plpgsql_check_options: security_warnings = false
begin
  if (select obj_description(t.oid, 'pg_trigger') from pg_trigger t
       where t.tgrelid = table_name and t.tgname = trigger_name) is distinct from md5(definition) then
    if definition ~* '^\s*create\s+constraint\s+trigger' then
      execute format('drop trigger if exists %I on %s', trigger_name, table_name);
      execute definition;
    else
      execute regexp_replace(definition, '^\s*create\s+trigger', 'create or replace trigger', 'i');
    end if;
    execute format('comment on trigger %I on %s is %L', trigger_name, table_name, md5(definition));
  end if;
end
$$;

/**
 * Makes `definition` (a CREATE POLICY statement for `policy_name` on `table_name`) true,
 * dropping and creating the policy only when it is missing or was created from other text
 * (the md5 of its text is kept as the policy's comment): both take ACCESS EXCLUSIVE on the
 * table, so an unchanged policy is left alone. For the sql/ files, run by the table's owner.
 */
create or replace function app._ensure_policy(table_name regclass, policy_name name, definition text) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
-- `definition` is DDL the sql/ files pass in, never user input: it is run as written
-- @plpgsql_check_options: security_warnings = false
begin
  if (select obj_description(p.oid, 'pg_policy') from pg_policy p
       where p.polrelid = table_name and p.polname = policy_name) is distinct from md5(definition) then
    execute format('drop policy if exists %I on %s', policy_name, table_name);
    execute definition;
    execute format('comment on policy %I on %s is %L', policy_name, table_name, md5(definition));
  end if;
end
$$;

/**
 * Makes `definition` (a CREATE VIEW statement for `view_name`, schema-qualified) true,
 * dropping and creating the view only when it is missing or was created from other text
 * (the md5 of its text is kept as the view's comment): replacing a view takes ACCESS
 * EXCLUSIVE on it, which waits for every query reading it (an analyst's report), so an
 * unchanged view is left alone. A dependent view dropped with it is made again by its own
 * call further on. Notes the name in `sg.views_defined` for `flask migrate`, which drops
 * the views a changed file no longer defines. For the sql/ files, run by the view's owner.
 */
create or replace function app._ensure_view(view_name text, definition text) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
-- `definition` is DDL the sql/ files pass in, never user input: it is run as written
-- @plpgsql_check_options: security_warnings = false
begin
  perform set_config('sg.views_defined',
                     concat_ws(',', nullif(current_setting('sg.views_defined', true), ''), view_name), true);
  if to_regclass(view_name) is not null
     and obj_description(to_regclass(view_name), 'pg_class') is not distinct from md5(definition) then
    return;
  end if;
  execute format('drop view if exists %s cascade', view_name);
  execute definition;
  execute format('comment on view %s is %L', view_name, md5(definition));
end
$$;
grant execute on function app._ensure_view(text, text) to sg_service, sg_reporting;

/** Row-level security enabled and forced on `table_name`, altering the table only if it is not yet. */
create or replace function app._ensure_forced_row_security(table_name regclass) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  if not (select c.relrowsecurity from pg_class c where c.oid = table_name) then
    execute format('alter table %s enable row level security', table_name);
  end if;
  if not (select c.relforcerowsecurity from pg_class c where c.oid = table_name) then
    execute format('alter table %s force row level security', table_name);
  end if;
end
$$;
