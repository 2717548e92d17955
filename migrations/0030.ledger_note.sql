-- An operator's grant keeps its reason in a column of its own. The reason used to be
-- part of the idempotency key (`admin:<key>:<reason>`, cut at 200 characters), so the same
-- --key with a reworded reason granted twice and two different grants could collide.
-- Now the key is `admin:<key>` alone (sql/30_credits.sql, app.operator_grant).
-- depends: 0012.login_attempts_hold_failures

alter table credit_ledger
  -- why an operator moved credits (flask grant-credits --reason); null for every other movement
  add column note text;
alter table credit_ledger add constraint credit_ledger_note_length check (length(note) between 1 and 500);
