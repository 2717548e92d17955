-- Email: verification and password-reset links, receipts and payment notices.
--
-- A mail is a row in email_outbox (unique dedupe key, so one event never mails twice)
-- plus a `send_email` pgqueuer entry, both written in the transaction that caused it.
-- Link tokens are made by the database when the worker sends the mail (two random
-- UUIDs, 244 random bits), and only their SHA-256 is kept.
set local role sg_service;

/** Queues a mail once per dedupe key (in the caller's transaction); true if queued now. */
create or replace function app._queue_email(user_id uuid, kind text, dedupe_key text, data jsonb default '{}')
returns boolean
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  queued uuid;
begin
  insert into public.email_outbox as o (user_id, kind, dedupe_key, data)
  values (user_id, kind, dedupe_key, coalesce(data, '{}'))
  on conflict on constraint email_outbox_dedupe_key_key do nothing
  returning o.id into queued;
  if queued is null then
    return false;
  end if;
  insert into public.pgqueuer (priority, entrypoint, payload, status, dedupe_key)
  values (20, 'send_email', convert_to(json_build_object('email_id', queued)::text, 'UTF8'), 'queued',
          'email:' || queued);
  return true;
end
$$;

-- app.change_password (owned by sg_owner) tells the address when the password changes
grant execute on function app._queue_email(uuid, text, text, jsonb) to sg_owner;

/**
 * Sends the current user another verification mail: P0409 when already verified,
 * P0429 after 3 resends in the last hour (the signup mail does not count) or 5
 * verification mails to the address in the last day (the signup mail counts).
 */
create or replace function app.resend_verification() returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  uid uuid := app.require_user_id();
  recent integer;
  today integer;
begin
  if (select u.is_verified from public.users u where u.id = uid) then
    raise exception 'Your email address is already verified.' using errcode = 'P0409';
  end if;
  perform 1 from public.users u where u.id = uid for update;  -- one resend decision at a time
  select count(*) filter (where o.dedupe_key not like 'verify:signup:%' and o.created_at > now() - interval '1 hour'),
         count(*)
    into recent, today
    from public.email_outbox o
   where o.user_id = uid and o.kind = 'verify' and o.created_at > now() - interval '1 day';
  if recent >= 3 then
    raise exception 'Too many verification emails; try again within the hour.' using errcode = 'P0429';
  end if;
  if today >= 5 then
    raise exception 'Too many verification emails today; try again tomorrow.' using errcode = 'P0429';
  end if;
  perform app._queue_email(uid, 'verify', 'verify:' || gen_random_uuid());
end
$$;
grant execute on function app.resend_verification() to sg_app;

/**
 * Applies the password-reset throttle (per email: 3 an hour and 5 a day; per IP: 20 an
 * hour; shared with login's table) and, for an existing active account, queues a reset
 * mail. Does the same work whether or not the account exists; the answer is only
 * retry_after (null unless throttled).
 */
create or replace function app.request_password_reset(email text, client_ip inet)
returns integer
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  normalised constant text := lower(btrim(coalesce(email, '')));
  window_start constant timestamptz := now() - interval '1 hour';
  oldest timestamptz;
  per_email integer;
  oldest_today timestamptz;
  per_email_today integer;
  per_ip integer := 0;
  attempt bigint;
  owner uuid;
begin
  perform pg_advisory_xact_lock(hashtextextended('reset-email:' || normalised, 0));
  select count(*) filter (where a.attempted_at > window_start), min(a.attempted_at) filter (where a.attempted_at > window_start),
         count(*), min(a.attempted_at)
    into per_email, oldest, per_email_today, oldest_today
    from public.login_attempts a
   where a.kind = 'reset' and lower(a.email) = normalised and a.attempted_at > now() - interval '1 day';
  if client_ip is not null then
    select count(*) into per_ip from public.login_attempts a
     where a.kind = 'reset' and a.client_ip = client_ip and a.attempted_at > window_start;
  end if;
  if per_email >= 3 then
    return greatest(1, ceil(extract(epoch from oldest + interval '1 hour' - now()))::integer);
  end if;
  if per_email_today >= 5 then
    return greatest(1, ceil(extract(epoch from oldest_today + interval '1 day' - now()))::integer);
  end if;
  if per_ip >= 20 then
    return 3600;
  end if;
  insert into public.login_attempts as a (email, client_ip, kind)
  values (normalised, client_ip, 'reset') returning a.id into attempt;
  select u.id into owner from public.users u where lower(u.email) = normalised and u.is_active;
  if owner is not null then
    perform app._queue_email(owner, 'reset', 'reset:' || attempt);
  end if;
  return null;
