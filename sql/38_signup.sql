-- Signup: a new user with the free plan and its signup grant of credits.
--
-- Password hashing happens in the web process (argon2); only hashes reach the database.
set local role sg_service;

-- The signature from before signups were counted per client network (see
-- sql/35_sessions.sql for why it is dropped by name).
drop function if exists app.signup(text, text, text);

/**
 * Creates a user with the free plan and its signup grant of credits, in the caller's
 * transaction, and makes the new user current for the rest of it (so the caller can
 * store its first tokens). Email uniqueness ignores letter case; a duplicate raises
 * P0409 whatever the race. With `client_ip`, the signup counts against the client's
 * network and is refused with P0429 over its limit (app._count_signup). Runs as
 * sg_service because the new user is nobody's tenant yet.
 */
create or replace function app.signup(email text, password_hash text, full_name text default null,
                                      client_ip inet default null)
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
  -- the name appears in mail headers: one line of printable text (users_full_name_one_printable_line)
  if full_name ~ '[\u0001-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]' then
    raise exception 'full_name must be one line of printable text' using errcode = 'P0422';
  end if;

  perform app._count_signup(email, client_ip);

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
grant execute on function app.signup(text, text, text, inet) to sg_app;
