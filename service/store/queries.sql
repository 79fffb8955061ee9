-- Every statement the service runs, as named blocks (`-- name: X`); loaded once by service.store.queries.
-- Instants are passed in as $n rather than read with now(), so validation and queries agree on the clock.

-- name: get_app
-- One active app with the digest of its master secret, for authentication: a disabled or deleted app's
-- credentials open nothing.
SELECT app_key, name, time_zone, max_schedules, created_at, secret_sha256
FROM apps WHERE app_key = $1 AND app_is_active(state);

-- name: insert_app
INSERT INTO apps (app_key, name, secret_sha256, time_zone, max_schedules, push_key, push_secret_encrypted)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING app_key, name, time_zone, max_schedules, created_at;

-- name: list_apps
SELECT app_key, name, time_zone, max_schedules, created_at, state, push_key IS NOT NULL AS has_push_credentials
FROM apps ORDER BY created_at, app_key;

-- name: get_app_record
SELECT app_key, name, time_zone, max_schedules, created_at, state, push_key IS NOT NULL AS has_push_credentials
FROM apps WHERE app_key = $1;

-- name: lock_demo_app_creation
-- Replicas starting together on one empty database: one creates the demo app, the others wait for its commit
-- and then find an app. A transaction-level advisory lock, released on commit.
SELECT pg_advisory_xact_lock(hashtext('push-schedule-service: demo app'));

-- name: set_app_state
-- Disable, enable or delete an app and stop or wake its tasks, in one transaction (sql/0006 set_app_state).
SELECT set_app_state($1, $2, $3);

-- name: update_app
-- Change what was given, and tell every process to forget the app (sql/0006 update_app).
SELECT update_app($1, $2, $3, $4, $5, $6);

-- name: count_apps
SELECT count(*) FROM apps;

-- name: create_schedule
-- Lock the app, check cid and cap, insert, notify: one round trip (sql/0003_create_in_one_round_trip.sql;
-- its current form is sql/0011's, which counts only when the app's bound reaches its cap).
SELECT outcome, id, name, valid, cap
FROM create_schedule($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19);

-- name: count_listed_schedules
-- The total of a list: the app's valid tasks that pass the filters (sql/0008 schedule_is_listed), counted in the
-- same snapshot as the page. $3/$4 bound the name (byte-wise), $5 name=, $6 enabled=, $7 kind=.
SELECT count(*) FROM schedules
WHERE app_key = $1 AND schedule_is_listed(state, final_fire_at, name, enabled, kind, $2, $3, $4, $5, $6, $7);

-- One page of a list, in each order the API offers, ties broken by id in the same direction; the columns are
-- sql/0009's view, what the API reads of a task. Each reads its own index (sql/0008) from the app's first
-- entry, so page 1 costs the same at any table size; page N walks the N x 50 entries before it (OFFSET: the
-- v4 contract numbers pages). Parameters as count_listed_schedules, then $8 the page size and $9 the offset.
-- name: list_schedules_by_created
-- Oldest created first (the v4 order).
SELECT * FROM schedules_as_shown
WHERE app_key = $1 AND schedule_is_listed(state, final_fire_at, name, enabled, kind, $2, $3, $4, $5, $6, $7)
ORDER BY created_at, id
LIMIT $8 OFFSET $9;

-- name: list_schedules_by_created_desc
-- Newest created first.
SELECT * FROM schedules_as_shown
WHERE app_key = $1 AND schedule_is_listed(state, final_fire_at, name, enabled, kind, $2, $3, $4, $5, $6, $7)
ORDER BY created_at DESC, id DESC
LIMIT $8 OFFSET $9;

-- name: list_schedules_by_name
-- By name, byte-wise.
SELECT * FROM schedules_as_shown
WHERE app_key = $1 AND schedule_is_listed(state, final_fire_at, name, enabled, kind, $2, $3, $4, $5, $6, $7)
ORDER BY name COLLATE "C", id
LIMIT $8 OFFSET $9;

-- name: list_schedules_by_name_desc
-- By name, byte-wise, descending.
SELECT * FROM schedules_as_shown
WHERE app_key = $1 AND schedule_is_listed(state, final_fire_at, name, enabled, kind, $2, $3, $4, $5, $6, $7)
ORDER BY name COLLATE "C" DESC, id DESC
LIMIT $8 OFFSET $9;

