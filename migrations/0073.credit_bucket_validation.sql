-- The ledger's bucket reference and wider reason check, added NOT VALID by 0070, validated
-- in a transaction of their own: the scan holds only a SHARE UPDATE EXCLUSIVE lock, so the
-- ledger keeps taking spends meanwhile.
-- depends: 0072.auto_top_up

alter table credit_ledger validate constraint credit_ledger_bucket_id_fkey;
alter table credit_ledger validate constraint credit_ledger_reason_check;
