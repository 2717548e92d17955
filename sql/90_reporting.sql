-- The analysts' schema: read-only views over every tenant, for SQL clients (psql, BI tools).
--
-- Why the views are not security_invoker: analysts (sg_analyst) must not read base tables
-- at all, and tenant tables only show a user their own rows. So the views run as their
-- owner, sg_reporting, a NOLOGIN role whose only privileges are SELECT on the tables
-- below plus a SELECT-only RLS policy "reporting reads every row". What leaves the
-- database is therefore exactly what these view definitions select: aggregates and ids,
-- never an email address, a password/key/token hash, or a raw Stripe payload.
-- Like `app`, the schema holds no data and is rebuilt on every migrate.
set local role sg_owner;

drop schema if exists reporting cascade;
create schema reporting;
revoke all on schema reporting from public;
grant usage, create on schema reporting to sg_reporting;
grant usage on schema reporting to sg_analyst;

set local role sg_reporting;

/** New accounts per day. */
create view reporting.daily_signups as
  select u.created_at::date as day, count(*)::integer as signups
    from public.users u
   group by 1;

/** Completed Stripe checkouts per day and plan bought (a paid conversion each). */
create view reporting.paid_conversions as
  select to_timestamp((e.payload ->> 'created')::bigint)::date as day,
         e.payload #>> '{data,object,metadata,tier}' as tier,
         count(distinct e.payload #>> '{data,object,metadata,user_id}')::integer as conversions
    from public.stripe_events e
   where e.type = 'checkout.session.completed' and e.processed_at is not null
   group by 1, 2;

/** Monthly recurring revenue by plan, as of today (subscriptions in good standing or retrying). */
create view reporting.mrr as
  select current_date as day, s.tier, count(*)::integer as subscribers, sum(p.price_cents)::bigint as mrr_cents
    from public.subscriptions s join public.plans p on p.tier = s.tier
   where p.price_cents > 0 and s.status in ('active', 'trialing', 'past_due')
   group by s.tier;

/** Money collected per month: paid invoices, each counted once however many events named it. */
create view reporting.revenue as
  select date_trunc('month', to_timestamp(invoice.paid_at))::date as month,
         sum(invoice.amount_paid)::bigint as revenue_cents
    from (select distinct on (e.payload #>> '{data,object,id}')
                 (e.payload #>> '{data,object,amount_paid}')::bigint as amount_paid,
                 (e.payload ->> 'created')::bigint as paid_at
            from public.stripe_events e
           where e.type in ('invoice.paid', 'invoice.payment_succeeded')
           order by e.payload #>> '{data,object,id}', e.received_at) as invoice
   group by 1;

/** Credits moved per day and reason (grants positive, spending and expiry negative). */
create view reporting.credit_flow as
  select l.created_at::date as day, l.reason, sum(l.delta)::bigint as credits
    from public.credit_ledger l
   group by 1, 2;

/** Render outcomes per day and platform, and how long a successful render took. */
create view reporting.job_outcomes as
  select j.created_at::date as day, j.platform,
         count(*) filter (where j.status = 'completed')::integer as completed,
         count(*) filter (where j.status = 'failed')::integer as failed,
         round(avg(extract(epoch from j.finished_at - j.started_at)) filter (where j.status = 'completed'), 2)
           as avg_render_seconds
    from public.jobs j
   group by 1, 2;

/**
 * One row per user: plan, balance, output and recency (no contact details).
 * last_active needs no job aggregate (subscriptions.last_job_at is kept by the spend),
 * and videos_made is a per-row subquery, so "top 100 by last_active" counts the jobs
 * of those 100 users only: Postgres evaluates such costly output columns after ORDER
 * BY + LIMIT, and skips them when a query does not ask for them.
 */
create view reporting.user_summary as
  select u.id as user_id, s.tier, u.created_at as signed_up, s.credits_remaining,
         (select count(*) from public.jobs j where j.user_id = u.id and j.status = 'completed')::integer
           as videos_made,
         greatest(u.last_login, s.last_job_at) as last_active
    from public.users u
    join public.subscriptions s on s.user_id = u.id;

grant select on all tables in schema reporting to sg_analyst;