-- name: list_schedules_by_next_run
-- Soonest next run first, no next run last.
SELECT * FROM schedules_as_shown
WHERE app_key = $1 AND schedule_is_listed(state, final_fire_at, name, enabled, kind, $2, $3, $4, $5, $6, $7)
ORDER BY next_run_at, id
LIMIT $8 OFFSET $9;

-- name: list_schedules_by_next_run_desc
-- No next run first, then the latest.
SELECT * FROM schedules_as_shown
WHERE app_key = $1 AND schedule_is_listed(state, final_fire_at, name, enabled, kind, $2, $3, $4, $5, $6, $7)
ORDER BY next_run_at DESC, id DESC
LIMIT $8 OFFSET $9;

-- name: list_schedules_by_last_run
-- Never run first, then the oldest last run.
SELECT * FROM schedules_as_shown
WHERE app_key = $1 AND schedule_is_listed(state, final_fire_at, name, enabled, kind, $2, $3, $4, $5, $6, $7)
ORDER BY last_run_due_at NULLS FIRST, id
LIMIT $8 OFFSET $9;

-- name: list_schedules_by_last_run_desc
-- Most recent last run first, never run last.
SELECT * FROM schedules_as_shown
WHERE app_key = $1 AND schedule_is_listed(state, final_fire_at, name, enabled, kind, $2, $3, $4, $5, $6, $7)
ORDER BY last_run_due_at DESC NULLS LAST, id DESC
LIMIT $8 OFFSET $9;

-- name: get_valid_schedule
SELECT * FROM schedules_as_shown
WHERE id = $1 AND app_key = $2 AND schedule_is_valid(state, final_fire_at, $3);

-- name: update_schedule
-- Write what the domain computed from the locked row, in one round trip (sql/0010 update_schedule).
SELECT * FROM update_schedule($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18);

-- name: delete_schedule
-- Soft delete and drop or cancel the runs still to go, in one round trip (sql/0005 delete_schedule).
SELECT delete_schedule($1, $2, $3);

-- name: lock_schedule
-- The task an update is about, whatever its validity (an expired one answers 28100, not 404).
SELECT *, schedule_is_valid(state, final_fire_at, $3) AS valid
FROM schedules_as_shown
WHERE id = $1 AND app_key = $2 AND state <> 'deleted'
FOR UPDATE;

-- name: schedule_exists
-- msg-ids answers for valid and expired tasks alike, not for deleted or other apps' ones.
SELECT 1 FROM schedules WHERE id = $1 AND app_key = $2 AND state <> 'deleted';

-- name: schedule_history_zone_type
-- The runs history answers for valid and expired tasks alike, as msg-ids does; its zone type says whether a
-- run's offset is a wave.
SELECT zone_type FROM schedules WHERE id = $1 AND app_key = $2 AND state <> 'deleted';

-- name: count_schedule_runs
-- Every run of one task: the unique key's index (schedule_id first).
SELECT count(*) FROM runs WHERE schedule_id = $1;

-- name: schedule_runs_page
-- One page of a task's runs, newest due first, then by wave (east first), then a triggered run's pushes by
-- parameter set (last first), on the unique key's index read backwards (sql/0010). A triggered push's source
-- is its triggered run's: one primary-key lookup per such row of the page.
SELECT r.id, r.due_at, r.utc_offset_minutes, r.state, r.attempts, r.dispatched_at, r.msg_id, r.error,
       r.trigger_id, r.trigger_item, coalesce(t.source, 'schedule') AS source
FROM runs r LEFT JOIN triggered_runs t ON t.id = r.trigger_id
WHERE r.schedule_id = $1
ORDER BY r.due_at DESC, r.utc_offset_minutes DESC, r.trigger_id DESC, r.trigger_item DESC
LIMIT $2 OFFSET $3;

-- name: trigger_run
-- A run a caller triggers: the Idempotency-Key's earlier run, a refusal by the webhook rate, or the run queued
-- and the engines woken, in one round trip (sql/0010 trigger_run).
SELECT outcome, run_id, retry_after FROM trigger_run($1, $2, $3, $4, $5::jsonb[], $6);

