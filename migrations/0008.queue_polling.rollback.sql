create trigger tg_pgqueuer_changed
after insert or update or delete or truncate on pgqueuer
execute function fn_pgqueuer_changed();
