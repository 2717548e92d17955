-- The analysts' schema: read-only views over every tenant, for SQL clients (psql, BI tools).
--
-- Why the views are not security_invoker: analysts (sg_analyst) must not read base tables
-- at all, and tenant tables only show a user their own rows. So the views run as their
-- owner, sg_reporting, a NOLOGIN role whose only privileges are SELECT on the columns the
-- views use (sql/20_tenancy.sql: never an email address, a password/key/token hash or a
-- Stripe payload) plus a SELECT-only RLS policy "reporting reads every row". Stripe
-- figures come through app.stripe_event_facts, a view owned by sg_service that extracts
-- the few fields reports need from each stored event; sg_reporting never sees a payload.
-- Like `app`, the schema holds no data; a view is made again only when its text changes
-- (app._ensure_view), so a release does not wait for the reports being read. Days are UTC days.
--
-- Definitions (docs/reporting.md says the same for analysts):
--   conversion   a user's first paid subscription: the earliest applied checkout of each
--                user, counted once, on its day, for the plan it bought. Re-subscribing,
--                upgrading or a second checkout the same day is not another conversion.
--   credit flow  ledger movements per UTC day of the transaction's start (created_at).
--                app.roll_up_reporting re-sums the last two finished days on every run,
--                and the view reads those days live from the ledger, so a transaction that
--                commits after its day ended is counted, in the view at once and in the
--                rolled-up table at the next run; a day older than that is final.
set local role sg_service;

/**
 * The fields of stored Stripe events that reports use, and nothing else of the payload.
 * Owned by sg_service (which reads stripe_events); only sg_reporting may select from it.
 * Malformed numbers become null rather than failing every report.
 */
