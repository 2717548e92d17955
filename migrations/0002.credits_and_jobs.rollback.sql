drop table usage_logs;
drop table credit_ledger;
drop table jobs;
