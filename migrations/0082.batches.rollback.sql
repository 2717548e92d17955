drop table if exists batches;
