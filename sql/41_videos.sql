-- Videos as their owners keep them: a name of their own and deletion. Both act on the
-- caller's own jobs only (the functions run as sg_owner, which row-level security holds
-- to app.user_id like the web role). A deleted video keeps its job row: the ledger and
-- usage rows that paid for it name the job and are append-only, so deleting frees the
-- file, never the credit.
set local role sg_owner;

/**
 * Names one of the caller's videos (sg_app). The title is trimmed and must be 1 to 200
 * characters of printable text (P0422); P0404 when the caller has no such live video.
 */
create or replace function app.rename_video(job_id uuid, new_title text)
returns table (id uuid, title text)
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  uid uuid := app.require_user_id();
  cleaned text := btrim(new_title);
begin
  if cleaned is null or length(cleaned) not between 1 and 200 then
    raise exception 'title: must be 1 to 200 characters' using errcode = 'P0422';
  end if;
  if cleaned ~ '[[:cntrl:]]' then
    raise exception 'title: must be one line of printable text' using errcode = 'P0422';
  end if;
  return query
    update public.jobs j set title = cleaned
     where j.id = job_id and j.user_id = uid and j.deleted_at is null
    returning j.id, j.title;
  if not found then
    raise exception 'Video not found.' using errcode = 'P0404';
  end if;
end
$$;
grant execute on function app.rename_video(uuid, text) to sg_app;

/**
 * Deletes one of the caller's finished videos (sg_app): it leaves every list and the API,
 * and the caller removes its files (the name returned). The credit stays spent. P0404 when
 * the caller has no such live video; P0409 while it is still rendering, since the worker
 * would write its file after the delete.
 */
create or replace function app.delete_video(job_id uuid)
returns table (id uuid, had_video boolean)
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  uid uuid := app.require_user_id();
  current_status text;
begin
  -- the row lock orders a delete after a worker's completion of the same job
  select j.status into current_status from public.jobs j
   where j.id = job_id and j.user_id = uid and j.deleted_at is null
     for update;
  if not found then
    raise exception 'Video not found.' using errcode = 'P0404';
  end if;
  if current_status in ('queued', 'processing') then
    raise exception 'This video is still rendering; delete it once it has finished.' using errcode = 'P0409';
  end if;
  return query
    update public.jobs j set deleted_at = now(), output_url = null
     where j.id = job_id
    returning j.id, current_status = 'completed';
end
$$;
grant execute on function app.delete_video(uuid) to sg_app;
