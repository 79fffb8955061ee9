-- Every statement the service runs, as named blocks (`-- name: X`); loaded once by service.store.queries.
-- Instants are passed in as $n rather than read with now(), so validation and queries agree on the clock.

-- name: get_app
-- One app with the digest of its master secret, for authentication.
SELECT app_key, name, time_zone, max_schedules, created_at, secret_sha256
FROM apps WHERE app_key = $1;

-- name: insert_app
INSERT INTO apps (app_key, name, secret_sha256, time_zone, max_schedules, push_key, push_secret_encrypted)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING app_key, name, time_zone, max_schedules, created_at;

-- name: list_apps
SELECT app_key, name, time_zone, max_schedules, created_at FROM apps ORDER BY created_at, app_key;

-- name: count_apps
SELECT count(*) FROM apps;

-- name: create_schedule
-- Lock the app, check cid and cap, insert, notify: one round trip (sql/0003_create_in_one_round_trip.sql).
SELECT outcome, id, name, valid, cap FROM create_schedule($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13);

-- name: count_valid_schedules
SELECT count(*) FROM schedules WHERE app_key = $1 AND state = 'active' AND final_fire_at > $2;

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

-- name: notify_schedule_change
-- Wakes every replica's engine (on commit) when a task's next fire may be earlier than it planned for.
SELECT pg_notify('schedule_changes', $1::text);

-- name: drop_planned_runs
-- A task changed, was disabled or deleted: the runs planned ahead from its old values go (never attempted,
-- so no history is lost); the engine holding them finds them gone when it claims them.
DELETE FROM runs WHERE schedule_id = $1 AND state = 'planned' RETURNING due_at;

-- name: cancel_open_runs
-- A deleted or disabled task stops at once: its queued retries never go out.
UPDATE runs SET state = 'cancelled', finished_at = $2, lease_until = NULL
WHERE schedule_id = $1 AND state = 'pending';

-- name: count_sends_in_flight
-- Sends of one task that a sender holds right now (their lease still runs).
SELECT count(*) FROM runs WHERE schedule_id = $1 AND state = 'sending' AND lease_until > $2;

-- name: prefer_ordered_index_scans
-- The due scans want the partial due index in next_fire_at order, stopping at the batch size. Right after a
-- bulk of creates, before autovacuum's ANALYZE has run, the planner guesses few due rows and picks a bitmap
-- scan that reads and sorts every due row instead (100k due: 10.6 s instead of 4.3 s to plan them all, and
-- quadratic in the backlog). For the plan transaction only, rule that out.
SET LOCAL enable_bitmapscan = off;

-- name: plan_due_single_fires
-- Plan step, the common case in one statement: a single trigger in the app's time zone fires once, at its
-- next_fire_at, and then has nothing left. No trigger to evaluate, so no row comes back to be planned: lock
-- (SKIP LOCKED), advance, insert the run and return what sending needs, at once. The states follow
-- service.domain.dispatch.plan_due: later than $1 minus the grace $6 is missed, due by $3 (now) is leased
-- for sending, later is planned (reserved until due + $5).
WITH due AS (
    SELECT id, next_fire_at FROM schedules
    WHERE enabled AND state = 'active' AND next_fire_at <= $1
      AND trigger ? 'single' AND coalesce(trigger -> 'single' ->> 'zone_type', '1') = '1'
    ORDER BY next_fire_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), advanced AS (
    UPDATE schedules s
    SET next_fire_at = NULL,
        state = CASE WHEN s.final_fire_at <= $3 THEN 'expired' ELSE s.state END
    FROM due
    WHERE s.id = due.id
    RETURNING gen_random_uuid() AS run_id, s.id, s.app_key, s.push, due.next_fire_at AS due_at,
              CASE WHEN due.next_fire_at < $3::timestamptz - $6::interval THEN 'missed'
                   WHEN due.next_fire_at <= $3 THEN 'sending'
                   ELSE 'planned' END AS state
), inserted AS (
    INSERT INTO runs (id, schedule_id, due_at, utc_offset_minutes, state, attempts, lease_until, dispatched_at, finished_at)
    SELECT a.run_id, a.id, a.due_at, 0, a.state,
           CASE WHEN a.state = 'sending' THEN 1 ELSE 0 END,
           CASE WHEN a.state = 'sending' THEN $4::timestamptz
                WHEN a.state = 'planned' THEN a.due_at + $5::interval END,
           CASE WHEN a.state = 'sending' THEN $3::timestamptz END,
           CASE WHEN a.state = 'missed' THEN $3::timestamptz END
    FROM advanced a
    ON CONFLICT (schedule_id, due_at, utc_offset_minutes) DO NOTHING
    RETURNING id
)
-- `IN (SELECT ...)` in the output is a hashed lookup whatever the row estimates; joining the two CTEs was a
-- nested loop (500 x 500) whenever the statistics were stale.
SELECT a.run_id AS id, a.id AS schedule_id, a.due_at, 0 AS utc_offset_minutes, a.state,
       CASE WHEN a.state = 'sending' THEN 1 ELSE 0 END AS attempts,
       a.app_key, a.push, ap.push_key, ap.push_secret_encrypted,
       a.run_id IN (SELECT id FROM inserted) AS inserted
