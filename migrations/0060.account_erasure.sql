-- Erased accounts (GDPR Art. 17) stay as tombstones: the users row keeps its id, which
-- the append-only ledger and the usage rows still point at (a pseudonymous id), and loses
-- everything that identifies a person (sql/55_account_erasure.sql). A nullable column
-- without a default: a catalog change, no table rewrite.
-- depends: 0040.job_notes

alter table users add column deleted_at timestamptz;
