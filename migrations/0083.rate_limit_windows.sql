-- Request counting for the API's rate limits (sql/47_rate_limits.sql): one row per
-- caller per minute, so every web process counts against the same number. The limit of
-- each plan is its features' rate_limit_per_minute.
-- depends: 0082.batches

/** Requests per caller (an API key or a signed-in user) per fixed one-minute window. */
create unlogged table rate_limit_windows (
  -- 'key:<api key id>' or 'user:<user id>'
  subject      text not null,
  window_start timestamptz not null,
  hits         integer not null default 1,
  primary key (subject, window_start)
);
-- the sweep of finished windows
create index rate_limit_windows_window_start_idx on rate_limit_windows (window_start);

update plans set features = features || jsonb_build_object('rate_limit_per_minute', limits.per_minute)
  from (values ('free', 20), ('starter', 30), ('pro', 60), ('agency', 300)) as limits (tier, per_minute)
 where plans.tier = limits.tier;
