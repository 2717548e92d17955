-- Credits: the append-only ledger and every function that moves a credit.
--
-- Invariant: for every user, subscriptions.credits_remaining = sum(credit_ledger.delta)
-- = sum of the remainders of their buckets (31_buckets.sql: which bucket a spend takes,
-- expiry, rollover). Each function below writes the ledger row, the bucket and the cached
-- balance in one transaction; the ledger's unique idempotency_key makes every movement
-- happen at most once.
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
 * UPDATE that cannot go below zero, so concurrent calls never overspend; that UPDATE
 * holds the account's balance row, so the bucket drawn next (soonest expiry first, then
 * oldest; never an expired one) is read after every earlier spend of this account has
 * committed. Returns the spendable balance left.
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
  drawn uuid;
  new_job uuid;
  priority integer;
  notice_below numeric;
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
  -- the balance above may still hold credits whose expiry the worker has not recorded:
  -- they are never drawn, and running out of the others is running out
  update public.credit_buckets b
     set remaining = b.remaining - 1
   where b.id = (select c.id from public.credit_buckets c
                  where c.user_id = uid and c.expired_at is null and c.remaining > 0
                    and (c.expires_at > now() or c.expires_at is null)
                  order by c.expires_at, c.created_at, c.id
                  limit 1)
  returning b.id into drawn;
  if drawn is null then
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

  insert into public.credit_ledger (user_id, delta, reason, idempotency_key, job_id, bucket_id)
  values (uid, -1, 'render', 'render:' || new_job, new_job, drawn);

  insert into public.usage_logs (user_id, action, credits_used, job_id)
  values (uid, 'video_generation', 1, new_job);

  -- (and what would make this spend set something off: see app._after_spend)
  select coalesce((p.features ->> 'queue_priority')::integer, 0),
         greatest(p.credits * 0.2, coalesce((select a.threshold from public.auto_top_up a
                                               where a.user_id = uid and a.enabled), 0))
    into priority, notice_below
    from public.plans p where p.tier = paid_tier;
  -- no NOTIFY: workers poll (migrations/0008 says why)
  insert into public.pgqueuer (priority, entrypoint, payload, status, dedupe_key)
  values (priority, 'render', convert_to(json_build_object('job_id', new_job)::text, 'UTF8'),
          'queued', 'render:' || new_job);

  left_after := left_after - app._unswept_expired(uid);
  -- the low-balance mail and auto top-up, in this transaction (54_packs.sql)
  if left_after < notice_below then
    perform app._after_spend(uid, left_after);
  end if;
  return query select new_job, left_after;
end
$$;
grant execute on function app.spend_credit_and_create_job(text, text, jsonb) to sg_app;

-- Cross-tenant movements below run as sg_service.
set local role sg_service;

/**
 * The one way credits are added (signup, plan grants and upgrades, renewals, referrals,
 * operators): opens a bucket and records the grant, once per idempotency_key (a repeated
 * key is a no-op that reports granted = false and the current balance). Expiry: as given
 * by `expires_at`; when not given, signup credits expire with the account's current
 * period, plan, upgrade and renewal credits likewise, operator and referral credits never.
 * `plan_tier` marks plan credits of a paid plan, which roll over once at a renewal.
 * `note` says why, for operator grants (credit_ledger.note). Called only inside other
 * sg_service functions and by operators as sg_service: no runtime role may execute it,
 * since it would let a request or a compromised worker mint credits.
 */
create or replace function app.grant_credits(user_id uuid, amount integer, reason text, idempotency_key text,
                                             stripe_event_id text default null, period_start timestamptz default null,
                                             note text default null, expires_at timestamptz default null,
                                             plan_tier text default null)
returns table (granted boolean, credits_remaining integer)
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  sub public.subscriptions%rowtype;
  bucket uuid;
  expiry timestamptz := expires_at;
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
  -- (a plan grant delivered after its period ended is granted expired, as the rules say)
  if expiry is not null and expiry <= now() and reason in ('admin_grant', 'referral_grant') then
    raise exception 'expires_at must be in the future' using errcode = 'P0422';
  end if;

  perform app._lock_balance(user_id);
  select * into sub from public.subscriptions s where s.user_id = grant_credits.user_id;
  if expiry is null and reason in ('signup_grant', 'plan_grant', 'upgrade_grant', 'renewal') then
    expiry := greatest(sub.current_period_end, now() + interval '1 hour');
  end if;
  if plan_tier is null and reason in ('plan_grant', 'upgrade_grant', 'renewal') then
    plan_tier := coalesce(sub.subscribed_tier, sub.tier);
  end if;
  bucket := app._open_bucket(user_id, amount, reason, idempotency_key,
                             case reason when 'signup_grant' then 'signup' when 'plan_grant' then 'plan'
                                         when 'upgrade_grant' then 'upgrade' when 'renewal' then 'renewal'
                                         when 'referral_grant' then 'referral' else 'operator' end,
                             expiry, plan_tier, stripe_event_id, period_start, note);
  if bucket is not null and reason in ('plan_grant', 'upgrade_grant') then
    perform app._settle_late_grant(user_id, expiry);
  end if;
  return query select bucket is not null, s.credits_remaining
                 from public.subscriptions s where s.user_id = grant_credits.user_id;
