-- Credits: the append-only ledger and every function that moves a credit.
--
-- Invariant: for every user, subscriptions.credits_remaining = sum(credit_ledger.delta).
-- Each function below writes the ledger row and the cached balance in one transaction;
-- the ledger's unique idempotency_key makes every movement happen at most once.
set local role sg_owner;

/**
 * Trigger: the ledger is history, so UPDATE, DELETE and TRUNCATE are refused for
 * every role, its owner and superusers included.
 */
create or replace function app.refuse_ledger_change() returns trigger
language plpgsql
as $$
begin
  raise exception 'credit_ledger is append-only: % is not allowed', tg_op
    using errcode = 'P0403', hint = 'Record a correcting movement instead.';
end
$$;

-- (re)created only when they differ: an unchanged trigger takes no lock on the ledger
select app._ensure_trigger('public.credit_ledger', 'credit_ledger_append_only',
  'CREATE TRIGGER credit_ledger_append_only BEFORE DELETE OR UPDATE ON public.credit_ledger '
  'FOR EACH ROW EXECUTE FUNCTION app.refuse_ledger_change()');
select app._ensure_trigger('public.credit_ledger', 'credit_ledger_no_truncate',
  'CREATE TRIGGER credit_ledger_no_truncate BEFORE TRUNCATE ON public.credit_ledger '
  'FOR EACH STATEMENT EXECUTE FUNCTION app.refuse_ledger_change()');

/**
 * The current user's plan and balance. Called by the web process; RLS limits it
 * to the caller's own subscription.
 */
create or replace function app.credit_balance()
returns table (tier text, status text, credits_total integer, credits_used integer,
               credits_remaining integer, renews_at timestamptz)
language sql stable
as $$
  select s.tier, s.status, s.credits_total,
         greatest(s.credits_total - s.credits_remaining, 0),
         s.credits_remaining, s.current_period_end
    from public.subscriptions s
   where s.user_id = app.require_user_id()
$$;
grant execute on function app.credit_balance() to sg_app;

/**
 * The current user's billable actions over the last `days` days (1–365), newest first.
 * Raises P0422 for any other number of days.
 */
create or replace function app.usage(days integer)
returns table (action text, credits integer, job_id uuid, created_at timestamptz)
language plpgsql stable
as $$
begin
  if days is null or days not between 1 and 365 then
    raise exception 'days must be a whole number from 1 to 365' using errcode = 'P0422';
  end if;
  return query
    select u.action, u.credits_used, u.job_id, u.created_at
      from public.usage_logs u
     where u.user_id = app.require_user_id()
       and u.created_at >= now() - make_interval(days => days)
     order by u.created_at desc, u.id desc;
end
$$;
grant execute on function app.usage(integer) to sg_app;

/**
 * Takes one credit from the current user and creates + enqueues a render job, all in
 * the caller's transaction: the job row, the `render` ledger row, the usage row and the
 * pgqueuer entry commit together or not at all. The credit is taken by a single
 * UPDATE that cannot go below zero, so concurrent calls never overspend.
 * Raises P0402 (changing nothing) when the balance is zero, P0403 when an unconfirmed
 * address has already made its one video, P0422 on bad input.
 * SECURITY DEFINER so the web role needs no write grants; it runs as sg_owner,
 * which RLS still confines to the calling user.
 */
create or replace function app.spend_credit_and_create_job(platform text, topic text, options jsonb default '{}')
returns table (job_id uuid, credits_remaining integer)
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
  uid uuid := app.require_user_id();
  paid_tier text;
  left_after integer;
  new_job uuid;
  priority integer;
