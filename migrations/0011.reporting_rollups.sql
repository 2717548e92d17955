-- Finished days of the credit ledger, summed once: reporting.credit_flow reads these plus
-- the ledger rows since the last roll-up, so it stays fast however long the ledger grows.
-- The ledger is append-only, so a finished day's sums never change.
-- depends: 0010.login_attempt_indexes

/** Credits moved per UTC day and reason, for days app.roll_up_reporting has finished. Written only by that function (sg_service); read by the reporting views' owner. */
create table credit_flow_days (
  day date not null,                    -- UTC day
  reason text not null,                 -- credit_ledger.reason
  credits bigint not null,              -- sum(delta) of that day's rows with that reason
  primary key (day, reason)
);

/** How far each roll-up reaches: the rows it summed are exactly those created before complete_before. */
create table reporting_rollups (
  name text primary key,                -- the rolled-up view
  complete_before timestamptz not null  -- a UTC midnight; '-infinity' until the first run
);
insert into reporting_rollups (name, complete_before) values ('credit_flow', '-infinity');

-- the ledger is appended in time order, so a BRIN index finds "rows since the last
-- roll-up" for almost nothing on each insert; autosummarize has autovacuum summarise
-- each block range as it fills
create index credit_ledger_created_at_brin on credit_ledger using brin (created_at) with (autosummarize = on);