end
$$;
revoke execute on function app.grant_credits(uuid, integer, text, text, text, timestamptz, text, timestamptz, text)
  from public, sg_app, sg_worker;

/**
 * An operator's grant (flask grant-credits), keyed by the operator's key alone: the
 * ledger key is `admin:` || key, a namespace no other movement writes, so a repeated key
 * is a no-op whatever the amount or note, and two different keys never meet. A key that
 * would not fit the ledger's 200 characters is refused (P0422), never shortened. The
 * credits expire at `expires_at`, or never.
 * Returns the movement the key stands for, new (granted) or earlier (not granted), so
 * the operator sees what a repeated key already did. Operators only: no runtime role.
 */
create or replace function app.operator_grant(user_id uuid, amount integer, key text, note text,
                                              expires_at timestamptz default null)
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
  select * into outcome from app.grant_credits(user_id, amount, 'admin_grant', ledger_key, note => note,
                                               expires_at => expires_at);
  return query
    select outcome.granted, l.user_id, l.delta, l.note, l.created_at, s.credits_remaining
      from public.credit_ledger l join public.subscriptions s on s.user_id = l.user_id
     where l.idempotency_key = ledger_key;
end
$$;
revoke execute on function app.operator_grant(uuid, integer, text, text, timestamptz) from public, sg_app, sg_worker;

/**
 * Gives back the credit a failed job took, exactly once however often or however
 * concurrently it is called (the refund's idempotency key is unique per job), into the
 * bucket it came from. A bucket that has expired meanwhile takes the credit back and
 * expires it at once (`expiry:refund:<job>`): a refund never makes an expired credit
 * spendable; nor one of a purchase that was refunded or disputed (`clawback:refund:<job>`). A job paid before buckets existed is refunded into a `refund` bucket that
 * expires with the account's current period.
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
  from_bucket public.credit_buckets%rowtype;
  paid_from uuid;
begin
  select * into job from public.jobs j where j.id = job_id;
  if not found then
    raise exception 'no job %', job_id using errcode = 'P0404';
  end if;
  if job.status <> 'failed' then
    raise exception 'job % has status %; only failed jobs are refunded', job_id, job.status using errcode = 'P0409';
  end if;
  select -l.delta, l.bucket_id into debit, paid_from from public.credit_ledger l where l.idempotency_key = 'render:' || job_id;
  if debit is null then
    return false;  -- nothing was paid for this job
  end if;
  perform app._lock_balance(job.user_id);
  if exists (select 1 from public.credit_ledger l where l.idempotency_key = 'refund:' || job_id) then
    return false;
  end if;

  if paid_from is null then
    perform app._open_bucket(job.user_id, debit, 'refund', 'refund:' || job_id, 'refund',
                             (select greatest(s.current_period_end, now() + interval '1 hour')
                                from public.subscriptions s where s.user_id = job.user_id),
                             job_id => job_id);
    -- (_open_bucket counts a grant as credits made available; a refund is not one)
    update public.subscriptions s set credits_total = s.credits_total - debit where s.user_id = job.user_id;
  else
    select * into from_bucket from public.credit_buckets b where b.id = paid_from;
    insert into public.credit_ledger (user_id, delta, reason, idempotency_key, job_id, bucket_id)
    values (job.user_id, debit, 'refund', 'refund:' || job_id, job_id, paid_from);
    if from_bucket.expired_at is not null or from_bucket.expires_at <= now() then
      insert into public.credit_ledger (user_id, delta, reason, idempotency_key, job_id, bucket_id)
      values (job.user_id, -debit, 'expiry', 'expiry:refund:' || job_id, job_id, paid_from);
      update public.credit_buckets b set expired = b.expired + debit where b.id = paid_from;
    elsif from_bucket.clawed_back > 0 then
      -- its purchase was refunded or disputed: the credit goes back to the seller, not the user
      insert into public.credit_ledger (user_id, delta, reason, idempotency_key, job_id, bucket_id)
      values (job.user_id, -debit, 'clawback', 'clawback:refund:' || job_id, job_id, paid_from);
      update public.credit_buckets b set clawed_back = b.clawed_back + debit where b.id = paid_from;
    else
      update public.credit_buckets b set remaining = b.remaining + debit where b.id = paid_from;
      update public.subscriptions s
         set credits_remaining = s.credits_remaining + debit, updated_at = now()
       where s.user_id = job.user_id;
    end if;
  end if;
  insert into public.usage_logs (user_id, action, credits_used, job_id)
  values (job.user_id, 'refund', -debit, job_id);
  return true;
end
$$;
-- fail_job (sg_service) refunds; the worker never calls this directly
revoke execute on function app.refund_job(uuid) from public, sg_app, sg_worker;
