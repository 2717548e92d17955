-- Stripe webhook events, stored before they are applied.
-- depends: 0002.credits_and_jobs

/** Every Stripe event received. Service functions only; analysts never see payloads. */
create table stripe_events (
  id           text primary key,
  type         text not null,
  payload      jsonb not null,
  received_at  timestamptz not null default now(),
  processed_at timestamptz,
  -- why the last application failed; cleared when it succeeds
  error        text,
  attempts     integer not null default 0
);
create index stripe_events_unprocessed_idx on stripe_events (received_at) where processed_at is null;
