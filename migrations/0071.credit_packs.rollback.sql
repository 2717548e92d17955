-- The pack grants stay in the ledger (and their buckets, until 0070 is rolled back too).
drop table pack_purchases;
drop table credit_packs;
