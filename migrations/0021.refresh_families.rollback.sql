alter table refresh_tokens drop column replaced_by, drop constraint refresh_tokens_family_id_fkey;
drop table refresh_families;
