-- Custom branding (Pro and Agency): a customer's logo and colours, drawn on every video
-- their plan pays for. The web process validates and cleans the logo (worker/branding.py
-- clean_logo: decoded, limits checked, re-encoded as a fresh PNG) before it gets here;
-- these functions decide who may store one. The worker reads a brand only through
-- app.claim_render (sql/44_renders.sql), and only for a job whose plan sells branding.
set local role sg_owner;

-- changed only where they differ: an unchanged policy takes no lock on the table
select app._ensure_forced_row_security('public.brands');
select app._ensure_policy('public.brands', 'users reach only their own rows', $policy$
  create policy "users reach only their own rows" on public.brands for all to sg_app, sg_owner
    using (user_id = (select app.current_user_id()))
    with check (user_id = (select app.current_user_id()))
$policy$);
select app._ensure_policy('public.brands', 'service functions reach every row', $policy$
  create policy "service functions reach every row" on public.brands for all to sg_service
    using (true) with check (true)
$policy$);

-- the owner reads their brand directly; writes go through the functions below
revoke all on public.brands from public, sg_app, sg_worker, sg_service, sg_reporting, sg_analyst;
grant select on public.brands to sg_app;
grant select, delete on public.brands to sg_service;

/**
 * Whether the current user's plan sells `feature` (a boolean in plans.features), read
 * the way app.create_api_key reads api_keys: the subscription's tier while it is live.
 * Callable by sg_app (pages show or hide the branding link with it).
 */
create or replace function app.plan_has_feature(feature text)
returns boolean
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
  select coalesce((select (p.features ->> feature)::boolean
                     from public.subscriptions s join public.plans p on p.tier = s.tier
                    where s.user_id = app.current_user_id()
                      and s.status in ('active', 'trialing', 'past_due')), false)
$$;
grant execute on function app.plan_has_feature(text) to sg_app;

/**
 * Stores the current user's branding. `new_logo` is a PNG that clean_logo produced;
 * `keep_logo` keeps the stored one when no new logo is given (false with a null logo
 * removes it). Colours are '#rrggbb' or null (no colour: the default palette). Only
 * plans whose features include `branding` may (P0403 with an upgrade hint); a bad
 * colour or a logo that is not a PNG is P0422. Returns the stored row.
 */
create or replace function app.save_brand(new_logo bytea, keep_logo boolean, new_primary text,
                                          new_accent text)
returns table (user_id uuid, has_logo boolean, logo_bytes integer, primary_colour text, accent_colour text,
               updated_at timestamptz)
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_variable
declare
  uid uuid := app.require_user_id();
  primary_value text := lower(new_primary);
  accent_value text := lower(new_accent);
begin
  if not app.plan_has_feature('branding') then
    raise exception 'Custom branding is available on the Pro and Agency plans. Upgrade at /pricing.'
      using errcode = 'P0403';
  end if;
  if primary_value !~ '^#[0-9a-f]{6}$' or accent_value !~ '^#[0-9a-f]{6}$' then
    raise exception 'Colours must look like #1e90ff.' using errcode = 'P0422';
  end if;
  if new_logo is not null and (length(new_logo) > 4 * 1024 * 1024
                               or substring(new_logo from 1 for 8) <> '\x89504e470d0a1a0a'::bytea) then
    raise exception 'The logo must be a cleaned PNG.' using errcode = 'P0422';
  end if;
  return query
    insert into public.brands as b (user_id, logo_png, primary_colour, accent_colour)
    values (uid, new_logo, primary_value, accent_value)
    on conflict on constraint brands_pkey do update
       set logo_png = case when new_logo is null and keep_logo then b.logo_png else excluded.logo_png end,
           primary_colour = excluded.primary_colour, accent_colour = excluded.accent_colour,
           updated_at = now()
    returning b.user_id, b.logo_png is not null, length(b.logo_png), b.primary_colour, b.accent_colour,
              b.updated_at;
end
$$;
grant execute on function app.save_brand(bytea, boolean, text, text) to sg_app;

/**
 * Removes the current user's branding (allowed on every plan: it is their data); true
 * if there was any.
 */
create or replace function app.delete_brand()
returns boolean
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  delete from public.brands b where b.user_id = app.require_user_id();
  return found;
end
$$;
grant execute on function app.delete_brand() to sg_app;
