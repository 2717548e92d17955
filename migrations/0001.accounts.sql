-- Accounts: people, the plans they can be on, their subscription and credentials.
-- Tables, columns and indexes only; who may see what lives in sql/.

/** Plans on sale. Public catalogue: anyone signed in may read it. */
create table plans (
  tier            text primary key check (tier ~ '^[a-z]+$'),
  name            text not null,
  -- monthly price in US cents
  price_cents     integer not null check (price_cents >= 0),
  -- credits granted each billing period
  credits         integer not null check (credits >= 0),
  -- what the tier unlocks: resolution, watermark, api_keys, queue_priority, highlights
  features        jsonb not null default '{}',
  -- the Stripe price id; filled from the environment by the migrate step
  stripe_price_id text unique,
  sort_order      integer not null default 0
);

insert into plans (tier, name, price_cents, credits, sort_order, features) values
  ('free', 'Free', 0, 5, 0,
   '{"width": 720, "height": 1280, "watermark": true, "api_keys": false, "queue_priority": 0,
     "highlights": ["5 videos a month", "720p vertical video", "Story Genius watermark"]}'),
  ('starter', 'Starter', 900, 20, 1,
   '{"width": 1080, "height": 1920, "watermark": false, "api_keys": false, "queue_priority": 5,
     "highlights": ["20 videos a month", "1080p, no watermark", "All platforms"]}'),
  ('pro', 'Pro', 2900, 100, 2,
   '{"width": 2160, "height": 3840, "watermark": false, "api_keys": true, "queue_priority": 10,
     "highlights": ["100 videos a month", "4K, no watermark", "API access", "Priority rendering"]}'),
  ('agency', 'Agency', 9900, 500, 3,
   '{"width": 2160, "height": 3840, "watermark": false, "api_keys": true, "queue_priority": 10,
     "highlights": ["500 videos a month", "4K, no watermark", "API access", "Priority rendering"]}');

/** A person with an account. Each user sees only their own row. */
create table users (
  id              uuid primary key default gen_random_uuid(),
  -- stored normalised by the web layer; unique whatever the letter case
  email           text not null check (length(email) between 3 and 254),
  -- argon2id PHC string; never leaves the database except to the login function
  password_hash   text not null,
  full_name       text check (length(full_name) <= 200),
  is_active       boolean not null default true,
  is_verified     boolean not null default false,
  -- bumped to end every session and token issued before (password change, disable)
  session_version integer not null default 0,
  created_at      timestamptz not null default now(),
  updated_at      timestamptz not null default now(),
  last_login      timestamptz
);
create unique index users_email_lower_key on users (lower(email));

/** One subscription per user: tier, Stripe link and the cached credit balance. */
create table subscriptions (
  id                     uuid primary key default gen_random_uuid(),
  user_id                uuid not null unique references users (id) on delete cascade,
  tier                   text not null default 'free' references plans (tier),
  status                 text not null default 'active'
                         check (status in ('active', 'trialing', 'past_due', 'unpaid', 'canceled', 'incomplete')),
  -- credits made available this period; credits used = total - remaining
  credits_total          integer not null default 0 check (credits_total >= 0),
  -- cached balance: always equals the sum of this user's credit_ledger deltas
  credits_remaining      integer not null default 0 check (credits_remaining >= 0),
  stripe_customer_id     text unique,
  stripe_subscription_id text unique,
  current_period_start   timestamptz not null default now(),
  current_period_end     timestamptz not null default now() + interval '1 month',
  -- timestamp of the newest Stripe object applied, so older events never overwrite newer state
  stripe_updated_at      timestamptz,
  created_at             timestamptz not null default now(),
  updated_at             timestamptz not null default now()
);
create index subscriptions_status_idx on subscriptions (status);
create index subscriptions_period_end_idx on subscriptions (current_period_end) where tier = 'free';

/** API keys (Pro and Agency). Only a SHA-256 of the key is kept. */
create table api_keys (
  id           uuid primary key default gen_random_uuid(),
  user_id      uuid not null references users (id) on delete cascade,
  name         text not null check (length(name) between 1 and 100),
  -- the first characters of the key, shown so people can tell keys apart
  prefix       text not null,
  key_hash     bytea not null unique,
  created_at   timestamptz not null default now(),
  last_used_at timestamptz,
  revoked_at   timestamptz
);
create index api_keys_user_id_idx on api_keys (user_id);

/** Refresh tokens, hashed; rotated on use, a family is revoked when a used one comes back. */
create table refresh_tokens (
  id          uuid primary key default gen_random_uuid(),
  user_id     uuid not null references users (id) on delete cascade,
  family_id   uuid not null,
  token_hash  bytea not null unique,
  created_at  timestamptz not null default now(),
  expires_at  timestamptz not null,
  revoked_at  timestamptz
);
create index refresh_tokens_user_id_idx on refresh_tokens (user_id);
create index refresh_tokens_family_idx on refresh_tokens (family_id);

/** Login attempts, for the throttle shared by every web process. Not tenant data. */
create table login_attempts (
  id           bigint generated always as identity primary key,
  email        text not null,
  client_ip    inet,
  succeeded    boolean not null,
  attempted_at timestamptz not null default now()
);
create index login_attempts_email_idx on login_attempts (lower(email), attempted_at);
create index login_attempts_ip_idx on login_attempts (client_ip, attempted_at);