-- name: run_progress
-- Where a run stands: a triggered run's pushes ($1 its id), or one run of the history ($1 a run's id), of task
-- $2 of app $3 (not deleted). The two lookups are a UNION ALL, each on its own index (runs_trigger_idx, the
-- primary key): written as one OR beside `schedule_id = $2`, the planner read the task's every run through the
-- unique key instead (tests/integration/test_query_plans.py: 21,002 rows for a task with 20,000 runs and a run
-- of 1,000 pushes; now the run's 1,000 and its task's row). Errors and msg_ids in parameter-set order.
SELECT count(*) AS total,
       count(*) FILTER (WHERE r.state = 'sent') AS sent,
       count(*) FILTER (WHERE r.ended_unsent) AS failed,
       min(r.next_attempt_at) FILTER (WHERE r.state = 'pending') AS next_attempt_at,
       min(r.due_at) AS started_at,
       max(r.finished_at) AS finished_at,
       coalesce(array_agg(r.msg_id ORDER BY r.trigger_item) FILTER (WHERE r.state = 'sent'), '{}') AS msg_ids,
       coalesce(array_agg(coalesce(r.trigger_item, 0) ORDER BY r.trigger_item)
                FILTER (WHERE r.ended_unsent), '{}') AS error_sets,
       coalesce(array_agg(coalesce(r.error, r.state) ORDER BY r.trigger_item)
                FILTER (WHERE r.ended_unsent), '{}') AS errors,
       (SELECT t.source FROM triggered_runs t WHERE t.id = (array_agg(r.trigger_id))[1]) AS source
FROM (
    -- A push that ended without being sent, named once for the three aggregates that count or list them.
    SELECT u.*, u.state IN ('failed', 'missed', 'skipped', 'cancelled') AS ended_unsent
    FROM (SELECT * FROM runs WHERE trigger_id = $1 UNION ALL SELECT * FROM runs WHERE id = $1) AS u
) AS r
JOIN schedules s ON s.id = r.schedule_id
WHERE r.schedule_id = $2 AND s.app_key = $3 AND s.state <> 'deleted';

-- name: set_webhook
-- Create or rotate a valid task's webhook: the new token's digest replaces the old one, which stops at once.
UPDATE schedules SET webhook_digest = $3, webhook_created_at = clock_timestamp()
WHERE id = $1 AND app_key = $2 AND schedule_is_valid(state, final_fire_at, $4)
RETURNING webhook_created_at;

-- name: clear_webhook
-- Revoke a valid task's webhook (a task without one is left as it is).
UPDATE schedules SET webhook_digest = NULL, webhook_created_at = NULL
WHERE id = $1 AND app_key = $2 AND schedule_is_valid(state, final_fire_at, $3)
RETURNING id;

-- name: find_webhook
-- The task a webhook token's digest opens (schedules_webhook_idx), unless deleted, with what the call decides
-- by: enabled, valid, its app active, its push and parameters.
SELECT s.id, s.app_key, s.enabled, schedule_is_valid(s.state, s.final_fire_at, $2) AS valid,
       app_is_active(a.state) AS app_active, s.push, s.params, s.webhook_digest
FROM schedules s JOIN apps a ON a.app_key = s.app_key
WHERE s.webhook_digest = $1 AND s.state <> 'deleted';

-- name: sent_msg_ids
SELECT msg_id FROM runs WHERE schedule_id = $1 AND state = 'sent' ORDER BY sent_at, due_at, utc_offset_minutes;

-- name: count_sends_in_flight
-- Sends of one task that a sender holds right now (their lease still runs, by the database's clock as every
-- lease is).
SELECT count(*) FROM runs WHERE schedule_id = $1 AND state = 'sending' AND lease_until > clock_timestamp();

-- name: count_app_sends_in_flight
-- Sends of one app's tasks that a sender holds right now (as count_sends_in_flight). An admin command's query:
-- runs_sending_idx finds the few runs in flight, each joined to its task.
SELECT count(*) FROM runs r JOIN schedules s ON s.id = r.schedule_id
WHERE s.app_key = $1 AND r.state = 'sending' AND r.lease_until > clock_timestamp();

-- The engine's statements. Every instant they decide by is clock_timestamp(): the database's clock, the one
-- every replica shares (a replica whose own clock runs fast can neither take over runs early nor plan early).
-- The rules themselves (valid, too late, how a fire becomes a run) are SQL functions of sql/0005.

-- name: plan_single_fires
-- Plan step for single zone_type 1 tasks in one round trip (sql/0005 plan_single_fires); plan_due does the rest.
SELECT * FROM plan_single_fires($1::interval, $2, $3::interval, $4::interval, $5::interval, $6, $7);