begin
  if platform is null or platform not in ('youtube_shorts', 'tiktok', 'instagram_reels') then
    raise exception 'platform must be one of youtube_shorts, tiktok, instagram_reels' using errcode = 'P0422';
  end if;
  if topic is null or length(btrim(topic)) not between 3 and 200 then
    raise exception 'topic must be 3 to 200 characters' using errcode = 'P0422';
  end if;
  if options is null or jsonb_typeof(options) <> 'object' then
    raise exception 'options must be a JSON object' using errcode = 'P0422';
  end if;

  update public.subscriptions s
     set credits_remaining = s.credits_remaining - 1, updated_at = now(), last_active_at = now()
   where s.user_id = uid and s.credits_remaining >= 1
  returning s.credits_remaining, s.tier into left_after, paid_tier;
  if not found then
    raise exception 'Insufficient credits. Please upgrade your plan.' using errcode = 'P0402';
  end if;
  -- An unconfirmed address may spend one credit (one video made: a refunded one does not
  -- count), so signup credits cannot be farmed with throwaway addresses. The UPDATE above
  -- holds the balance row, so a concurrent spend of this user counts this one's video.
  if not (select u.is_verified from public.users u where u.id = uid) then
    if exists (select 1 from public.credit_ledger l
                where l.user_id = uid and l.reason = 'render'
                  and not exists (select 1 from public.credit_ledger r where r.idempotency_key = 'refund:' || l.job_id))
    then
      raise exception 'Confirm your email address to use the rest of your credits.' using errcode = 'P0403';
    end if;
  end if;

  insert into public.jobs (user_id, platform, topic, options, tier_at_creation)
  values (uid, platform, btrim(topic), options, paid_tier)
  returning id into new_job;

  insert into public.credit_ledger (user_id, delta, reason, idempotency_key, job_id)
  values (uid, -1, 'render', 'render:' || new_job, new_job);

  insert into public.usage_logs (user_id, action, credits_used, job_id)
  values (uid, 'video_generation', 1, new_job);

  select coalesce((p.features ->> 'queue_priority')::integer, 0) into priority
    from public.plans p where p.tier = paid_tier;
  -- no NOTIFY: workers poll (migrations/0008 says why)
  insert into public.pgqueuer (priority, entrypoint, payload, status, dedupe_key)
  values (priority, 'render', convert_to(json_build_object('job_id', new_job)::text, 'UTF8'),
          'queued', 'render:' || new_job);

  return query select new_job, left_after;
end
$$;
grant execute on function app.spend_credit_and_create_job(text, text, jsonb) to sg_app;

-- Cross-tenant movements below run as sg_service.
set local role sg_service;

-- the signature before operators' notes (migrate replaces functions in place)
drop function if exists app.grant_credits(uuid, integer, text, text, text, timestamptz);

/**
 * The one way credits are added (signup, plan grants and upgrades, renewals, operators). A repeated
 * idempotency_key is a no-op that reports granted = false and the current balance.
 * `note` says why, for operator grants (credit_ledger.note). Called only inside other
 * sg_service functions and by operators as sg_service: no runtime role may execute it,
 * since it would let a request or a compromised worker mint credits.
 */
create or replace function app.grant_credits(user_id uuid, amount integer, reason text, idempotency_key text,
                                             stripe_event_id text default null, period_start timestamptz default null,
                                             note text default null)
returns table (granted boolean, credits_remaining integer)
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  movement uuid;
  balance integer;
begin
  if amount is null or amount not between 1 and 1000000 then
    raise exception 'amount must be from 1 to 1000000' using errcode = 'P0422';
  end if;
  if reason is null or reason not in ('signup_grant', 'renewal', 'plan_grant', 'upgrade_grant', 'admin_grant',
                                      'referral_grant') then
    raise exception 'reason must be one of signup_grant, renewal, plan_grant, upgrade_grant, admin_grant, referral_grant'
      using errcode = 'P0422';
  end if;
  if idempotency_key is null or length(idempotency_key) not between 1 and 200 then
    raise exception 'idempotency_key must be 1 to 200 characters' using errcode = 'P0422';
  end if;
  if note is not null and length(note) not between 1 and 500 then
    raise exception 'note must be 1 to 500 characters' using errcode = 'P0422';
  end if;

  insert into public.credit_ledger as l (user_id, delta, reason, idempotency_key, stripe_event_id, period_start, note)
  values (user_id, amount, reason, idempotency_key, stripe_event_id, period_start, note)
  on conflict on constraint credit_ledger_idempotency_key_key do nothing
  returning l.id into movement;

  if movement is null then
    return query select false, s.credits_remaining from public.subscriptions s where s.user_id = grant_credits.user_id;
    return;
  end if;

  update public.subscriptions s
     set credits_remaining = s.credits_remaining + amount,
         credits_total = s.credits_total + amount,
         updated_at = now()
   where s.user_id = grant_credits.user_id
  returning s.credits_remaining into balance;
  if not found then
    raise exception 'no subscription for user %', user_id using errcode = 'P0404';
  end if;
  return query select true, balance;
