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
