-- (validation only; 0070's rollback removes the constraint with its column)
select 1;
