-- Refresh-token families as rows of their own. A family is one signed-in session of an
-- API client: its refresh tokens rotate within it, and its access tokens carry its id.
-- Rotation and revocation both lock the family's row, so they happen one after the
-- other; a revoked family refuses rotation and its access tokens.
-- depends: 0020.reset_links_end_with_the_password

/** A signed-in API session. Each user sees only their own. */
create table refresh_families (
  id         uuid primary key,
  user_id    uuid not null references users (id) on delete cascade,
  created_at timestamptz not null default now(),
  -- set once: logout, reuse of a rotated token, password change or a disabled account
  revoked_at timestamptz
);
create index refresh_families_user_id_idx on refresh_families (user_id);

-- the owner lifts FORCE for this transaction only (sql/20_tenancy.sql forces it again)
alter table refresh_tokens no force row level security;
insert into refresh_families (id, user_id, created_at, revoked_at)
select t.family_id, (array_agg(t.user_id))[1], min(t.created_at),
       case when bool_and(t.revoked_at is not null) then max(t.revoked_at) end
  from refresh_tokens t
 group by t.family_id;
alter table refresh_tokens force row level security;

alter table refresh_tokens
  add constraint refresh_tokens_family_id_fkey foreign key (family_id) references refresh_families (id)
    on delete cascade,
  -- the token this one was rotated into: a concurrent retry within seconds gets it again
  add column replaced_by uuid references refresh_tokens (id) on delete set null;