-- name: lock_due_schedules
-- Plan step for every other task: the due tasks no other replica is planning right now, with what planning
-- and sending them needs, and the database's instant the plan is computed for. The due scans want the partial
-- due index in next_fire_at order, stopping at the batch size; right after a bulk of creates, before
-- autovacuum's ANALYZE, the planner guessed few due rows and picked a bitmap scan that reads and sorts every due
-- row (100k due: 10.6 s instead of 4.3 s to plan them all, quadratic in the backlog): the plan transaction runs
-- prefer_ordered_index_scans first.
-- The bound is a scalar subquery (an InitPlan, computed once), so it is the index scan's condition: compared
-- as a join filter with the clock's row, it let the scan walk every stored task whenever fewer than the batch
-- were due (EXPLAIN ANALYZE, 300k tasks due tomorrow, none now: 260 ms and 300,000 rows removed by the
-- filter, on every plan step; 1M stored: 1.2 s in bench.scale. With the InitPlan: an Index Cond, 0.05 ms).
WITH clock AS MATERIALIZED (SELECT clock_timestamp() AS now)
SELECT s.id, s.app_key, s.trigger, s.push, s.zone_type, s.next_fire_at, s.time_zone, a.push_key,
       a.push_secret_encrypted, s.params, clock.now
FROM clock, schedules s JOIN apps a ON a.app_key = s.app_key
WHERE s.enabled AND s.state = 'active' AND s.next_fire_at <= (SELECT c.now FROM clock c) + $1::interval
ORDER BY s.next_fire_at
LIMIT $2
FOR UPDATE OF s SKIP LOCKED;

-- name: prefer_ordered_index_scans
-- See lock_due_schedules: for the plan transaction only.
SET LOCAL enable_bitmapscan = off;

-- name: insert_runs
-- The fires of the locked tasks become runs ('planned', 'sending' or 'missed'), by the one rule of sql/0005.
SELECT * FROM insert_runs($1::uuid[], $2::timestamptz[], $3::integer[], $4::boolean[], $5, $6::interval, $7::interval,
                          $8::interval, $9, $10);

-- name: advance_schedules
-- After planning: the next fire to plan (NULL once every fire is planned: the sweep expires the task after its
-- last fire), or, for a task the engine could not plan, stopped at once with the reason kept.
UPDATE schedules s
SET next_fire_at = advanced.next_fire_at,
    state = CASE WHEN advanced.stopped_reason IS NULL THEN s.state ELSE 'expired' END,
    stopped_reason = coalesce(advanced.stopped_reason, s.stopped_reason),
    updated_at = CASE WHEN advanced.stopped_reason IS NULL THEN s.updated_at ELSE clock_timestamp() END
FROM unnest($1::uuid[], $2::timestamptz[], $3::text[]) AS advanced (id, next_fire_at, stopped_reason)
WHERE s.id = advanced.id;

-- name: claim_planned_runs
-- At their instant: the runs this engine planned, leased for sending (the lease counted from now), unless a
-- change to their task dropped them or another engine took them over meanwhile. The caller asks for no more
-- than it has places at its sender. $3 names the claim: asked again after its answer was lost (a connection
-- cut after the commit), the runs it leased come back, not attempted again.
WITH clock AS MATERIALIZED (SELECT clock_timestamp() AS now)
UPDATE runs SET state = 'sending', attempts = attempts + CASE WHEN state = 'planned' THEN 1 ELSE 0 END,
                lease_until = clock.now + $2::interval, dispatched_at = coalesce(dispatched_at, clock.now),
                claim_token = $3
FROM clock
WHERE id = ANY($1::uuid[]) AND (state = 'planned' OR (state = 'sending' AND claim_token = $3))
RETURNING id, attempts;

-- name: release_planned_runs
-- Shutdown: planned runs this engine will not send; any engine takes them over at their due instant.
UPDATE runs SET lease_until = due_at WHERE id = ANY($1::uuid[]) AND state = 'planned';

-- name: reclaim_runs
-- The runs a plan or claim leased under token $1 whose answer was lost (a connection cut after its commit),
-- with what sending them needs.
SELECT r.id, r.schedule_id, r.due_at, r.utc_offset_minutes, r.attempts, s.app_key, s.push, s.zone_type,
       a.push_key, a.push_secret_encrypted, r.trigger_id, r.params AS run_params, s.params
