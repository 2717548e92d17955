-- Credits and the render jobs they pay for.
-- depends: 0001.accounts

/** Render jobs. Each user sees only their own; the worker reaches them through functions. */
create table jobs (
  id               uuid primary key default gen_random_uuid(),
  user_id          uuid not null references users (id) on delete cascade,
  platform         text not null check (platform in ('youtube_shorts', 'tiktok', 'instagram_reels')),
  topic            text not null check (length(topic) between 3 and 200),
  -- render options chosen at creation (duration_seconds, ...)
  options          jsonb not null default '{}',
  status           text not null default 'queued'
                   check (status in ('queued', 'processing', 'completed', 'failed')),
  progress_percent integer not null default 0 check (progress_percent between 0 and 100),
  output_url       text,
  error_message    text,
  -- the tier paid for decides the resolution, even if the plan changes before rendering
  tier_at_creation text not null references plans (tier),
  attempts         integer not null default 0,
  created_at       timestamptz not null default now(),
  started_at       timestamptz,
  finished_at      timestamptz
);
-- newest-first keyset pagination of a user's jobs
create index jobs_user_id_created_idx on jobs (user_id, created_at desc, id desc);

/** Every credit movement. Append-only; balance = sum(delta) per user. */
create table credit_ledger (
  id              uuid primary key default gen_random_uuid(),
  user_id         uuid not null references users (id) on delete cascade,
  delta           integer not null check (delta <> 0),
  reason          text not null check (reason in
                  ('signup_grant', 'render', 'refund', 'renewal', 'expiry', 'plan_grant', 'admin_grant')),
  -- makes each movement happen once: 'render:<job>', 'refund:<job>', 'signup:<user>', ...
  idempotency_key text not null unique,
  job_id          uuid references jobs (id) on delete set null,
  stripe_event_id text,
  period_start    timestamptz,
  created_at      timestamptz not null default now()
);
create index credit_ledger_user_id_idx on credit_ledger (user_id, created_at);

/** What the usage page lists: one row per billable action. */
create table usage_logs (
  id           uuid primary key default gen_random_uuid(),
  user_id      uuid not null references users (id) on delete cascade,
  action       text not null,
  credits_used integer not null,
  job_id       uuid references jobs (id) on delete set null,
  created_at   timestamptz not null default now()
);
create index usage_logs_user_id_idx on usage_logs (user_id, created_at);
