-- The analysts' view of billing's bookkeeping (the reporting schema's rules are in
-- 90_reporting.sql: owned by sg_reporting, no personal data, no raw Stripe payloads).
set local role sg_reporting;

/** What reconciliation found different from Stripe and repaired, one row per field (and each second live subscription). */
select app._ensure_view('reporting.stripe_drift', $view$create view reporting.stripe_drift as
  select d.detected_at, d.user_id, d.subscription_id, d.field, d.before, d.after
    from public.stripe_drift d$view$);

/**
 * Stripe events not applied: failed ones the worker is still retrying (or gave up on after
 * ten tries), and refused ones (an impossible event time). The error, never the payload.
 */
select app._ensure_view('reporting.stripe_event_failures', $view$create view reporting.stripe_event_failures as
  select e.id as event_id, e.type, e.subscription_id, e.received_at, e.attempts, e.error,
         e.error like 'refused:%' as refused, e.attempts >= 10 as given_up
    from public.stripe_events e
   where e.processed_at is null and e.error is not null$view$);

grant select on reporting.stripe_drift, reporting.stripe_event_failures to sg_analyst;