end
$$;
revoke execute on function app.grant_credits(uuid, integer, text, text, text, timestamptz, text)
  from public, sg_app, sg_worker;

/**
 * An operator's grant (flask grant-credits), keyed by the operator's key alone: the
 * ledger key is `admin:` || key, a namespace no other movement writes, so a repeated key
 * is a no-op whatever the amount or note, and two different keys never meet. A key that
 * would not fit the ledger's 200 characters is refused (P0422), never shortened.
 * Returns the movement the key stands for, new (granted) or earlier (not granted), so
 * the operator sees what a repeated key already did. Operators only: no runtime role.
 */
create or replace function app.operator_grant(user_id uuid, amount integer, key text, note text)
returns table (granted boolean, granted_to uuid, delta integer, ledger_note text, created_at timestamptz,
               credits_remaining integer)
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  ledger_key text;
  outcome record;
begin
  if key is null or length(key) not between 1 and 200 - length('admin:') then
    raise exception 'key must be 1 to % characters', 200 - length('admin:') using errcode = 'P0422';
  end if;
  if note is null or length(btrim(note)) = 0 then
    raise exception 'reason must not be empty' using errcode = 'P0422';
  end if;
  ledger_key := 'admin:' || key;
  select * into outcome from app.grant_credits(user_id, amount, 'admin_grant', ledger_key, note => note);
  return query
    select outcome.granted, l.user_id, l.delta, l.note, l.created_at, s.credits_remaining
      from public.credit_ledger l join public.subscriptions s on s.user_id = l.user_id
     where l.idempotency_key = ledger_key;
end
$$;
revoke execute on function app.operator_grant(uuid, integer, text, text) from public, sg_app, sg_worker;

/**
 * Gives back the credit a failed job took, exactly once however often or however
 * concurrently it is called (the refund's idempotency key is unique per job).
 * Returns true only for the call that refunded. P0404 for an unknown job,
 * P0409 for a job that has not failed.
 */
create or replace function app.refund_job(job_id uuid)
returns boolean
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  job public.jobs%rowtype;
  debit integer;
  movement uuid;
begin
  select * into job from public.jobs j where j.id = job_id;
  if not found then
    raise exception 'no job %', job_id using errcode = 'P0404';
  end if;
  if job.status <> 'failed' then
    raise exception 'job % has status %; only failed jobs are refunded', job_id, job.status using errcode = 'P0409';
  end if;
  select -l.delta into debit from public.credit_ledger l where l.idempotency_key = 'render:' || job_id;
  if debit is null then
    return false;  -- nothing was paid for this job
  end if;

  insert into public.credit_ledger as l (user_id, delta, reason, idempotency_key, job_id)
  values (job.user_id, debit, 'refund', 'refund:' || job_id, job_id)
  on conflict on constraint credit_ledger_idempotency_key_key do nothing
  returning l.id into movement;
  if movement is null then
    return false;
  end if;

  update public.subscriptions s
     set credits_remaining = s.credits_remaining + debit, updated_at = now()
   where s.user_id = job.user_id;
  insert into public.usage_logs (user_id, action, credits_used, job_id)
  values (job.user_id, 'refund', -debit, job_id);
  return true;
end
$$;
-- fail_job (sg_service) refunds; the worker never calls this directly
revoke execute on function app.refund_job(uuid) from public, sg_app, sg_worker;
