-- a validated constraint is dropped with its column by 0050's rollback; nothing to undo here
select 1;
