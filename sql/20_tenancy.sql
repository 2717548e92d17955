-- Who sees which rows and columns. RLS is the guard; WHERE clauses in queries are for speed.
--
-- Every tenant table has RLS enabled and FORCED (so even its owner, sg_owner, is filtered)
-- and two policies:
--   "users reach only their own rows"   to sg_app and sg_owner: the row's user is app.user_id.
--                                       sg_owner is listed because the user-facing SECURITY
--                                       DEFINER functions it owns run as it, and must stay
--                                       inside the caller's tenancy.
--   "service functions reach every row" to sg_service, the owner of the few cross-tenant
--                                       functions; nobody can log in as sg_service.
-- With no app.user_id set, app.current_user_id() is null and tenants see zero rows.
set local role sg_owner;

-- Policies and RLS flags are changed only where they differ (app._ensure_policy,
-- app._ensure_forced_row_security): each change locks its table (ACCESS EXCLUSIVE), so
-- a release that leaves them as they are takes no lock on any tenant table.
do $$
declare
  tenant_table text;
  owner_column text;
begin
  for tenant_table, owner_column in values
      ('users', 'id'), ('subscriptions', 'user_id'), ('api_keys', 'user_id'),
      ('refresh_tokens', 'user_id'), ('jobs', 'user_id'), ('credit_ledger', 'user_id'),
      ('usage_logs', 'user_id'), ('browser_sessions', 'user_id'), ('email_tokens', 'user_id'),
      ('email_outbox', 'user_id'), ('refresh_families', 'user_id')
  loop
    perform app._ensure_forced_row_security(format('public.%I', tenant_table)::regclass);
    -- (select …) makes Postgres compute the id once per statement, not once per row.
    perform app._ensure_policy(format('public.%I', tenant_table)::regclass, 'users reach only their own rows',
      format($policy$
      create policy "users reach only their own rows" on public.%I for all to sg_app, sg_owner
        using (%I = (select app.current_user_id()))
        with check (%I = (select app.current_user_id()))
    $policy$, tenant_table, owner_column, owner_column));
    perform app._ensure_policy(format('public.%I', tenant_table)::regclass, 'reporting reads every row',
      format('create policy "reporting reads every row" on public.%I for select to sg_reporting using (true)',
             tenant_table));
    perform app._ensure_policy(format('public.%I', tenant_table)::regclass, 'service functions reach every row',
      format($policy$
      create policy "service functions reach every row" on public.%I for all to sg_service
        using (true) with check (true)
    $policy$, tenant_table));
  end loop;
end
$$;

-- Non-tenant tables that only functions touch: private (RLS on, no policy) to all but sg_service.
select app._ensure_forced_row_security('public.login_attempts');
select app._ensure_policy('public.login_attempts', 'service functions reach every row',
  'create policy "service functions reach every row" on public.login_attempts for all to sg_service '
  'using (true) with check (true)');
do $$
declare
  private_table text;
begin
  foreach private_table in array array['trusted_devices', 'two_factor', 'recovery_codes', 'login_challenges'] loop
    perform app._ensure_forced_row_security(format('public.%I', private_table)::regclass);
    perform app._ensure_policy(format('public.%I', private_table)::regclass, 'service functions reach every row',
      format('create policy "service functions reach every row" on public.%I for all to sg_service '
             'using (true) with check (true)', private_table));
  end loop;
end
$$;
-- Stripe events, re-read bookkeeping, reconciliation drift and the reporting roll-ups:
-- written by sg_service functions (app.receive_stripe_event, app.apply_stripe_subscription,
-- app.roll_up_reporting), read by the reporting views.
do $$
declare
  service_table text;
begin
  foreach service_table in array array['stripe_events', 'stripe_syncs', 'stripe_drift', 'credit_flow_days',
                                          'reporting_rollups'] loop
    perform app._ensure_forced_row_security(format('public.%I', service_table)::regclass);
    perform app._ensure_policy(format('public.%I', service_table)::regclass, 'service functions reach every row',
      format('create policy "service functions reach every row" on public.%I for all to sg_service '
             'using (true) with check (true)', service_table));
    perform app._ensure_policy(format('public.%I', service_table)::regclass, 'reporting reads every row',
      format('create policy "reporting reads every row" on public.%I for select to sg_reporting using (true)',
             service_table));
  end loop;
