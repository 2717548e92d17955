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
 * Ends every password-reset link of a user that is still outstanding, once the password
 * it was meant to replace is gone (a reset or a change): unused link tokens are revoked
 * and reset mails not yet sent are canceled. Runs with the caller's rights.
 */
create or replace function app._end_reset_links(uid uuid) returns void
language sql
set search_path = pg_catalog, pg_temp
as $$
  update public.email_tokens t set revoked_at = now()
   where t.user_id = uid and t.purpose = 'reset' and t.used_at is null and t.revoked_at is null;
  update public.email_outbox o set canceled_at = now()
   where o.user_id = uid and o.kind = 'reset' and o.sent_at is null and o.canceled_at is null;
$$;
grant execute on function app._end_reset_links(uuid) to sg_service;

/**
 * Sets the current user's password and ends every session issued before: refresh
 * tokens and browser sessions are revoked, and the bumped session_version rejects
 * outstanding access tokens; outstanding reset links end too, and a mail tells the
 * address. Returns the new session_version.
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
  perform app._end_reset_links(uid);
  perform app._queue_email(uid, 'password_changed', 'password_changed:' || uid || ':' || version);
  return version;
end
$$;
grant execute on function app.change_password(text) to sg_app;
