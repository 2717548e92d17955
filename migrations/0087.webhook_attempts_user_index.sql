-- The delivery log's owner column needs its own index (the catalog lint's "unindexed
-- foreign key", tests/test_sql_lints.py): erasing an account would otherwise scan every
-- customer's attempts once per deleted row. Built concurrently, so deliveries go on.
-- depends: 0086.referrals
-- transactional: false

create index concurrently if not exists webhook_attempts_user_id_idx on webhook_attempts (user_id);
