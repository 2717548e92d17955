drop index credit_ledger_created_at_brin;
drop table reporting_rollups;
drop table credit_flow_days;
