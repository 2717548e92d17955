-- Two-factor sign-in: optional TOTP (RFC 6238, 30-second steps) with ten single-use
-- recovery codes. The web process computes and compares codes (pyotp) and hands the
-- database the time step a code matched, or a recovery code's SHA-256; the database keeps
-- each step and each recovery code to one use, counts wrong codes like wrong passwords,
-- and finishes the sign-in. Secrets, recovery-code hashes and challenges are readable by
-- these functions only.
--
-- A sign-in of an account with two-factor on: app.login_attempt (says two_factor), the
-- password checks out, app.start_two_factor_login stores a challenge (5 minutes, 5
-- codes), then app.finish_two_factor_login with a code. The login attempt keeps counting
-- as a failure until then, and each wrong code adds one.
set local role sg_service;

/**
 * After the password checked out for an account with two-factor on: stores a challenge
 * (by its token's SHA-256) that app.finish_two_factor_login finishes with a code.
 * Returns its lifetime in seconds. P0401 unless the attempt is a fresh one of that account.
 */
create or replace function app.start_two_factor_login(attempt_id bigint, user_id uuid, session_version integer,
                                                      new_password_hash text, new_device_hash bytea,
                                                      token_hash bytea)
returns integer
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
begin
  if new_password_hash is not null and new_password_hash not like '$argon2id$%' then
    raise exception 'new_password_hash must be an argon2id hash' using errcode = 'P0422';
  end if;
  perform 1 from public.login_attempts a
   where a.id = attempt_id and a.kind = 'login' and a.user_id = user_id
     and a.attempted_at > now() - interval '5 minutes';
  if not found or not exists (select 1 from public.two_factor f where f.user_id = user_id and f.enabled_at is not null)
  then
    raise exception 'No such login attempt.' using errcode = 'P0401';
  end if;
  insert into public.login_challenges (user_id, token_hash, attempt_id, session_version, new_password_hash,
                                       new_device_hash)
  values (user_id, token_hash, attempt_id, session_version, new_password_hash, new_device_hash);
  return 300;
end
$$;
grant execute on function app.start_two_factor_login(bigint, uuid, integer, text, bytea, bytea) to sg_app;

/** The TOTP secret a live challenge's code is checked against; no row for a dead challenge. */
create or replace function app.two_factor_challenge(token_hash bytea) returns table (secret text, last_step bigint)
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
  select f.secret, f.last_step
    from public.login_challenges c join public.two_factor f on f.user_id = c.user_id and f.enabled_at is not null
   where c.token_hash = two_factor_challenge.token_hash and c.used_at is null and c.expires_at > now()
     and c.failures < 5
$$;
grant execute on function app.two_factor_challenge(bytea) to sg_app;

/**
 * Uses up a second factor of `uid`: a TOTP time step newer than the last one accepted, or
 * an unused recovery code (by its SHA-256). False, changing nothing, when neither is good.
 */
create or replace function app._use_second_factor(uid uuid, totp_step bigint, recovery_hash bytea) returns boolean
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  if totp_step is not null then
    update public.two_factor f set last_step = totp_step
     where f.user_id = uid and (f.last_step is null or f.last_step < totp_step);
    return found;
  end if;
  if recovery_hash is not null then
    update public.recovery_codes r set used_at = now()
     where r.user_id = uid and r.code_hash = recovery_hash and r.used_at is null;
    return found;
  end if;
  return false;
end
$$;

/**
 * Second step of a two-factor sign-in: with a good second factor (see
 * app._use_second_factor) the challenge is used up and the sign-in finished as
 * app._finish_login does, returning the account. Otherwise no row, and the wrong code is
 * recorded: the challenge dies after 5, and each counts as a failed sign-in of the
 * account from the attempt's client (the password throttle's counters).
 */
