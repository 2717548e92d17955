alter table jobs drop column if exists api_key_id;
alter table api_keys drop column if exists monthly_budget, drop column if exists scopes;
