-- Render jobs as the worker sees them. Every function here is a no-op when repeated,
-- because pgqueuer delivers at least once: a job may be claimed again after a worker died.
set local role sg_service;

/**
 * Marks a job processing and returns what the renderer needs, including what the tier
 * paid at creation buys (frame size, watermark); returns no row when the job is unknown
 * or already finished (completed/failed), so a redelivery does nothing. A job left
 * `processing` by a dead worker can be claimed again; attempts counts every claim.
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
         set status = 'processing', started_at = now(), progress_percent = 0, attempts = j.attempts + 1
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

/** Records render progress (0–100) of a processing job; true if it was processing. */
create or replace function app.set_job_progress(job_id uuid, percent integer)
returns boolean
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
begin
  update public.jobs j set progress_percent = least(greatest(percent, 0), 100)
   where j.id = job_id and j.status = 'processing';
  return found;
end
$$;
grant execute on function app.set_job_progress(uuid, integer) to sg_worker;

/** Finishes a processing job with its video; true only for the call that finished it. */
create or replace function app.complete_job(job_id uuid, output_url text)
returns boolean
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
begin
  update public.jobs j
     set status = 'completed', progress_percent = 100, output_url = complete_job.output_url,
         error_message = null, finished_at = now()
   where j.id = job_id and j.status = 'processing';
  return found;
end
$$;
grant execute on function app.complete_job(uuid, text) to sg_worker;

/**
 * Puts a processing job back in the queue after a failed attempt that will be retried,
 * keeping the error so the user can see why it is taking longer. True if it was processing.
 */
create or replace function app.retry_job(job_id uuid, error_message text)
returns boolean
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
begin
  update public.jobs j
     set status = 'queued', progress_percent = 0,
         error_message = left(coalesce(retry_job.error_message, 'Render failed; retrying.'), 1000)
   where j.id = job_id and j.status = 'processing';
  return found;
end
$$;
grant execute on function app.retry_job(uuid, text) to sg_worker;

/**
 * Fails a job for good and refunds its credit, once: true only for the call that
 * failed it. A job already completed or failed is left as it is.
 */
create or replace function app.fail_job(job_id uuid, error_message text)
returns boolean
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
begin
  update public.jobs j
     set status = 'failed', error_message = left(coalesce(fail_job.error_message, 'Render failed.'), 1000),
         finished_at = now()
   where j.id = job_id and j.status in ('queued', 'processing');
  if not found then
    return false;
  end if;
  perform app.refund_job(job_id);
  return true;
end
$$;
grant execute on function app.fail_job(uuid, text) to sg_worker;

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