FROM runs r JOIN schedules s ON s.id = r.schedule_id JOIN apps a ON a.app_key = s.app_key
WHERE r.state = 'sending' AND r.claim_token = $1;

-- name: claim_due_runs
-- Retries, expired leases and expired reservations, settled or leased (sql/0005 claim_due_runs).
SELECT * FROM claim_due_runs($1, $2::interval, $3::interval, $4, $5);

-- name: record_run_results
-- Outcomes of a batch of sends, each fenced on the attempt that produced it (a holder whose lease ran out and
-- whose run was claimed again or settled meanwhile changes nothing), and their tasks' last run, count of
-- consecutive failures and max_failures, in one round trip (sql/0008 record_run_results). Returns the tasks
-- that reached their max_failures and were disabled.
-- A retry's instant is its delay counted on the database's clock from this write, which comes after the answer:
-- counted from the process's estimate of that clock, an estimate off by a few tens of ms under load sent
-- retries after a 429 that much before the Retry-After had passed (tests/faults, push-faults).
SELECT * FROM record_run_results($1::uuid[], $2::integer[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
                                 $7::timestamptz[], $8::jsonb[]);

-- name: release_runs
-- Shutdown: hand unfinished sends back at once instead of waiting for their lease to run out; never before
-- their due instant (a run claimed just ahead of it may be handed back). Fenced on the attempt, as results are.
UPDATE runs r SET state = 'pending', next_attempt_at = greatest(clock_timestamp(), r.due_at), lease_until = NULL
FROM unnest($1::uuid[], $2::integer[]) AS held (id, attempts)
WHERE r.id = held.id AND r.state = 'sending' AND r.attempts = held.attempts;

-- name: next_plan_wake
-- The earliest instant the planner has work ($1 before the next fire to plan), and the database's instant now,
-- so the engine sleeps by the database's clock.
SELECT (SELECT min(next_fire_at) FROM schedules WHERE enabled AND state = 'active' AND next_fire_at IS NOT NULL)
           - $1::interval AS wake_at,
       clock_timestamp() AS now;

-- name: next_claim_wake
-- The earliest instant claim_due_runs has work (a retry, a lease or a reservation to take over), and the
-- database's instant now.
SELECT least(
    (SELECT min(next_attempt_at) FROM runs WHERE state = 'pending'),
    (SELECT min(lease_until) FROM runs WHERE state = 'sending'),
    (SELECT min(lease_until) FROM runs WHERE state = 'planned')
) AS wake_at, clock_timestamp() AS now;

-- name: database_clock
-- The database's instant, to measure this process's clock against it.
SELECT clock_timestamp();

-- name: expire_lapsed_schedules
-- Tasks whose last fire has passed, out of the hot indexes: those disabled meanwhile (expired unfired), and
-- those whose every fire was planned (not those whose next fire is parked while their app is disabled: once
-- enabled, that fire follows the misfire rule). Bounded: each run of the sweep takes at most 1,000 of each.
-- updated_at marks the expiry, from which the task's retention counts (sql/0007 schedule_ended_at).
UPDATE schedules SET state = 'expired', next_fire_at = NULL, updated_at = clock_timestamp()
WHERE id IN (
    (SELECT id FROM schedules WHERE state = 'active' AND NOT enabled AND final_fire_at <= clock_timestamp() LIMIT 1000)
    UNION
    (SELECT id FROM schedules WHERE state = 'active' AND next_fire_at IS NULL AND parked_fire_at IS NULL
     AND final_fire_at <= clock_timestamp() LIMIT 1000)
);

-- name: purge_ended_schedules
-- Retention: one batch of tasks deleted or expired before the cutoff, with their runs (sql/0007
-- purge_ended_schedules). The cutoff is read from the database's clock once per statement.
SELECT schedules, runs FROM purge_ended_schedules(clock_timestamp() - $1::interval, $2, $3);

-- name: purge_old_runs
-- Retention: one batch of runs in a final state created and ended before the cutoff, oldest first. The
-- cutoff is an InitPlan, computed once, so it bounds the scan of runs_finished_created_idx (sql/0007) instead
-- of filtering every entry (clock_timestamp() is volatile: compared row by row it is no index condition).
-- Rows are deleted by ctid (a Tid Scan each), not by id, which would search the primary key again. EXPLAIN
-- ANALYZE on 3M runs, 1M of them old: Index Scan on runs_finished_created_idx, then Tid Scan; 2,000 rows in
-- 13 ms; nothing to purge: 3 buffers, 0.03 ms.
-- No FOR UPDATE: no engine statement writes or locks a run in a final state, so the delete can wait only on
-- another replica's purge of the same rows (one short transaction, after which it finds them gone and its
-- sweep ends), while a row lock per run would double the purge's WAL (EXPLAIN (ANALYZE, WAL), 2,000 rows:
-- 4,041 records, 514 kB with FOR UPDATE SKIP LOCKED; 2,041 records, 406 kB without; 7-9 ms either way).
WITH doomed AS (
    SELECT ctid FROM runs
    WHERE state IN ('sent', 'failed', 'missed', 'skipped', 'cancelled')
      AND created_at < (SELECT clock_timestamp() - $1::interval)
      AND coalesce(finished_at, due_at) < (SELECT clock_timestamp() - $1::interval)
    ORDER BY created_at
    LIMIT $2
)
DELETE FROM runs r USING doomed WHERE r.ctid = doomed.ctid;

