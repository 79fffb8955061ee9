-- Every statement the service runs, as named blocks (`-- name: X`); loaded once by service.store.queries.
-- Instants are passed in as $n rather than read with now(), so validation and queries agree on the clock.

-- name: get_app
-- One app with the digest of its master secret, for authentication.
SELECT app_key, name, time_zone, max_schedules, created_at, secret_sha256
FROM apps WHERE app_key = $1;

-- name: insert_app
INSERT INTO apps (app_key, name, secret_sha256, time_zone, max_schedules)
VALUES ($1, $2, $3, $4, $5)
RETURNING app_key, name, time_zone, max_schedules, created_at;

-- name: list_apps
SELECT app_key, name, time_zone, max_schedules, created_at FROM apps ORDER BY created_at, app_key;

-- name: count_apps
SELECT count(*) FROM apps;

-- name: lock_app
-- Serializes the creates of one app, so its cap and its cids hold under concurrent creates.
SELECT max_schedules FROM apps WHERE app_key = $1 FOR UPDATE;

-- name: find_schedule_by_cid
SELECT id, name FROM schedules WHERE app_key = $1 AND cid = $2;

-- name: count_valid_schedules
SELECT count(*) FROM schedules WHERE app_key = $1 AND state = 'active' AND final_fire_at > $2;

-- name: insert_schedule
INSERT INTO schedules (id, app_key, name, enabled, trigger, push, cid, next_fire_at, final_fire_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9);

-- name: insert_skipped_runs
-- zone_type 2 waves already past when the task was created or updated: recorded, never sent.
INSERT INTO runs (id, schedule_id, due_at, utc_offset_minutes, state)
SELECT gen_random_uuid(), $1, wave.due_at, wave.utc_offset_minutes, 'skipped'
FROM unnest($2::timestamptz[], $3::integer[]) AS wave (due_at, utc_offset_minutes)
ON CONFLICT (schedule_id, due_at, utc_offset_minutes) DO NOTHING;

-- name: list_valid_schedules
-- One page of an app's valid tasks, oldest created first.
SELECT id, app_key, name, enabled, trigger, push, created_at, final_fire_at
FROM schedules
WHERE app_key = $1 AND state = 'active' AND final_fire_at > $2
ORDER BY created_at, id
LIMIT $3 OFFSET $4;

-- name: get_valid_schedule
SELECT id, app_key, name, enabled, trigger, push, created_at, final_fire_at
FROM schedules
WHERE id = $1 AND app_key = $2 AND state = 'active' AND final_fire_at > $3;

-- name: lock_schedule
-- The task an update is about, whatever its validity (an expired one answers 28100, not 404).
SELECT id, app_key, name, enabled, trigger, push, created_at, final_fire_at, state
FROM schedules
WHERE id = $1 AND app_key = $2 AND state <> 'deleted'
FOR UPDATE;

-- name: update_schedule
UPDATE schedules
SET name = $2, enabled = $3, trigger = $4, push = $5,
    next_fire_at = coalesce($6, next_fire_at), final_fire_at = coalesce($7, final_fire_at),
    updated_at = clock_timestamp()
WHERE id = $1
RETURNING id, app_key, name, enabled, trigger, push, created_at, final_fire_at;

-- name: delete_schedule
-- Soft delete: the row stays for its runs' history, but leaves every query of valid tasks and the engine's.
UPDATE schedules
SET state = 'deleted', next_fire_at = NULL, updated_at = clock_timestamp()
WHERE id = $1 AND app_key = $2 AND state = 'active' AND final_fire_at > $3
RETURNING id;

-- name: schedule_exists
-- msg-ids answers for valid and expired tasks alike, not for deleted or other apps' ones.
SELECT 1 FROM schedules WHERE id = $1 AND app_key = $2 AND state <> 'deleted';

-- name: sent_msg_ids
SELECT msg_id FROM runs WHERE schedule_id = $1 AND state = 'sent' ORDER BY sent_at, due_at, utc_offset_minutes;