FROM advanced a JOIN apps ap ON ap.app_key = a.app_key;

-- name: lock_due_schedules
-- Plan step: the due tasks no other replica is planning right now, with what sending them needs.
SELECT s.id, s.app_key, s.trigger, s.push, s.next_fire_at, a.time_zone, a.push_key, a.push_secret_encrypted
FROM schedules s JOIN apps a ON a.app_key = s.app_key
WHERE s.enabled AND s.state = 'active' AND s.next_fire_at <= $1
ORDER BY s.next_fire_at
LIMIT $2
FOR UPDATE OF s SKIP LOCKED;

-- name: insert_planned_runs
-- One row per fire or wave; the unique key makes planning the same occurrence twice impossible.
-- Runs to send now are inserted already leased to this sender ('sending'), saving a claim round trip; runs
-- due later are 'planned', reserved to this engine until their due instant plus $7.
INSERT INTO runs (id, schedule_id, due_at, utc_offset_minutes, state, attempts, lease_until, dispatched_at, finished_at)
SELECT gen_random_uuid(), planned.schedule_id, planned.due_at, planned.utc_offset_minutes, planned.state,
       CASE WHEN planned.state = 'sending' THEN 1 ELSE 0 END,
       CASE WHEN planned.state = 'sending' THEN $6::timestamptz
            WHEN planned.state = 'planned' THEN planned.due_at + $7::interval END,
       CASE WHEN planned.state = 'sending' THEN $5::timestamptz END,
       CASE WHEN planned.state = 'missed' THEN $5::timestamptz END
FROM unnest($1::uuid[], $2::timestamptz[], $3::integer[], $4::text[])
     AS planned (schedule_id, due_at, utc_offset_minutes, state)
ON CONFLICT (schedule_id, due_at, utc_offset_minutes) DO NOTHING
RETURNING id, schedule_id, due_at, utc_offset_minutes, state, attempts;

-- name: advance_schedules
-- After planning: the next fire to plan; expired once everything is planned and the last fire has come
-- (a task planned ahead stays valid until then, and the sweep expires it).
UPDATE schedules s
SET next_fire_at = advanced.next_fire_at,
    state = CASE WHEN advanced.next_fire_at IS NULL AND s.final_fire_at <= $3 THEN 'expired' ELSE s.state END
FROM unnest($1::uuid[], $2::timestamptz[]) AS advanced (id, next_fire_at)
WHERE s.id = advanced.id;

-- name: claim_planned_runs
-- Just before their due instant: the runs this engine planned ahead, leased for sending, unless a change to
-- their task dropped them or another engine took them over meanwhile.
UPDATE runs SET state = 'sending', attempts = attempts + 1, lease_until = $2, dispatched_at = $3
WHERE id = ANY($1::uuid[]) AND state = 'planned'
RETURNING id;

-- name: release_planned_runs
-- Shutdown: planned runs this engine will not send; any engine takes them over at their due instant.
UPDATE runs SET lease_until = due_at WHERE id = ANY($1::uuid[]) AND state = 'planned';

