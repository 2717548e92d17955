-- Render jobs as the worker sees them. pgqueuer delivers at least once, and re-delivers a
-- job whose worker has gone quiet past the heartbeat timeout even if that worker is only
-- slow (or stopped) and wakes up later. So every claim is fenced:
--
--   claim_job           bumps jobs.attempts and returns it: the claim's token. A new claim
--                       supersedes every earlier one.
--   set_job_progress,   act only for the current token (attempts = attempt) on a job
--   complete_job,       that is processing, and say false otherwise, so a worker whose
--   retry_job,          claim was superseded learns it at its next call and stops
--   fail_job            (worker/main.py), and can never finish, requeue or refund a job
--                       another worker now holds.
--
-- seen_at is the holder's last sign of life. app.sweep_stranded_jobs finds unfinished jobs
-- with no live queue entry that nobody has touched for a while, and re-enqueues them (or,
-- past the attempt limit, fails and refunds them), once per job however many sweepers run.
set local role sg_service;

-- the signatures before fencing (migrate replaces functions in place)
drop function if exists app.set_job_progress(uuid, integer);
drop function if exists app.complete_job(uuid, text);
drop function if exists app.retry_job(uuid, text);
drop function if exists app.fail_job(uuid, text);

/**
 * Marks a job processing under a new claim and returns what the renderer needs: the
 * claim's token (`attempts`, which counts every claim) and what the tier paid at creation
 * buys (frame size, watermark). Returns no row when the job is unknown or already
 * finished, so a redelivery does nothing. A job left `processing` by a worker that went
 * quiet is claimed again, and the quiet worker's token stops working.
 */
create or replace function app.claim_job(job_id uuid)
returns table (id uuid, user_id uuid, platform text, topic text, options jsonb,
               tier text, attempts integer, width integer, height integer, watermark boolean)
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
begin
  return query
    with claimed as (
      update public.jobs j
         set status = 'processing', started_at = now(), seen_at = now(), progress_percent = 0,
             attempts = j.attempts + 1
       where j.id = job_id and j.status in ('queued', 'processing')
      returning j.*
    )
    select c.id, c.user_id, c.platform, c.topic, c.options, c.tier_at_creation, c.attempts,
           (p.features ->> 'width')::integer, (p.features ->> 'height')::integer,
           coalesce((p.features ->> 'watermark')::boolean, true)
      from claimed c join public.plans p on p.tier = c.tier_at_creation;
end
$$;
grant execute on function app.claim_job(uuid) to sg_worker;

/**
 * Records render progress (0–100) for the current claim; false when `attempt` is not the
 * job's current claim or the job is not processing (the caller has lost the job).
 */
create or replace function app.set_job_progress(job_id uuid, attempt integer, percent integer)
returns boolean
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
begin
  update public.jobs j set progress_percent = least(greatest(percent, 0), 100), seen_at = now()
   where j.id = job_id and j.status = 'processing' and j.attempts = attempt;
  return found;
end
$$;
grant execute on function app.set_job_progress(uuid, integer, integer) to sg_worker;

/** Finishes the job with its video under the current claim; false for any other caller. */
create or replace function app.complete_job(job_id uuid, attempt integer, output_url text)
returns boolean
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
begin
  update public.jobs j
     set status = 'completed', progress_percent = 100, output_url = complete_job.output_url,
         error_message = null, finished_at = now(), seen_at = now()
   where j.id = job_id and j.status = 'processing' and j.attempts = attempt;
  return found;
end
$$;
grant execute on function app.complete_job(uuid, integer, text) to sg_worker;

/**
 * Puts the job back in the queue after a failed attempt that will be retried, keeping a
 * message the user may see while it takes longer (never a server detail: the worker logs
 * those). Current claim only; false otherwise.
 */
create or replace function app.retry_job(job_id uuid, attempt integer, error_message text)
returns boolean
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
begin
  update public.jobs j
     set status = 'queued', progress_percent = 0, seen_at = now(),
         error_message = left(coalesce(retry_job.error_message, 'Render failed; retrying.'), 1000)
   where j.id = job_id and j.status = 'processing' and j.attempts = attempt;
  return found;