-- name: purge_old_triggers
-- Retention: triggered runs created before the cutoff whose pushes purge_old_runs has taken, oldest first
-- (triggered_runs_created_idx, bounded by an InitPlan as purge_old_runs is); the NOT EXISTS probes
-- runs_trigger_idx. Their status URL answers 404 from then on.
WITH doomed AS (
    SELECT t.id FROM triggered_runs t
    WHERE t.created_at < (SELECT clock_timestamp() - $1::interval)
      AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.trigger_id = t.id)
    ORDER BY t.created_at
    LIMIT $2
)
DELETE FROM triggered_runs t USING doomed WHERE t.id = doomed.id;

-- name: purge_deleted_apps
-- Retention: apps deleted (sql/0006 set_app_state) before the cutoff once the task purge has taken every one of
-- their tasks. Deleted apps are few and an admin's doing: the EXISTS probes the unique index (app_key, cid).
-- Their keys can never come back: a new app's key is 12 random bytes.
DELETE FROM apps a
WHERE a.state = 'deleted' AND a.state_changed_at < clock_timestamp() - $1::interval
  AND NOT EXISTS (SELECT 1 FROM schedules s WHERE s.app_key = a.app_key);

-- name: count_due_backlog
-- /metrics: work due now and not done (fires to plan, retries due, expired leases). Each count rides its
-- partial index and stops at $2 rows, so a scrape costs the same during a million-row backlog as when idle
-- (the gauge then reads $2: "at least this many"). The instant is a scalar subquery (an InitPlan), so it bounds
-- each index scan: compared as clock_timestamp(), volatile, row by row, it filtered every stored task (300k
-- tasks none due: 300,000 rows removed, 15 ms a scrape).
SELECT
    (SELECT count(*) FROM (SELECT 1 FROM schedules
     WHERE enabled AND state = 'active' AND next_fire_at IS NOT NULL AND next_fire_at <= (SELECT clock_timestamp())
     LIMIT $1) AS due) AS fires,
    (SELECT count(*) FROM (SELECT 1 FROM runs
     WHERE state = 'pending' AND next_attempt_at <= (SELECT clock_timestamp()) LIMIT $1) AS due) AS retries,
    (SELECT count(*) FROM (SELECT 1 FROM runs
     WHERE state IN ('sending', 'planned') AND lease_until < (SELECT clock_timestamp()) LIMIT $1) AS due) AS expired_leases;

-- name: push_secrets_sample
-- Start-up: a few stored push secrets, to check that PUSH_CREDENTIALS_KEY decrypts them before serving.
SELECT app_key, push_secret_encrypted FROM apps WHERE push_secret_encrypted IS NOT NULL LIMIT 20;

-- name: connection_room
-- Start-up of `serve --workers N`: how many more connections the server takes from a client like this one.
-- max_connections less the slots kept for superusers (and, from PostgreSQL 16, for pg_use_reserved_connections:
-- current_setting(..., true) is NULL before 16) less the client connections open now, this one included.
-- The reserved slots are left out even when this role is a superuser (the embedded server's is, and could use
-- them: measured, its 101st connection is refused, not its 98th): they stay free for an operator's psql.
-- pg_stat_activity lists every backend to any role (the query text is what it hides).
SELECT current_setting('max_connections')::integer
       - current_setting('superuser_reserved_connections')::integer
       - coalesce(current_setting('reserved_connections', true)::integer, 0)
       - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::integer
       + 1 AS room;