create or replace function app.finish_two_factor_login(token_hash bytea, totp_step bigint, recovery_hash bytea)
returns setof app.account
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  challenge public.login_challenges%rowtype;
begin
  select * into challenge from public.login_challenges c
   where c.token_hash = token_hash and c.used_at is null and c.expires_at > now() and c.failures < 5
     for update;
  if not found then
    return;
  end if;
  if not app._use_second_factor(challenge.user_id, totp_step, recovery_hash) then
    update public.login_challenges c set failures = c.failures + 1 where c.id = challenge.id;
    insert into public.login_attempts (email, client_ip, user_id, device_id)
    select a.email, a.client_ip, a.user_id, a.device_id from public.login_attempts a where a.id = challenge.attempt_id;
    return;
  end if;
  update public.login_challenges c set used_at = now() where c.id = challenge.id;
  return next app._finish_login(challenge.attempt_id, challenge.user_id, challenge.session_version,
                                challenge.new_password_hash, challenge.new_device_hash);
end
$$;
grant execute on function app.finish_two_factor_login(bytea, bigint, bytea) to sg_app;

-- The signed-in user's own enrolment.

/** The current user's TOTP secret, whether it is on, and the last step accepted (no row: never set up). */
create or replace function app.my_two_factor() returns table (secret text, enabled boolean, last_step bigint)
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
  select f.secret, f.enabled_at is not null, f.last_step from public.two_factor f where f.user_id = app.require_user_id()
$$;
grant execute on function app.my_two_factor() to sg_app;

/**
 * Starts (or restarts) the current user's enrolment with a new secret; it takes effect
 * once app.enable_two_factor confirms a code from it. P0409 when two-factor is already on.
 */
create or replace function app.begin_two_factor(secret text) returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  uid uuid := app.require_user_id();
begin
  if secret is null or secret !~ '^[A-Z2-7]{32}$' then
    raise exception 'secret must be 32 base32 characters' using errcode = 'P0422';
  end if;
  insert into public.two_factor as f (user_id, secret) values (uid, secret)
  on conflict (user_id) do update set secret = excluded.secret, created_at = now(), last_step = null
   where f.enabled_at is null;
  if not found then
    raise exception 'Two-factor sign-in is already on.' using errcode = 'P0409';
  end if;
end
$$;
grant execute on function app.begin_two_factor(text) to sg_app;

/**
 * Turns two-factor sign-in on for the current user: the pending secret's code matched at
 * `totp_step` (the caller checked the code and the password); the ten recovery codes
 * (their SHA-256s) replace any earlier ones. A mail tells the address.
 */
create or replace function app.enable_two_factor(totp_step bigint, recovery_hashes bytea[]) returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  uid uuid := app.require_user_id();
begin
  if cardinality(recovery_hashes) is distinct from 10 then
    raise exception 'ten recovery codes are needed' using errcode = 'P0422';
  end if;
  update public.two_factor f set enabled_at = now(), last_step = totp_step
   where f.user_id = uid and f.enabled_at is null;
  if not found then
    raise exception 'Start the set-up first (or two-factor sign-in is already on).' using errcode = 'P0409';
  end if;
  delete from public.recovery_codes r where r.user_id = uid;
  insert into public.recovery_codes (user_id, code_hash) select uid, h from unnest(recovery_hashes) h;
  perform app._queue_email(uid, 'two_factor_enabled', 'two_factor_enabled:' || gen_random_uuid());
end
$$;
grant execute on function app.enable_two_factor(bigint, bytea[]) to sg_app;

/**
 * Turns two-factor sign-in off for the current user, given a second factor (a new TOTP
 * step or an unused recovery code; the caller checked the password). P0422 when the code
 * is not good, P0409 when it is not on. A mail tells the address.
 */
create or replace function app.disable_two_factor(totp_step bigint, recovery_hash bytea) returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  uid uuid := app.require_user_id();
begin
  perform 1 from public.two_factor f where f.user_id = uid and f.enabled_at is not null for update;
  if not found then
    raise exception 'Two-factor sign-in is not on.' using errcode = 'P0409';
  end if;
  if not app._use_second_factor(uid, totp_step, recovery_hash) then
    raise exception 'code: That code is not correct.' using errcode = 'P0422';
  end if;
  delete from public.recovery_codes r where r.user_id = uid;
  delete from public.two_factor f where f.user_id = uid;
  update public.login_challenges c set used_at = now() where c.user_id = uid and c.used_at is null;
  perform app._queue_email(uid, 'two_factor_disabled', 'two_factor_disabled:' || gen_random_uuid());
end
$$;
grant execute on function app.disable_two_factor(bigint, bytea) to sg_app;