end
$$;
grant execute on function app.request_password_reset(text, inet) to sg_app;

/**
 * The worker's first step for a queued mail: who it goes to and what it says, with a
 * fresh single-use link token for verify/reset mails (48 h / 1 h). No row once sent,
 * canceled or failed. full_name is given only for a confirmed address: until then it
 * is whatever whoever signed up with that address typed, and stays out of the mail.
 */
create or replace function app.claim_email(email_id uuid)
returns table (kind text, address text, full_name text, data jsonb, token text)
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  mail public.email_outbox%rowtype;
  new_token text;
begin
  update public.email_outbox o set attempts = o.attempts + 1
   where o.id = email_id and o.sent_at is null and o.canceled_at is null and o.failed_at is null
  returning o.* into mail;
  if not found then
    return;
  end if;
  if mail.kind in ('verify', 'reset') then
    new_token := replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '');
    insert into public.email_tokens (user_id, purpose, token_hash, expires_at)
    values (mail.user_id, mail.kind, sha256(convert_to(new_token, 'UTF8')),
            now() + case mail.kind when 'verify' then interval '48 hours' else interval '1 hour' end);
  end if;
  return query select mail.kind, u.email, case when u.is_verified then u.full_name end, mail.data, new_token
                 from public.users u where u.id = mail.user_id;
end
$$;
grant execute on function app.claim_email(uuid) to sg_worker;

/** Records the outcome of a send: sent (error null) or the error, for the retry. */
create or replace function app.finish_email(email_id uuid, error text default null) returns void
language sql security definer
set search_path = pg_catalog, pg_temp
as $$
  update public.email_outbox o
     set sent_at = case when finish_email.error is null then now() end, last_error = finish_email.error
   where o.id = email_id and o.sent_at is null
$$;
grant execute on function app.finish_email(uuid, text) to sg_worker;

/**
 * Records that a mail could not be built (a bug or bad data, not a network problem):
 * it is never retried, and last_error says why.
 */
create or replace function app.fail_email(email_id uuid, error text) returns void
language sql security definer
set search_path = pg_catalog, pg_temp
as $$
  update public.email_outbox o set failed_at = now(), last_error = fail_email.error
   where o.id = email_id and o.sent_at is null
$$;
grant execute on function app.fail_email(uuid, text) to sg_worker;

/** Checks and uses up a link token; P0422 with a message saying what is wrong with it. */
create or replace function app._use_email_token(token_hash bytea, purpose text) returns uuid
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  link public.email_tokens%rowtype;
begin
  select * into link from public.email_tokens t where t.token_hash = token_hash and t.purpose = purpose for update;
  if not found then
    raise exception 'This link is not valid. Check that you copied all of it.' using errcode = 'P0422';
  end if;
  if link.used_at is not null then
    raise exception 'This link has already been used.' using errcode = 'P0422';
  end if;
  if link.revoked_at is not null then
    raise exception 'This link is no longer valid: the password was changed after it was sent.'
      using errcode = 'P0422';
  end if;
  if link.expires_at <= now() then
    raise exception 'This link has expired. Ask for a new one.' using errcode = 'P0422';
  end if;
  update public.email_tokens t set used_at = now() where t.id = link.id;
  return link.user_id;
end
$$;

/** Verifies the address a verification link was sent to; the link works once. */
create or replace function app.verify_email(token_hash bytea) returns uuid
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  uid uuid := app._use_email_token(token_hash, 'verify');
begin
  update public.users u set is_verified = true, updated_at = now() where u.id = uid;
  return uid;
end
$$;
grant execute on function app.verify_email(bytea) to sg_app;

/**
 * Sets a new password through a reset link (once, within the hour) and ends every
 * session: refresh tokens and browser sessions revoked, access tokens outdated, and
 * the user's other reset links revoked (or, not sent yet, canceled). A mail tells the
 * address.
 */
create or replace function app.reset_password(token_hash bytea, new_password_hash text) returns uuid
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  uid uuid;
begin
  if new_password_hash is null or new_password_hash not like '$argon2id$%' then
    raise exception 'new_password_hash must be an argon2id hash' using errcode = 'P0422';
  end if;
  uid := app._use_email_token(token_hash, 'reset');
  update public.users u
     set password_hash = new_password_hash, session_version = u.session_version + 1, updated_at = now()
   where u.id = uid;
  perform app._end_sessions(uid);
  perform app._end_reset_links(uid);
  perform app._queue_email(uid, 'password_changed', 'password_changed:' || uid || ':' || gen_random_uuid());
  return uid;
end
$$;
grant execute on function app.reset_password(bytea, text) to sg_app;