-- name: claim_retry_runs
-- Retries that are due, sends whose sender died (lease ran out) and planned runs whose planner did not claim
-- them in time, leased to this sender, with what sending them needs. A run whose task was deleted or
-- disabled meanwhile comes back as not wanted.
WITH claimed AS (
    UPDATE runs r
    SET state = 'sending', lease_until = $3, attempts = r.attempts + 1,
        dispatched_at = coalesce(r.dispatched_at, $1)
    FROM (
        SELECT id FROM runs
        WHERE (state = 'pending' AND next_attempt_at <= $1)
           OR (state = 'sending' AND lease_until < $1)
           OR (state = 'planned' AND lease_until < $1)
        ORDER BY coalesce(next_attempt_at, lease_until)
        LIMIT $2
        FOR UPDATE SKIP LOCKED
    ) due
    WHERE r.id = due.id
    RETURNING r.id, r.schedule_id, r.due_at, r.utc_offset_minutes, r.attempts
)
SELECT claimed.*, s.app_key, s.push, a.push_key, a.push_secret_encrypted,
       (s.state <> 'deleted' AND s.enabled) AS still_wanted,
       coalesce(s.trigger -> 'single', s.trigger -> 'periodical') ->> 'zone_type' = '2' AS is_wave
FROM claimed JOIN schedules s ON s.id = claimed.schedule_id JOIN apps a ON a.app_key = s.app_key;

-- name: record_run_results
-- Outcomes of a batch of sends. A run already recorded as sent (by a replica that took over an expired
-- lease) keeps its first msg_id.
UPDATE runs r
SET state = result.state,
    msg_id = coalesce(result.msg_id, r.msg_id),
    error = result.error,
    next_attempt_at = result.next_attempt_at,
    lease_until = NULL,
    sent_at = CASE WHEN result.state = 'sent' THEN result.finished_at ELSE r.sent_at END,
    finished_at = CASE WHEN result.state IN ('sent', 'failed', 'cancelled') THEN result.finished_at END,
    payload = coalesce(result.payload, r.payload)
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[], $7::jsonb[])
     AS result (id, state, msg_id, error, next_attempt_at, finished_at, payload)
WHERE r.id = result.id AND r.state <> 'sent';

-- name: release_runs
-- Shutdown: hand unfinished sends back at once instead of waiting for their lease to run out.
-- Never before its due instant (a run claimed just ahead of it may be handed back).
UPDATE runs SET state = 'pending', next_attempt_at = greatest($2, due_at), lease_until = NULL
WHERE id = ANY($1::uuid[]) AND state = 'sending';

-- name: next_wake
-- The earliest instant the engine has work: a fire to plan ($1 ahead of it), a retry, or a lease or
-- reservation to take over.
SELECT least(
    (SELECT min(next_fire_at) FROM schedules WHERE enabled AND state = 'active' AND next_fire_at IS NOT NULL)
        - $1::interval,
    (SELECT min(next_attempt_at) FROM runs WHERE state = 'pending'),
    (SELECT min(lease_until) FROM runs WHERE state = 'sending'),
    (SELECT min(lease_until) FROM runs WHERE state = 'planned')
);

-- name: expire_lapsed_schedules
-- Tasks whose last fire has passed, out of the hot indexes: those disabled meanwhile (expired unfired), and
-- those whose every fire was planned ahead.
UPDATE schedules SET state = 'expired', next_fire_at = NULL
WHERE id IN (
    (SELECT id FROM schedules WHERE state = 'active' AND NOT enabled AND final_fire_at <= $1 LIMIT 1000)
    UNION
    (SELECT id FROM schedules WHERE state = 'active' AND next_fire_at IS NULL AND final_fire_at <= $1 LIMIT 1000)
);

-- name: count_due_backlog
-- /metrics: work due now and not done (fires to plan, retries due, expired leases); each count rides its
-- partial index.
SELECT
    (SELECT count(*) FROM schedules
     WHERE enabled AND state = 'active' AND next_fire_at IS NOT NULL AND next_fire_at <= $1) AS fires,
    (SELECT count(*) FROM runs WHERE state = 'pending' AND next_attempt_at <= $1) AS retries,
    (SELECT count(*) FROM runs WHERE state = 'sending' AND lease_until < $1)
        + (SELECT count(*) FROM runs WHERE state = 'planned' AND lease_until < $1) AS expired_leases;
