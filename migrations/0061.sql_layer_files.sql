-- What `flask migrate` last applied of the sql/ business layer: each file's SHA-256 and
-- the functions it defined. An unchanged file is not applied again (no lock is taken for
-- it); a changed one is, and the functions it no longer defines are dropped. Read and
-- written by the migrate step alone (as sg_owner); no runtime role has any grant on it.
-- depends: 0060.account_erasure

create table sql_layer_files (
  name       text primary key,
  sha256     text not null,
  -- regprocedure text of every function the file created or replaced
  functions  text[] not null default '{}',
  applied_at timestamptz not null default now()
);
