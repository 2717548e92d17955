-- Webhooks to customers' systems (issue 20 item 3): the endpoints a customer registers,
-- the events their account produced, one delivery per event and endpoint, and a log line
-- per attempt. Written only by the functions in sql/46_webhooks.sql.
-- depends: 0040.job_notes

/** An address that receives a customer's events; only its owner sees it (never its secret). */
create table webhook_endpoints (
  id                   uuid primary key default gen_random_uuid(),
  user_id              uuid not null references users (id) on delete cascade,
  -- https in production; checked again, after DNS resolution, before every delivery
  url                  text not null check (length(url) between 8 and 2000),
  description          text check (length(description) <= 200),
  -- the event types sent to it (sql/46_webhooks.sql lists them)
  event_types          text[] not null check (cardinality(event_types) between 1 and 20),
  -- the HMAC key the worker signs with; shown to the customer once, then only the worker reads it
  secret               text not null,
  created_at           timestamptz not null default now(),
  -- failed attempts since the last success
  consecutive_failures integer not null default 0,
  last_success_at      timestamptz,
  -- set when its deliveries kept failing (or by the customer); nothing is sent until re-enabled
  disabled_at          timestamptz,
  disabled_reason      text
);
create index webhook_endpoints_user_idx on webhook_endpoints (user_id);

/** Something that happened to a customer's account, as the JSON body every endpoint gets. */
create table webhook_events (
  id          uuid primary key default gen_random_uuid(),
  user_id     uuid not null references users (id) on delete cascade,
  type        text not null,
  -- one event per business fact: 'render.completed:<job>', 'credits.low:<user>:<period>', ...
  dedupe_key  text not null unique,
  body        jsonb not null,
  created_at  timestamptz not null default now()
);
create index webhook_events_user_idx on webhook_events (user_id, created_at);

/** One event on its way to one endpoint: at least once, retried with backoff for three days. */
create table webhook_deliveries (
  id               uuid primary key default gen_random_uuid(),
  user_id          uuid not null references users (id) on delete cascade,
  event_id         uuid not null references webhook_events (id) on delete cascade,
  endpoint_id      uuid not null references webhook_endpoints (id) on delete cascade,
  -- pending: an attempt is queued; succeeded: a 2xx came back; failed: given up (three days)
  -- or the endpoint was disabled or deleted
  status           text not null default 'pending' check (status in ('pending', 'succeeded', 'failed')),
  attempts         integer not null default 0,
  last_status_code integer,
  last_latency_ms  integer,
  last_error       text,
  last_attempt_at  timestamptz,
  next_attempt_at  timestamptz,
  -- retries stop once this has passed; a resend starts a new window
  retry_until      timestamptz not null default now() + interval '3 days',
  created_at       timestamptz not null default now(),
  finished_at      timestamptz
);
create index webhook_deliveries_user_idx on webhook_deliveries (user_id, created_at desc);
create index webhook_deliveries_endpoint_idx on webhook_deliveries (endpoint_id, created_at desc);
create unique index webhook_deliveries_once_per_endpoint on webhook_deliveries (event_id, endpoint_id);

/** The delivery log: one line per attempt. */
create table webhook_attempts (
  id           bigint generated always as identity primary key,
  delivery_id  uuid not null references webhook_deliveries (id) on delete cascade,
  user_id      uuid not null references users (id) on delete cascade,
  attempt      integer not null,
  attempted_at timestamptz not null default now(),
  status_code  integer,
  latency_ms   integer,
  -- why it failed, in words fit for the customer (never our internals)
  error        text check (length(error) <= 500),
  succeeded    boolean not null
);
create index webhook_attempts_delivery_idx on webhook_attempts (delivery_id, attempt);
-- erasing a user deletes their attempts: without it each deletion scans the whole log
create index webhook_attempts_user_idx on webhook_attempts (user_id);