end
$$;
grant execute on function app.retry_job(uuid, integer, text) to sg_worker;

/**
 * Fails a job for good and refunds its credit, once: true only for the call that failed
 * it. Not callable by a role: fail_job (one claim) and the sweeper (a stranded job) do.
 */
create or replace function app.fail_and_refund(job_id uuid, error_message text)
returns boolean
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
begin
  update public.jobs j
     set status = 'failed', finished_at = now(), seen_at = now(),
         error_message = left(coalesce(fail_and_refund.error_message, 'Render failed — we refunded your credit.'), 1000)
   where j.id = job_id and j.status in ('queued', 'processing');
  if not found then
    return false;
  end if;
  perform app.refund_job(job_id);
  return true;
end
$$;
revoke execute on function app.fail_and_refund(uuid, text) from public, sg_app, sg_worker;

/**
 * Fails the job for good under the current claim and refunds its credit once. True only
 * for the call that failed it; false when the caller's claim is not the current one.
 */
create or replace function app.fail_job(job_id uuid, attempt integer, error_message text)
returns boolean
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
begin
  perform 1 from public.jobs j
   where j.id = job_id and j.status = 'processing' and j.attempts = attempt
     for update;
  if not found then
    return false;
  end if;
  return app.fail_and_refund(job_id, error_message);
end
$$;
grant execute on function app.fail_job(uuid, integer, text) to sg_worker;

/**
 * The sweeper (worker schedule): every unfinished job with no live queue entry (queued,
 * or picked: pgqueuer re-delivers those itself) that no worker has touched for
 * `stale_after` is stranded, e.g. by a handler that died between its database calls.
 * Below `max_attempts` claims it goes back to the queue (one entry, under the enqueue's
 * dedupe key `render:<job>`); at the limit it fails and its credit is refunded. Each
 * stranded job is acted on once: rows are locked and skipped by concurrent sweepers, and
 * the action touches seen_at, so a sweep that started earlier no longer sees it stale.
 */
create or replace function app.sweep_stranded_jobs(stale_after interval default '10 minutes',
                                                   max_attempts integer default 3)
returns table (job_id uuid, outcome text)
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  stranded record;
begin
  if stale_after is null or stale_after < interval '0' or max_attempts is null or max_attempts < 1 then
    raise exception 'stale_after must be >= 0 and max_attempts >= 1' using errcode = 'P0422';
  end if;
  for stranded in
    select j.id, j.attempts, j.tier_at_creation
      from public.jobs j
     where j.status in ('queued', 'processing')
       and coalesce(j.seen_at, j.created_at) <= now() - stale_after
       and not exists (select 1 from public.pgqueuer q
                        where q.dedupe_key = 'render:' || j.id and q.status in ('queued', 'picked'))
     order by j.created_at
       for update of j skip locked
  loop
    job_id := stranded.id;
    if stranded.attempts >= max_attempts then
      perform app.fail_and_refund(stranded.id, null);
      outcome := 'failed';
    else
      update public.jobs j set status = 'queued', progress_percent = 0, seen_at = now() where j.id = stranded.id;
      insert into public.pgqueuer (priority, entrypoint, payload, status, dedupe_key)
      select coalesce((p.features ->> 'queue_priority')::integer, 0), 'render',
             convert_to(json_build_object('job_id', stranded.id)::text, 'UTF8'), 'queued', 'render:' || stranded.id
        from public.plans p where p.tier = stranded.tier_at_creation
      on conflict do nothing;
      outcome := 'requeued';
    end if;
    return next;
  end loop;
end
$$;
grant execute on function app.sweep_stranded_jobs(interval, integer) to sg_worker;

/** How much work is waiting and running in the render queue (for /healthz and dashboards). */
create or replace function app.queue_depth()
returns table (queued bigint, picked bigint)
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
  select count(*) filter (where q.status = 'queued'), count(*) filter (where q.status = 'picked')
    from public.pgqueuer q
$$;
grant execute on function app.queue_depth() to sg_app;
