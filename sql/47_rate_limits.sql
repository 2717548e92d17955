-- Rate limits of the /v1 API: requests per caller per fixed one-minute window, counted
-- here so every web process agrees. A caller is an API key (each key its own budget of
-- requests) or, for access tokens, the signed-in user. The limit is the plan's
-- features.rate_limit_per_minute; a plan without one is not limited.
set local role sg_owner;

select app._ensure_forced_row_security('public.rate_limit_windows');
select app._ensure_policy('public.rate_limit_windows', 'service functions reach every row', $policy$
  create policy "service functions reach every row" on public.rate_limit_windows for all to sg_service
  using (true) with check (true)
$policy$);
grant select, insert, update, delete on public.rate_limit_windows to sg_service;

set local role sg_service;

/**
 * Counts one request of a caller: the API key with SHA-256 `key_hash`, or else the user
 * `user_id` (an access token's subject), in one statement (an upsert of the minute's
 * row, so concurrent requests each count once). Returns the plan's limit, what is left
 * of it, the seconds until the window resets, and whether this request is over the
 * limit; no row when the caller is unknown (the identity check refuses it next) or its
 * plan has no limit. Called by the web process before the request's own transaction, in
 * its own, so refused and failed requests count too.
 */
create or replace function app.count_api_request(key_hash bytea, user_id uuid)
returns table (request_limit integer, remaining integer, reset_seconds integer, limited boolean)
language sql security definer
set search_path = pg_catalog, pg_temp
as $$
  with caller as (
    select case when count_api_request.key_hash is null then 'user:' || s.user_id
                else 'key:' || k.id end as subject,
           (p.features ->> 'rate_limit_per_minute')::integer as per_minute
      from public.subscriptions s
      join public.plans p on p.tier = s.tier
      left join public.api_keys k on k.key_hash = count_api_request.key_hash and k.revoked_at is null
     where case when count_api_request.key_hash is null then s.user_id = count_api_request.user_id
                else s.user_id = k.user_id end
  ), counted as (
    insert into public.rate_limit_windows as w (subject, window_start)
    select c.subject, date_trunc('minute', now()) from caller c where c.per_minute is not null
    on conflict (subject, window_start) do update set hits = w.hits + 1
    returning w.hits
  )
  select c.per_minute, greatest(c.per_minute - n.hits, 0),
         ceil(extract(epoch from date_trunc('minute', now()) + interval '1 minute' - now()))::integer,
         n.hits > c.per_minute
    from caller c cross join counted n
$$;
grant execute on function app.count_api_request(bytea, uuid) to sg_app;

/** Forgets finished windows (worker schedule); returns how many rows went. */
create or replace function app.purge_rate_limit_windows() returns integer
language sql security definer
set search_path = pg_catalog, pg_temp
as $$
  with gone as (delete from public.rate_limit_windows w
                 where w.window_start < date_trunc('minute', now()) - interval '1 minute' returning 1)
  select count(*)::integer from gone
$$;
grant execute on function app.purge_rate_limit_windows() to sg_worker;
