-- The views each sql/ file defines (through app._ensure_view), beside its functions, so
-- `flask migrate` can drop a view a changed file no longer defines instead of dropping the
-- whole reporting schema every release.
-- depends: 0061.sql_layer_files

alter table sql_layer_files add column views text[] not null default '{}';