end
$$;

-- The webhook secrets: only sg_service's signature check reads them (no reporting policy).
select app._ensure_forced_row_security('public.stripe_webhook_secrets');
select app._ensure_policy('public.stripe_webhook_secrets', 'service functions reach every row',
  'create policy "service functions reach every row" on public.stripe_webhook_secrets for select to sg_service '
  'using (true)');

-- Table privileges: this file is their single source of truth, so start from nothing.
revoke all on all tables in schema public from public, sg_app, sg_worker, sg_service, sg_reporting, sg_analyst;
revoke all on all sequences in schema public from public, sg_app, sg_worker, sg_service, sg_reporting, sg_analyst;
grant usage on schema public to sg_app, sg_worker, sg_service;

-- The web process reads its user's rows (never a password, key or token hash) and
-- changes state only through app functions; the one direct write is the profile name.
grant select on public.plans to sg_app;
grant select (id, email, full_name, is_active, is_verified, session_version, created_at, updated_at, last_login)
  on public.users to sg_app;
grant update (full_name) on public.users to sg_app;
grant select on public.subscriptions, public.jobs, public.credit_ledger, public.usage_logs to sg_app;
grant select (id, user_id, name, prefix, created_at, last_used_at, revoked_at) on public.api_keys to sg_app;
grant select (id, user_id, family_id, created_at, expires_at, revoked_at) on public.refresh_tokens to sg_app;
grant select (id, user_id, created_at, revoked_at) on public.refresh_families to sg_app;
grant select (id, user_id, created_at, expires_at, revoked_at) on public.browser_sessions to sg_app;
grant select (id, user_id, kind, created_at, sent_at) on public.email_outbox to sg_app;

-- Cross-tenant functions run as sg_service; RLS policies above still decide the rows.
grant select on public.plans to sg_service;
grant select, insert, update, delete on
  public.users, public.subscriptions, public.api_keys, public.refresh_tokens, public.browser_sessions,
  public.jobs, public.usage_logs, public.stripe_events, public.login_attempts, public.email_tokens,
  public.email_outbox
  to sg_service;
grant select, insert on public.credit_ledger to sg_service;
grant select, insert, update, delete on public.refresh_families, public.trusted_devices, public.two_factor,
  public.recovery_codes, public.login_challenges to sg_service;
grant select, insert, update on public.credit_flow_days, public.reporting_rollups, public.stripe_syncs to sg_service;
grant select, insert on public.stripe_drift to sg_service;
grant select on public.stripe_webhook_secrets to sg_service;
grant select, insert on public.pgqueuer to sg_service;
grant usage on sequence public.pgqueuer_id_seq to sg_service;

-- The reporting views' owner reads the columns the views aggregate and nothing else: no
-- email, name, password/key/token hash or Stripe payload (those reach reports only as the
-- extracted fields of app.stripe_event_facts, sql/90_reporting.sql); it can write nothing.
grant usage on schema public to sg_reporting;
grant select on public.plans, public.credit_flow_days, public.reporting_rollups to sg_reporting;
grant select (id, created_at) on public.users to sg_reporting;
grant select (user_id, tier, status, credits_remaining, last_active_at) on public.subscriptions to sg_reporting;
grant select (user_id, platform, status, created_at, started_at, finished_at) on public.jobs to sg_reporting;
grant select (reason, delta, created_at) on public.credit_ledger to sg_reporting;
grant select (id, type, subscription_id, received_at, attempts, error, processed_at) on public.stripe_events
  to sg_reporting;
grant select on public.stripe_drift to sg_reporting;

-- The worker drives pgqueuer and nothing else directly.
grant select, insert, update, delete on
  public.pgqueuer, public.pgqueuer_log, public.pgqueuer_schedules, public.pgqueuer_statistics
  to sg_worker;
grant usage, select on sequence
  public.pgqueuer_id_seq, public.pgqueuer_log_id_seq, public.pgqueuer_schedules_id_seq,
  public.pgqueuer_statistics_id_seq
  to sg_worker;
