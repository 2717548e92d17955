-- The accountant's view of credits (issue 19): what is still owed (unexpired credits, the
-- deferred revenue of bought ones) and what lapsed unused (breakage). Same rules as
-- 90_reporting.sql: owned by sg_reporting, which reads only the columns these need (no
-- personal data), granted to sg_analyst.
set local role sg_owner;

grant select (period_start) on public.credit_ledger to sg_reporting;

set local role sg_reporting;

/**
 * Credits granted and not yet spent, expired or taken back, by the month they were granted
 * and where they came from (read at query time: a bucket whose expiry has come no longer
 * counts, whether or not the expiry job has recorded it, and one a renewal closed early
 * neither). `deferred_revenue_cents`: for
 * packs, the share of what was paid that the unspent credits stand for (paid plans'
 * credits are revenue of their month; free and operator credits were never paid for).
 */
select app._ensure_view('reporting.credit_liability', $view$create view reporting.credit_liability as
  select date_trunc('month', b.created_at at time zone 'UTC')::date as granted_month,
         b.source,
         count(*) filter (where b.remaining > 0) as live_buckets,
         sum(b.amount) as credits_granted,
         sum(b.remaining) as credits_outstanding,
         sum(case when b.source = 'pack' and p.credits > 0
                  then round(p.amount_cents::numeric * b.remaining / p.credits) end)::bigint as deferred_revenue_cents,
         min(b.expires_at) filter (where b.remaining > 0) as first_expiry
    from public.credit_buckets b
    left join public.pack_purchases p on p.bucket_id = b.id
   where b.expired_at is null and (b.expires_at is null or b.expires_at > now())
   group by 1, 2$view$);

/**
 * Credits that lapsed unused, per month of their expiry (UTC): what expired, what paid
 * renewals carried into the next period instead (rollover, which comes out of the expired
 * plan credits), breakage = expired − rolled over, and of it the bought credits and the
 * revenue they stand for (pack price × share expired), which is recognised at expiry.
 * Taken-back credits (refunds, disputes) are not breakage: see `credits_clawed_back`.
 */
select app._ensure_view('reporting.credit_breakage', $view$create view reporting.credit_breakage as
  with expired as (
    select date_trunc('month', l.created_at at time zone 'UTC')::date as month, -sum(l.delta) as credits,
           -sum(l.delta) filter (where b.source = 'pack') as pack_credits,
           -sum(case when b.source = 'pack' and p.credits > 0
                     then p.amount_cents::numeric * l.delta / p.credits end) as pack_cents
      from public.credit_ledger l
      join public.credit_buckets b on b.id = l.bucket_id
      left join public.pack_purchases p on p.bucket_id = b.id
     where l.reason = 'expiry'
     group by 1),
  rolled as (
    select date_trunc('month', l.period_start at time zone 'UTC')::date as month, sum(l.delta) as credits
      from public.credit_ledger l
     where l.reason = 'rollover' and l.delta > 0
     group by 1),
  clawed as (
    select date_trunc('month', l.created_at at time zone 'UTC')::date as month, -sum(l.delta) as credits
      from public.credit_ledger l
     where l.reason = 'clawback'
     group by 1)
  select m.month,
         coalesce(e.credits, 0)::bigint as credits_expired,
         coalesce(r.credits, 0)::bigint as credits_rolled_over,
         greatest(coalesce(e.credits, 0) - coalesce(r.credits, 0), 0)::bigint as breakage,
         coalesce(e.pack_credits, 0)::bigint as pack_credits_expired,
         coalesce(round(e.pack_cents), 0)::bigint as pack_breakage_cents,
         coalesce(c.credits, 0)::bigint as credits_clawed_back
    from (select month from expired union select month from rolled union select month from clawed) m
    left join expired e on e.month = m.month
    left join rolled r on r.month = m.month
    left join clawed c on c.month = m.month$view$);

grant select on reporting.credit_liability, reporting.credit_breakage to sg_analyst;
