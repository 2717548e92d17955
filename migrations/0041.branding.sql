-- What each plan sells, delivered (issue 17 item 6): the plans say which of them draw the
-- closing card (free), carry a customer's branding (Pro, Agency) and leave our name out
-- (Agency, white-label), and list exactly that; customers' brands get a table.
-- depends: 0040.job_notes

/**
 * A customer's branding: their logo and colours, drawn on every video of a plan whose
 * features include `branding`. One row per user; the owner reads it (RLS), only
 * app.save_brand / app.delete_brand write it, the worker reads it when it claims a job.
 */
create table brands (
  user_id         uuid primary key references users (id) on delete cascade,
  -- the upload as worker/branding.py clean_logo re-encoded it: a fresh PNG, at most 1024 px a side
  logo_png        bytea check (length(logo_png) between 8 and 4 * 1024 * 1024
                               and substring(logo_png from 1 for 8) = '\x89504e470d0a1a0a'::bytea),
  -- the background tint of every scene, '#rrggbb'
  primary_colour  text check (primary_colour ~ '^#[0-9a-f]{6}$'),
  -- the highlighted caption word, '#rrggbb'
  accent_colour   text check (accent_colour ~ '^#[0-9a-f]{6}$'),
  created_at      timestamptz not null default now(),
  updated_at      timestamptz not null default now()
);

update plans set features = features || jsonb_build_object(
    'closing_card', tier = 'free',
    'branding', tier in ('pro', 'agency'),
    'white_label', tier = 'agency',
    'highlights', case tier
      when 'free' then jsonb_build_array('5 videos a month', '720p vertical video, narrated and captioned',
                                         'Story Genius watermark and closing card')
      when 'starter' then jsonb_build_array('20 videos a month', '1080p vertical video, narrated and captioned',
                                            'No watermark, no closing card', 'Priority rendering')
      when 'pro' then jsonb_build_array('100 videos a month', '4K vertical video, no watermark',
                                        'Your logo and brand colours on every video', 'API access',
                                        'Priority rendering')
      when 'agency' then jsonb_build_array('500 videos a month', '4K vertical video, no watermark',
                                           'Your logo and brand colours on every video',
                                           'White-label: no Story Genius name in your videos',
                                           'API access', 'Priority rendering')
    end)
 where tier in ('free', 'starter', 'pro', 'agency');
