drop table brands;

update plans set features = (features - 'closing_card' - 'branding' - 'white_label') || jsonb_build_object(
    'highlights', case tier
      when 'free' then '["5 videos a month", "720p vertical video", "Story Genius watermark"]'::jsonb
      when 'starter' then '["20 videos a month", "1080p, no watermark", "All platforms"]'::jsonb
      when 'pro' then '["100 videos a month", "4K, no watermark", "API access", "Priority rendering"]'::jsonb
      when 'agency' then '["500 videos a month", "4K, no watermark", "API access", "Priority rendering"]'::jsonb
    end)
 where tier in ('free', 'starter', 'pro', 'agency');
