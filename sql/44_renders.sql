-- What the worker records about a render besides its status (sql/40_jobs.sql).
set local role sg_service;

/**
 * Leaves a note for the user on a job that is still being rendered (what the video
 * could not do, e.g. narrate a language no voice speaks). Repeating it replaces the
 * note; true if the job was processing. Called by the worker.
 */
create or replace function app.note_job(job_id uuid, note text)
returns boolean
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
begin
  update public.jobs j set note = left(note_job.note, 1000)
   where j.id = job_id and j.status = 'processing';
  return found;
end
$$;
grant execute on function app.note_job(uuid, text) to sg_worker;

/**
 * app.claim_job, plus what else the plan paid at the job's creation buys the render:
 * the closing card (free), the customer's branding as it is now (logo and colours, only
 * when the plan sells `branding`) and white-label (no Story Genius name, `white_label`).
 * Same claim, same token, same empty answer for an unknown or finished job. Called by
 * the worker.
 */
create or replace function app.claim_render(job_id uuid)
returns table (id uuid, user_id uuid, platform text, topic text, options jsonb, tier text, attempts integer,
               width integer, height integer, watermark boolean, closing_card boolean, white_label boolean,
               logo_png bytea, primary_colour text, accent_colour text)
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
begin
  return query
    select c.id, c.user_id, c.platform, c.topic, c.options, c.tier, c.attempts, c.width, c.height, c.watermark,
           coalesce((p.features ->> 'closing_card')::boolean, c.watermark),
           coalesce((p.features ->> 'white_label')::boolean, false),
           b.logo_png, b.primary_colour, b.accent_colour
      from app.claim_job(job_id) c
      join public.plans p on p.tier = c.tier
      left join public.brands b
        on b.user_id = c.user_id and coalesce((p.features ->> 'branding')::boolean, false);
end
$$;
grant execute on function app.claim_render(uuid) to sg_worker;