select app._ensure_view('app.stripe_event_facts', $view$create or replace view app.stripe_event_facts as
  select e.id as event_id, e.type, e.received_at, e.processed_at is not null as processed,
         case when e.payload ->> 'created' ~ '^[0-9]{1,11}$'
              then to_timestamp((e.payload ->> 'created')::bigint) end as created,
         e.payload #>> '{data,object,id}' as object_id,
         case when e.payload #>> '{data,object,amount_paid}' ~ '^[0-9]{1,15}$'
              then (e.payload #>> '{data,object,amount_paid}')::bigint end as amount_paid,
         e.payload #>> '{data,object,metadata,user_id}' as user_ref,
         e.payload #>> '{data,object,metadata,tier}' as tier
    from public.stripe_events e$view$);
revoke all on app.stripe_event_facts from public;
grant select on app.stripe_event_facts to sg_reporting;

set local role sg_owner;
grant usage on schema app to sg_reporting;

-- never dropped: a view is made again only when its text changes (app._ensure_view), so a
-- release that leaves it alone does not wait for the analysts reading it
create schema if not exists reporting;
revoke all on schema reporting from public;
grant usage, create on schema reporting to sg_reporting;
grant usage on schema reporting to sg_analyst;

set local role sg_reporting;

/** New accounts per day. */
select app._ensure_view('reporting.daily_signups', $view$create view reporting.daily_signups as
  select (u.created_at at time zone 'UTC')::date as day, count(*)::integer as signups
    from public.users u
   group by 1$view$);

/**
 * Paid conversions per day and plan: each user's first paid subscription (earliest applied
 * checkout), counted once, on its day, for the plan it bought.
 */
select app._ensure_view('reporting.paid_conversions', $view$create view reporting.paid_conversions as
  select first.day, first.tier, count(*)::integer as conversions
    from (select distinct on (f.user_ref) f.user_ref, (f.created at time zone 'UTC')::date as day, f.tier
            from app.stripe_event_facts f
           where f.type = 'checkout.session.completed' and f.processed
             and f.user_ref is not null and f.created is not null
           order by f.user_ref, f.created, f.event_id) as first
   group by 1, 2$view$);

/** Monthly recurring revenue by plan, as of today (subscriptions in good standing or retrying). */
select app._ensure_view('reporting.mrr', $view$create view reporting.mrr as
  select (now() at time zone 'UTC')::date as day, s.tier, count(*)::integer as subscribers,
         sum(p.price_cents)::bigint as mrr_cents
    from public.subscriptions s join public.plans p on p.tier = s.tier
   where p.price_cents > 0 and s.status in ('active', 'trialing', 'past_due')
   group by s.tier$view$);

/** Money collected per month: paid invoices, each counted once however many events named it. */
select app._ensure_view('reporting.revenue', $view$create view reporting.revenue as
  select date_trunc('month', invoice.paid_at at time zone 'UTC')::date as month,
         sum(invoice.amount_paid)::bigint as revenue_cents
    from (select distinct on (f.object_id) f.amount_paid, f.created as paid_at
            from app.stripe_event_facts f
           where f.type in ('invoice.paid', 'invoice.payment_succeeded') and f.object_id is not null
           order by f.object_id, f.received_at) as invoice
   group by 1$view$);

/**
 * Credits moved per day and reason (grants positive, spending and expiry negative): the
 * days app.roll_up_reporting has settled (older than the two it re-sums on every run),
 * plus the ledger itself from there on, so a late-committing transaction is counted at once.
 */
select app._ensure_view('reporting.credit_flow', $view$create view reporting.credit_flow as
  with rollup as (
    select r.complete_before - interval '2 days' as settled_before
      from public.reporting_rollups r where r.name = 'credit_flow'
  )
  select flow.day, flow.reason, sum(flow.credits)::bigint as credits
    from (select d.day, d.reason, d.credits
            from public.credit_flow_days d, rollup
           where d.day < (rollup.settled_before at time zone 'UTC')::date
          union all
          select (l.created_at at time zone 'UTC')::date, l.reason, l.delta
            from public.credit_ledger l, rollup
           where l.created_at >= rollup.settled_before) as flow
   group by 1, 2$view$);

/** Render outcomes per day and platform, and how long a successful render took. */
select app._ensure_view('reporting.job_outcomes', $view$create view reporting.job_outcomes as
  select (j.created_at at time zone 'UTC')::date as day, j.platform,
         count(*) filter (where j.status = 'completed')::integer as completed,
         count(*) filter (where j.status = 'failed')::integer as failed,
         round(avg(extract(epoch from j.finished_at - j.started_at)) filter (where j.status = 'completed'), 2)
           as avg_render_seconds
    from public.jobs j
   group by 1, 2$view$);

/**
 * One row per user: plan, balance, output and recency (no contact details).
 * Driven by subscriptions (one row per user) with everything else in per-row
 * subqueries: Postgres evaluates such costly output columns after ORDER BY + LIMIT and
 * skips the ones a query does not ask for, so "top 100 by last_active" sorts one table
 * and looks up 100 users, and "average credits by tier" reads one table.
 */
select app._ensure_view('reporting.user_summary', $view$create view reporting.user_summary as
  select s.user_id, s.tier,
         (select u.created_at from public.users u where u.id = s.user_id) as signed_up,
         s.credits_remaining,
         (select count(*) from public.jobs j where j.user_id = s.user_id and j.status = 'completed')::integer
           as videos_made,
         s.last_active_at as last_active
    from public.subscriptions s$view$);

grant select on all tables in schema reporting to sg_analyst;

-- The roll-up is a cross-tenant write, so its function belongs to sg_service.
set local role sg_service;

/**
 * Sums the ledger's finished UTC days into credit_flow_days and moves the watermark, so
 * reporting.credit_flow reads only the last few days from the ledger itself. Every run also
 * re-sums the two finished days before the watermark: the ledger stamps a row with its
 * transaction's start, so a transaction still open when its day was summed is counted by
 * the next run (and by the view meanwhile). A day counts as finished ten minutes after it
 * ends. Called daily by the worker (worker/main.py); running it again, or from two workers
 * at once, changes nothing. `as_of` (never later than now) is the moment it runs as.
 * Returns the watermark.
 */
create or replace function app.roll_up_reporting(as_of timestamptz default now()) returns timestamptz
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  resum_window constant interval := interval '2 days';
  done_before timestamptz;
  new_before timestamptz;
  resum_from timestamptz;
begin
  select r.complete_before into done_before
    from public.reporting_rollups r where r.name = 'credit_flow' for update;
  new_before := greatest(done_before,
    date_trunc('day', (least(coalesce(as_of, now()), now()) - interval '10 minutes') at time zone 'UTC') at time zone 'UTC');
  if new_before = '-infinity' then
    return new_before;
  end if;
  resum_from := least(done_before, new_before - resum_window);
  insert into public.credit_flow_days as d (day, reason, credits)
  select (l.created_at at time zone 'UTC')::date, l.reason, sum(l.delta)
    from public.credit_ledger l
   where l.created_at >= resum_from and l.created_at < new_before
   group by 1, 2
  on conflict (day, reason) do update set credits = excluded.credits;
  update public.reporting_rollups set complete_before = new_before where name = 'credit_flow';
  return new_before;
end
$$;
grant execute on function app.roll_up_reporting(timestamptz) to sg_worker;
