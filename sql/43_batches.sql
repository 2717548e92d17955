-- Batch generation: up to 50 videos in one request, all or nothing. Each item is bought
-- with app.spend_credit_and_create_job, exactly as a single video is (so every rule of a
-- spend, present and future, applies per item), inside one transaction: a batch is
-- either entirely bought and queued or not at all.
set local role sg_owner;

select app._ensure_forced_row_security('public.batches');
select app._ensure_policy('public.batches', 'users reach only their own rows', $policy$
  create policy "users reach only their own rows" on public.batches for all to sg_app, sg_owner
  using (user_id = (select app.current_user_id()))
  with check (user_id = (select app.current_user_id()))
$policy$);
select app._ensure_policy('public.batches', 'service functions reach every row', $policy$
  create policy "service functions reach every row" on public.batches for all to sg_service
  using (true) with check (true)
$policy$);
grant select on public.batches to sg_app;
grant select, insert, update, delete on public.batches to sg_service;

/**
 * Buys a batch for the current user: `items` is a JSON array of 1 to 50 objects
 * {platform, topic, options}, already validated by the caller (each spend checks them
 * again). The balance is locked and checked first, so a batch the balance cannot cover
 * is refused whole with P0402 naming how many credits it needs (nothing is spent); then
 * each item is one call of app.spend_credit_and_create_job, in order. Any refusal rolls
 * the whole batch back. Returns the batch id, the job ids in item order, and the balance
 * left.
 */
create or replace function app.create_batch(items jsonb)
returns table (batch_id uuid, job_ids uuid[], credits_remaining integer)
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  uid uuid := app.require_user_id();
  wanted integer;
  balance integer;
  new_batch uuid;
  item jsonb;
  item_index integer := 0;
  created record;
  job_list uuid[] := array[]::uuid[];
  left_after integer;
begin
  if items is null or jsonb_typeof(items) <> 'array' or jsonb_array_length(items) not between 1 and 50 then
    raise exception 'items must be a list of 1 to 50 videos' using errcode = 'P0422';
  end if;
  wanted := jsonb_array_length(items);
  -- held until commit: the spends below take from this balance and nothing else can
  select s.credits_remaining into balance from public.subscriptions s where s.user_id = uid for update;
  if balance is null or balance < wanted then
    raise exception 'Insufficient credits: this batch needs % credits and you have %. Nothing was spent; '
                    'upgrade at /pricing or send fewer items.', wanted, coalesce(balance, 0)
      using errcode = 'P0402', detail = wanted::text;
  end if;

  insert into public.batches (user_id, item_count) values (uid, wanted) returning id into new_batch;
  for item in select value from jsonb_array_elements(items) loop
    if jsonb_typeof(item) <> 'object' then
      raise exception 'items[%]: must be an object', item_index using errcode = 'P0422';
    end if;
    select * into created
      from app.spend_credit_and_create_job(item ->> 'platform', item ->> 'topic', coalesce(item -> 'options', '{}'));
    update public.jobs j set batch_id = new_batch, batch_position = item_index where j.id = created.job_id;
    job_list := job_list || created.job_id;
    left_after := created.credits_remaining;
    item_index := item_index + 1;
  end loop;
  return query select new_batch, job_list, left_after;
end
$$;
grant execute on function app.create_batch(jsonb) to sg_app;

/**
 * One of the current user's batches and its jobs in item order, deleted videos left out
 * (P0404 for a batch that does not exist or is someone else's: row-level security hides it).
 */
create or replace function app.batch_jobs(batch_id uuid)
returns table (batch_created_at timestamptz, id uuid, platform text, topic text, title text, options jsonb,
               status text,
               progress_percent integer, output_url text, error_message text, note text,
               created_at timestamptz, started_at timestamptz, finished_at timestamptz)
language plpgsql stable
as $$
#variable_conflict use_variable
declare
  created timestamptz;
begin
  select b.created_at into created from public.batches b where b.id = batch_id;
  if not found then
    raise exception 'Batch not found.' using errcode = 'P0404';
  end if;
  return query
    select created, j.id, j.platform, j.topic, j.title, j.options, j.status, j.progress_percent, j.output_url,
           j.error_message, j.note, j.created_at, j.started_at, j.finished_at
      from public.jobs j
     where j.batch_id = batch_jobs.batch_id and j.deleted_at is null
     order by j.batch_position;
end
$$;
grant execute on function app.batch_jobs(uuid) to sg_app;

-- When a batch is done: the last of its jobs to finish emits `batch.completed` to the
-- owner's webhooks (sql/46_webhooks.sql), once per batch. Cross-tenant (the worker finishes
-- jobs acting for nobody), so it runs as sg_service.
set local role sg_service;

/**
 * Trigger (jobs, deferred to commit, after a job of a batch finished): once no job of the
 * batch is queued or rendering, emits `batch.completed` (dedupe key batch.completed:<batch>)
 * with the batch's outcome. The batch row is locked first, so when its last two jobs finish
 * at once, the transaction that commits second sees the other's job finished and emits.
 */
create or replace function app._batch_on_job_finished() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  outcome record;
begin
  perform 1 from public.batches b where b.id = new.batch_id for update;
  select count(*) filter (where j.status in ('queued', 'processing')) as unfinished,
         count(*) filter (where j.status = 'completed') as completed,
         count(*) filter (where j.status = 'failed') as failed,
         count(*) as total,
         jsonb_agg(j.id order by j.batch_position) as job_ids
    into outcome
    from public.jobs j
   where j.batch_id = new.batch_id;
  if outcome.unfinished > 0 then
    return null;
  end if;
  perform app._emit_webhook(new.user_id, 'batch.completed', 'batch.completed:' || new.batch_id,
                            jsonb_build_object(
                              'batch_id', new.batch_id,
                              'status', case when outcome.failed = 0 then 'completed'
                                             when outcome.completed = 0 then 'failed'
                                             else 'partially_failed' end,
                              'total', outcome.total,
                              'counts', jsonb_build_object('completed', outcome.completed, 'failed', outcome.failed),
                              'job_ids', outcome.job_ids));
  return null;
end
$$;
-- whoever creates a trigger needs EXECUTE on its function (sg_owner, just below)
grant execute on function app._batch_on_job_finished() to sg_owner;

set local role sg_owner;

-- (re)created only when it differs, as pg_get_triggerdef spells it: no lock on jobs otherwise
select app._ensure_trigger('public.jobs', 'batch_on_job_finished',
  'CREATE CONSTRAINT TRIGGER batch_on_job_finished AFTER UPDATE OF status ON public.jobs DEFERRABLE INITIALLY '
  'DEFERRED FOR EACH ROW WHEN (((new.batch_id IS NOT NULL) AND (new.status = ANY (ARRAY[''completed''::text, '
  '''failed''::text])) AND (old.status IS DISTINCT FROM new.status))) EXECUTE FUNCTION app._batch_on_job_finished()');
