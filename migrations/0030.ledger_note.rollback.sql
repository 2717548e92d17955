alter table credit_ledger drop column note;
