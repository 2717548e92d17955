-- Changing a signed-in user's password (resets through an emailed link are in
-- 60_email.sql). Only the functions here and the sign-in read password hashes.
set local role sg_owner;

/** The current user's argon2 hash, for re-checking the password before changing it. */
create or replace function app.current_password_hash() returns text
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$ select u.password_hash from public.users u where u.id = app.require_user_id() $$;
grant execute on function app.current_password_hash() to sg_app;

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
