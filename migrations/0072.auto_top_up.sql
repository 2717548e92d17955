-- Auto top-up (a chosen pack bought off-session when a spend leaves the balance below a
-- threshold, within limits) and the bookkeeping of the expiring-soon notice.
-- depends: 0071.credit_packs

/** A paid account's auto top-up choice. Each user sees and changes only their own, through app functions. */
create table auto_top_up (
  user_id           uuid primary key references users (id) on delete cascade,
  enabled           boolean not null default false,
  pack              text not null references credit_packs (pack),
  -- buy when a spend leaves fewer credits than this
  threshold         integer not null check (threshold between 1 and 1000),
  -- at most one purchase per this many hours, and this many per calendar month (UTC)
  min_hours_between integer not null default 24 check (min_hours_between between 1 and 720),
  max_per_month     integer not null default 3 check (max_per_month between 1 and 31),
  -- why it was turned off by us (a failed payment), shown on the billing page
  disabled_reason   text check (length(disabled_reason) <= 500),
  updated_at        timestamptz not null default now()
);

/** Each off-session purchase auto top-up started: queued, then succeeded or failed. Each user sees only their own. */
create table auto_top_up_attempts (
  id                uuid primary key default gen_random_uuid(),
  user_id           uuid not null references users (id) on delete cascade,
  pack              text not null references credit_packs (pack),
  status            text not null default 'pending' check (status in ('pending', 'succeeded', 'failed')),
  payment_intent_id text unique,
  error             text check (length(error) <= 500),
  created_at        timestamptz not null default now(),
  finished_at       timestamptz
);
create index auto_top_up_attempts_user_idx on auto_top_up_attempts (user_id, created_at);
-- (the pack lists are a handful of rows, but a pack withdrawn must not scan these)
create index auto_top_up_pack_idx on auto_top_up (pack);
create index auto_top_up_attempts_pack_idx on auto_top_up_attempts (pack);

-- buckets whose expiry has been looked at for the "expiring soon" mail (once each; its
-- index is built concurrently by 0073)
alter table credit_buckets add column expiry_noticed boolean not null default false;
