-- The `app` schema: every function the web process and the worker may call.
--
-- Errors raised on purpose carry SQLSTATEs of class P0 that the web layer maps to HTTP:
--   P0401 not signed in, P0402 out of credits, P0403 forbidden, P0404 not found,
--   P0409 conflict, P0422 invalid input, P0429 throttled.
--
-- The schema holds no data, only functions and types, so migrate rebuilds it from these
-- files every time (in one transaction): what is here is exactly what exists.
set local role sg_owner;

drop schema if exists app cascade;
create schema app;
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
