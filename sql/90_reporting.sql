-- The analysts' schema. sg_analyst may read the views here and nothing else;
-- the views themselves arrive with the reporting issue.
set local role sg_owner;

create schema if not exists reporting;
revoke all on schema reporting from public;
grant usage on schema reporting to sg_analyst;
grant select on all tables in schema reporting to sg_analyst;
