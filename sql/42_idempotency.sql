-- Idempotency-Key on the API's POSTs, with Stripe's semantics:
--
--   first request with a key      carried out; its 2xx answer kept with the key for 24 h
--   same key, same request        the kept answer, carried out no second time
--   same key, another request     refused (P0422)
--   same key while the first runs refused (P0409)
--
-- Two ways to hold a key while the request runs (web/api/__init__.py picks per operation):
--
--   in the work's transaction     (creating videos, batches, keys) begin_idempotent_request
--                                 runs first in the request's own transaction, then the work
--                                 (the spend, the jobs), then finish_idempotent_request, then
--                                 one commit: the key and the work commit together or not at
--                                 all. The uncommitted row makes a concurrent retry with the
--                                 key wait on the primary key for up to `wait`: when the first
--                                 commits it gets the kept answer, when the first rolls back
--                                 it is carried out itself, and past `wait` it gets P0409.
--   committed first (hold)        (operations that call Stripe or must commit a failure, such
--                                 as a wrong second-factor code) the row is committed at once
--                                 with no answer, marking the request in flight; the answer is
--                                 kept when it succeeds, and the row removed when it fails. A
--                                 row left in flight for 10 minutes (a crashed process) no
--                                 longer blocks the key.
--
-- Only successful answers are kept: a refused request changed nothing, so its retry asks
-- again (and is answered by what is true then).
set local role sg_owner;

select app._ensure_forced_row_security('public.idempotency_keys');
select app._ensure_policy('public.idempotency_keys', 'users reach only their own rows', $policy$
  create policy "users reach only their own rows" on public.idempotency_keys for all to sg_app, sg_owner
  using (user_id = (select app.current_user_id()))
  with check (user_id = (select app.current_user_id()))
$policy$);
select app._ensure_policy('public.idempotency_keys', 'service functions reach every row', $policy$
  create policy "service functions reach every row" on public.idempotency_keys for all to sg_service
  using (true) with check (true)
$policy$);
-- the web process reaches kept answers through the functions below only
grant select, delete on public.idempotency_keys to sg_service;

-- in-flight rows older than this were left by a process that died
create or replace function app.idempotency_abandoned_after() returns interval
language sql immutable
as $$ select interval '10 minutes' $$;

/**
 * Starts (or replays) an idempotent request of the current user. Called by the web
 * process after the identity check: in the transaction that will do the work, or in a
 * transaction of its own that commits the in-flight mark at once (held). One row:
 *   replay = false   the key is new (or its answer expired): carry the request out, then
 *                    app.finish_idempotent_request (or, held, app.abandon_idempotent_request
 *                    when it fails);
 *   replay = true    the answer kept for this key (status, body, headers); body null when
 *                    the answer carried a secret that is shown only once.
 * P0422 when the key was used for a different request (method, path or body hash);
 * P0409 when the request holding the key is still running; 55P03 (lock_not_available)
 * after waiting `wait` for one that has not committed yet.
 */
create or replace function app.begin_idempotent_request(key text, method text, path text, request_hash bytea,
                                                        wait interval default '10 seconds')
returns table (replay boolean, status integer, response_body text, response_headers jsonb)
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  uid uuid := app.require_user_id();
  previous_timeout text := current_setting('lock_timeout');
  claimed boolean;
  kept public.idempotency_keys%rowtype;
begin
  if key is null or length(key) not between 1 and 255 then
    raise exception 'Idempotency-Key must be 1 to 255 characters' using errcode = 'P0422';
  end if;
  if wait is null or wait < interval '0' or wait > interval '60 seconds' then
    raise exception 'wait must be 0 to 60 seconds' using errcode = 'P0422';
  end if;
  -- a concurrent first request holding the key (uncommitted) makes the insert wait; past
  -- `wait` it fails with lock_not_available (55P03), which the web process answers 409
  perform set_config('lock_timeout', greatest(1, (extract(epoch from wait) * 1000)::integer)::text, true);
  -- an expired answer, or an in-flight mark its process abandoned, no longer counts (the
  -- sweep may not have run yet)
  delete from public.idempotency_keys k
   where k.user_id = uid and k.key = begin_idempotent_request.key
     and (k.expires_at <= now()
          or (k.status is null and k.created_at <= now() - app.idempotency_abandoned_after()));
  insert into public.idempotency_keys as k (user_id, key, method, path, request_hash)
  values (uid, key, upper(method), path, request_hash)
  on conflict on constraint idempotency_keys_pkey do nothing
  returning true into claimed;
  perform set_config('lock_timeout', previous_timeout, true);

  if claimed then
    return query select false, null::integer, null::text, null::jsonb;
    return;
  end if;
  select * into kept from public.idempotency_keys k where k.user_id = uid and k.key = begin_idempotent_request.key;
  if kept.method <> upper(method) or kept.path <> path or kept.request_hash <> request_hash then
    raise exception 'This Idempotency-Key was already used for a different request (% % with another body). '
                    'Use a new key for a new request.', kept.method, kept.path
      using errcode = 'P0422';
  end if;
  if kept.status is null then
    raise exception 'A request with this Idempotency-Key is still being processed. Retry it later.'
      using errcode = 'P0409';
  end if;
  return query select true, kept.status, kept.response_body, kept.response_headers;
end
$$;
grant execute on function app.begin_idempotent_request(text, text, text, bytea, interval) to sg_app;

/**
 * Keeps the answer of the request begun with `key` (a 2xx status, its JSON body or null
 * when it carried a secret, and the headers a retry must see again). Called by the web
 * process in the same transaction, just before it commits. P0404 if the key was not begun
 * in this transaction's user.
 */
create or replace function app.finish_idempotent_request(key text, status integer, response_body text,
                                                         response_headers jsonb default '{}')
returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
begin
  if status is null or status not between 200 and 299 then
    raise exception 'only successful answers are kept' using errcode = 'P0422';
  end if;
  update public.idempotency_keys k
     set status = finish_idempotent_request.status, response_body = finish_idempotent_request.response_body,
         response_headers = coalesce(finish_idempotent_request.response_headers, '{}')
   where k.user_id = app.require_user_id() and k.key = finish_idempotent_request.key;
  if not found then
    raise exception 'no idempotent request with this key' using errcode = 'P0404';
  end if;
end
$$;
grant execute on function app.finish_idempotent_request(text, integer, text, jsonb) to sg_app;

/**
 * Gives up a held key whose request failed (it changed nothing that needs remembering),
 * so a retry with the key is carried out. Only a key still in flight is removed.
 */
create or replace function app.abandon_idempotent_request(key text) returns void
language sql security definer
set search_path = pg_catalog, pg_temp
as $$
  delete from public.idempotency_keys k
   where k.user_id = app.require_user_id() and k.key = abandon_idempotent_request.key and k.status is null
$$;
grant execute on function app.abandon_idempotent_request(text) to sg_app;

set local role sg_service;

/**
 * Forgets kept answers whose 24 hours are over (worker schedule); returns how many. A
 * key past its expiry is treated as new by begin_idempotent_request even before this runs.
 */
create or replace function app.purge_idempotency_keys() returns integer
language sql security definer
set search_path = pg_catalog, pg_temp
as $$
  with gone as (delete from public.idempotency_keys k where k.expires_at <= now() returning 1)
  select count(*)::integer from gone
$$;
grant execute on function app.purge_idempotency_keys() to sg_worker;
