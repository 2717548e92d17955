-- The analysts' schema: read-only views over every tenant, for SQL clients (psql, BI tools).
--
-- Why the views are not security_invoker: analysts (sg_analyst) must not read base tables
-- at all, and tenant tables only show a user their own rows. So the views run as their
-- owner, sg_reporting, a NOLOGIN role whose only privileges are SELECT on the tables
-- below plus a SELECT-only RLS policy "reporting reads every row". What leaves the
-- database is therefore exactly what these view definitions select: aggregates and ids,
-- never an email address, a password/key/token hash, or a raw Stripe payload.
-- Like `app`, the schema holds no data and is rebuilt on every migrate. Days are UTC days.
set local role sg_owner;

drop schema if exists reporting cascade;
create schema reporting;
revoke all on schema reporting from public;
grant usage, create on schema reporting to sg_reporting;
grant usage on schema reporting to sg_analyst;

set local role sg_reporting;

/** New accounts per day. */
create view reporting.daily_signups as
  select (u.created_at at time zone 'UTC')::date as day, count(*)::integer as signups
    from public.users u
   group by 1;

/** Completed Stripe checkouts per day and plan bought (a paid conversion each). */
create view reporting.paid_conversions as
  select (to_timestamp((e.payload ->> 'created')::bigint) at time zone 'UTC')::date as day,
         e.payload #>> '{data,object,metadata,tier}' as tier,
         count(distinct e.payload #>> '{data,object,metadata,user_id}')::integer as conversions
    from public.stripe_events e
   where e.type = 'checkout.session.completed' and e.processed_at is not null
   group by 1, 2;

/** Monthly recurring revenue by plan, as of today (subscriptions in good standing or retrying). */
create view reporting.mrr as
  select (now() at time zone 'UTC')::date as day, s.tier, count(*)::integer as subscribers,
         sum(p.price_cents)::bigint as mrr_cents
    from public.subscriptions s join public.plans p on p.tier = s.tier
   where p.price_cents > 0 and s.status in ('active', 'trialing', 'past_due')
   group by s.tier;

/** Money collected per month: paid invoices, each counted once however many events named it. */
create view reporting.revenue as
  select date_trunc('month', to_timestamp(invoice.paid_at) at time zone 'UTC')::date as month,
         sum(invoice.amount_paid)::bigint as revenue_cents
    from (select distinct on (e.payload #>> '{data,object,id}')
                 (e.payload #>> '{data,object,amount_paid}')::bigint as amount_paid,
                 (e.payload ->> 'created')::bigint as paid_at
            from public.stripe_events e
           where e.type in ('invoice.paid', 'invoice.payment_succeeded')
           order by e.payload #>> '{data,object,id}', e.received_at) as invoice
   group by 1;

/**
 * Credits moved per day and reason (grants positive, spending and expiry negative):
 * the finished days app.roll_up_reporting has summed, plus the ledger since then.
 */
create view reporting.credit_flow as
  select flow.day, flow.reason, sum(flow.credits)::bigint as credits
    from (select d.day, d.reason, d.credits
            from public.credit_flow_days d
          union all
          select (l.created_at at time zone 'UTC')::date, l.reason, l.delta
            from public.credit_ledger l
           where l.created_at >= (select r.complete_before from public.reporting_rollups r
                                   where r.name = 'credit_flow')) as flow
   group by 1, 2;

/** Render outcomes per day and platform, and how long a successful render took. */
create view reporting.job_outcomes as
  select (j.created_at at time zone 'UTC')::date as day, j.platform,
         count(*) filter (where j.status = 'completed')::integer as completed,
         count(*) filter (where j.status = 'failed')::integer as failed,
         round(avg(extract(epoch from j.finished_at - j.started_at)) filter (where j.status = 'completed'), 2)
           as avg_render_seconds
    from public.jobs j
   group by 1, 2;

/**
 * One row per user: plan, balance, output and recency (no contact details).
 * Driven by subscriptions (one row per user) with everything else in per-row
 * subqueries: Postgres evaluates such costly output columns after ORDER BY + LIMIT and
 * skips the ones a query does not ask for, so "top 100 by last_active" sorts one table
 * and looks up 100 users, and "average credits by tier" reads one table.
 */
create view reporting.user_summary as
  select s.user_id, s.tier,
         (select u.created_at from public.users u where u.id = s.user_id) as signed_up,
         s.credits_remaining,
         (select count(*) from public.jobs j where j.user_id = s.user_id and j.status = 'completed')::integer
           as videos_made,
         s.last_active_at as last_active
    from public.subscriptions s;

grant select on all tables in schema reporting to sg_analyst;

-- The roll-up is a cross-tenant write, so its function belongs to sg_service.
set local role sg_service;

/**
 * Sums the ledger's finished UTC days into credit_flow_days and moves the watermark, so
 * reporting.credit_flow only aggregates the days since. Called daily by the worker
 * (worker/main.py); running it again, or from two workers at once, changes nothing.
 * A day counts as finished ten minutes after it ends, so a transaction that began on it
 * has committed before its rows are summed. Returns the new watermark.
 */
create or replace function app.roll_up_reporting() returns timestamptz
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  done_before timestamptz;
  finished_before constant timestamptz :=
    date_trunc('day', (now() - interval '10 minutes') at time zone 'UTC') at time zone 'UTC';
begin
  select r.complete_before into done_before
    from public.reporting_rollups r where r.name = 'credit_flow' for update;
  if done_before >= finished_before then
    return done_before;
  end if;
  insert into public.credit_flow_days (day, reason, credits)
  select (l.created_at at time zone 'UTC')::date, l.reason, sum(l.delta)
    from public.credit_ledger l
   where l.created_at >= done_before and l.created_at < finished_before
   group by 1, 2;
  update public.reporting_rollups set complete_before = finished_before where name = 'credit_flow';
  return finished_before;
end
$$;
grant execute on function app.roll_up_reporting() to sg_worker;
