-- Issue 13: runs a caller triggers (run now, webhooks), parameters a push may use, and webhook tokens.
--
-- A triggered run is one row of triggered_runs (what the caller polls) and one run per parameter set (one
-- push each), queued as 'pending' retries due at once: the engine sends them through the path every retry
-- takes (claim_due_runs), so leases, fencing, retries and the misfire rule hold for them unchanged, and the
-- hot path of scheduled fires gains nothing but NULL columns.

-- Parameters: names and default strings a task's push may use as {{name}} (service.domain.params); NULL: none.
-- A webhook: the SHA-256 digest of its token (the token itself is never stored) and when it was made.
ALTER TABLE schedules
    ADD COLUMN params jsonb,
    ADD COLUMN webhook_digest bytea,
    ADD COLUMN webhook_created_at timestamptz;
-- A webhook call finds its task by the token's digest. A digest of 256 random bits cannot collide.
CREATE UNIQUE INDEX schedules_webhook_idx ON schedules (webhook_digest) WHERE webhook_digest IS NOT NULL;

-- One row per triggered run: what the caller polls, with what the rate limit and Idempotency-Key read.
CREATE TABLE triggered_runs (
    id               uuid PRIMARY KEY,
    schedule_id      uuid NOT NULL REFERENCES schedules (id),
    source           text NOT NULL CONSTRAINT triggered_runs_source_check CHECK (source IN ('run_now', 'webhook')),
    total            integer NOT NULL,
    idempotency_key  text,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- The rate limit's window (a task's webhook calls in the last minute) and the retention's purge by age.
CREATE INDEX triggered_runs_schedule_created_idx ON triggered_runs (schedule_id, created_at);
CREATE INDEX triggered_runs_created_idx ON triggered_runs (created_at);
-- A retried request with an Idempotency-Key finds the run it made.
CREATE INDEX triggered_runs_idempotency_idx ON triggered_runs (schedule_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- A run a caller triggered: which triggered run, which parameter set (0-based) and the values the caller gave
-- for it (the task's defaults fill in the rest when it is sent, service.domain.params.effective). All NULL
-- for a scheduled fire.
ALTER TABLE runs
    ADD COLUMN trigger_id uuid REFERENCES triggered_runs (id),
    ADD COLUMN trigger_item integer,
    ADD COLUMN params jsonb,
    ADD CONSTRAINT runs_trigger_item_check CHECK ((trigger_id IS NULL) = (trigger_item IS NULL));
-- A triggered run's pushes, for its status (and the foreign key's checks when one is purged). Partial: a
-- scheduled fire's run adds no entry.
CREATE INDEX runs_trigger_idx ON runs (trigger_id, trigger_item) WHERE trigger_id IS NOT NULL;

-- The unique key still allows one run per fire and wave of a task (trigger_id and trigger_item NULL, and NULLs
-- compared as equal: PostgreSQL 15), and one per parameter set of a triggered run, whose pushes share their
-- task, instant and offset. Same name, so insert_runs' ON CONFLICT ON CONSTRAINT is unchanged; the history's
-- order (due_at, offset, then the triggered run and its set) is still this index read backwards. A scheduled
-- run's entry is no wider: NULL columns take no space in an index tuple.
ALTER TABLE runs DROP CONSTRAINT runs_schedule_due_wave_key;
ALTER TABLE runs ADD CONSTRAINT runs_schedule_due_wave_key
    UNIQUE NULLS NOT DISTINCT (schedule_id, due_at, utc_offset_minutes, trigger_id, trigger_item);

-- record_skipped_waves (sql/0005) named the key by its columns, which no longer match it: by its name now.
CREATE OR REPLACE FUNCTION record_skipped_waves(p_schedule_id uuid, p_due_at timestamptz[], p_offsets integer[])
RETURNS void LANGUAGE sql VOLATILE AS $$
    INSERT INTO runs (id, schedule_id, due_at, utc_offset_minutes, state)
    SELECT gen_random_uuid(), p_schedule_id, wave.due_at, wave.utc_offset_minutes, 'skipped'
    FROM unnest(p_due_at, p_offsets) AS wave (due_at, utc_offset_minutes)
    ON CONFLICT ON CONSTRAINT runs_schedule_due_wave_key DO NOTHING
$$;

-- Whether a leased run is still to be sent: its task not deleted, its app active, and, for a scheduled fire,
-- its task enabled. A run a caller triggered goes out on a disabled task too: run now works on one, and a
-- webhook checked the task when it was called. The claim of every retry and taken-over run decides by this.
CREATE FUNCTION run_is_wanted(p_schedule_state text, p_enabled boolean, p_app_state text, p_triggered boolean)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT p_schedule_state <> 'deleted' AND (p_enabled OR p_triggered) AND app_is_active(p_app_state)
$$;

-- Runs a change to a task makes obsolete (sql/0005), now sparing the runs a caller triggered when the task is
-- only disabled (a PUT, or max_failures reached): those were asked for explicitly, and run now works on a
-- disabled task. Deleting the task cancels them too. The task's state is read as the caller's transaction sees
-- it: delete_schedule marks it deleted before calling this.
CREATE OR REPLACE FUNCTION drop_obsolete_runs(p_schedule_id uuid, p_cancel_open boolean, p_now timestamptz)
RETURNS timestamptz LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_earliest timestamptz;
    v_deleted boolean;
BEGIN
    WITH dropped AS (DELETE FROM runs WHERE schedule_id = p_schedule_id AND state = 'planned' RETURNING due_at)
    SELECT min(due_at) INTO v_earliest FROM dropped;
    IF p_cancel_open THEN
        SELECT s.state = 'deleted' INTO v_deleted FROM schedules s WHERE s.id = p_schedule_id;
        UPDATE runs SET state = 'cancelled', finished_at = p_now, lease_until = NULL
        WHERE schedule_id = p_schedule_id AND state = 'pending' AND (trigger_id IS NULL OR v_deleted);
    END IF;
    RETURN v_earliest;
END;
$$;

-- plan_single_fires (sql/0005) again, also returning the task's parameters, which its push is sent with.
DROP FUNCTION plan_single_fires(interval, integer, interval, interval, interval, integer, uuid);
CREATE FUNCTION plan_single_fires(
    p_ahead interval, p_limit integer, p_grace interval, p_reservation interval, p_lease interval,
    p_lease_count integer, p_token uuid
)
RETURNS TABLE (
    id uuid, schedule_id uuid, due_at timestamptz, utc_offset_minutes integer, state text, attempts integer,
    error text,
    app_key text, push jsonb, zone_type smallint, push_key text, push_secret_encrypted bytea, planned_at timestamptz,
    params jsonb
)
LANGUAGE plpgsql VOLATILE SET enable_bitmapscan = off AS $$
DECLARE
    v_now timestamptz := clock_timestamp();
    v_ids uuid[];
    v_due timestamptz[];
BEGIN
    WITH due AS (
        SELECT s.id, s.next_fire_at FROM schedules s
        WHERE s.enabled AND s.state = 'active' AND s.next_fire_at <= v_now + p_ahead
          AND s.kind = 'single' AND s.zone_type = 1
        ORDER BY s.next_fire_at
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ), advanced AS (
        UPDATE schedules s SET next_fire_at = NULL FROM due WHERE s.id = due.id
        RETURNING s.id, due.next_fire_at
    )
    SELECT array_agg(advanced.id), array_agg(advanced.next_fire_at) INTO v_ids, v_due FROM advanced;
    IF v_ids IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT run.id, run.schedule_id, run.due_at, run.utc_offset_minutes, run.state, run.attempts, run.error,
           s.app_key, s.push, s.zone_type, a.push_key, a.push_secret_encrypted, v_now, s.params
    FROM insert_runs(v_ids, v_due, array_fill(0, ARRAY[cardinality(v_ids)]),
                     array_fill(false, ARRAY[cardinality(v_ids)]), v_now, p_grace, p_reservation,
                     p_lease, p_lease_count, p_token) AS run
    JOIN schedules s ON s.id = run.schedule_id
    JOIN apps a ON a.app_key = s.app_key;
END;
$$;

-- claim_due_runs (sql/0006) again: whether a run is still wanted is run_is_wanted's rule, and each run comes
-- back with what sending it needs of a triggered run (which one, the caller's values) and the task's parameters.
DROP FUNCTION claim_due_runs(integer, interval, interval, integer, uuid);
CREATE FUNCTION claim_due_runs(
    p_limit integer, p_lease interval, p_grace interval, p_max_attempts integer, p_token uuid
)
RETURNS TABLE (
    outcome text, id uuid, schedule_id uuid, due_at timestamptz, utc_offset_minutes integer, attempts integer,
    error text, app_key text, push jsonb, zone_type smallint, push_key text, push_secret_encrypted bytea,
    still_wanted boolean, trigger_id uuid, run_params jsonb, params jsonb
)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_now timestamptz := clock_timestamp();
BEGIN
    RETURN QUERY
    WITH due AS (
        SELECT r.id, r.state, r.attempts, r.due_at, r.error,
               r.state = 'sending' AND r.claim_token IS NOT DISTINCT FROM p_token AS ours FROM runs r
        WHERE (r.state = 'pending' AND r.next_attempt_at <= v_now)
           OR (r.state = 'sending' AND r.lease_until < v_now)
           OR (r.state = 'planned' AND r.lease_until < v_now)
           OR (r.state = 'sending' AND r.claim_token = p_token)
        ORDER BY coalesce(r.next_attempt_at, r.lease_until)
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ), verdict AS (
        SELECT due.id, due.ours,
               CASE WHEN due.ours THEN 'claimed'
                    WHEN fire_is_too_late(due.due_at, v_now, p_grace) THEN 'missed'
                    WHEN due.state = 'sending' AND due.attempts >= p_max_attempts THEN 'failed'
                    ELSE 'claimed' END AS outcome,
               CASE WHEN fire_is_too_late(due.due_at, v_now, p_grace)
                    THEN missed_reason(due.due_at, v_now, p_grace)
                         || coalesce(' (last error: ' || due.error || ')', '')
                    WHEN due.state = 'sending' AND due.attempts >= p_max_attempts
                    THEN format('gave up after %s attempts: the sender''s lease ran out on the last one', due.attempts)
               END AS error
        FROM due
    ), updated AS (
        UPDATE runs r
        SET state = CASE v.outcome WHEN 'claimed' THEN 'sending' ELSE v.outcome END,
            attempts = r.attempts + CASE WHEN v.outcome = 'claimed' AND NOT v.ours THEN 1 ELSE 0 END,
            claim_token = CASE v.outcome WHEN 'claimed' THEN p_token END,
            lease_until = CASE v.outcome WHEN 'claimed' THEN v_now + p_lease END,
            dispatched_at = coalesce(r.dispatched_at, CASE v.outcome WHEN 'claimed' THEN v_now END),
            finished_at = CASE v.outcome WHEN 'claimed' THEN NULL ELSE v_now END,
            next_attempt_at = NULL,
            error = coalesce(v.error, r.error)
        FROM verdict v
        WHERE r.id = v.id
        RETURNING v.outcome, r.id, r.schedule_id, r.due_at, r.utc_offset_minutes, r.attempts, r.error, r.trigger_id,
                  r.params
    )
    SELECT u.outcome, u.id, u.schedule_id, u.due_at, u.utc_offset_minutes, u.attempts, u.error,
           s.app_key, s.push, s.zone_type, a.push_key, a.push_secret_encrypted,
           run_is_wanted(s.state, s.enabled, a.state, u.trigger_id IS NOT NULL), u.trigger_id, u.params, s.params
    FROM updated u JOIN schedules s ON s.id = u.schedule_id JOIN apps a ON a.app_key = s.app_key;
END;
$$;

-- A run a caller triggers (run now, a webhook), in one round trip:
-- 1. with an Idempotency-Key, the run made under the same key for the same task within 24 hours comes back
--    instead of a second one ('existing');
-- 2. with a rate (webhooks: HOOK_RATE_PER_MINUTE), a task that had that many calls of this source within the
--    last minute is refused ('limited'), with the seconds until the oldest of them leaves the window;
-- 3. else the triggered run and one 'pending' run per parameter set are inserted, due now by the database's
--    clock, and the engines are woken (payload 'runs': service.engine.waker) to claim them as retries.
-- Both checks read rows other transactions may be inserting: a transaction-level advisory lock on the task
-- serializes the calls that check (a task's calls with a key, or under a rate), never the engine's statements
-- (a row lock on the task would make the planner skip it meanwhile).
CREATE FUNCTION trigger_run(
    p_id uuid, p_schedule_id uuid, p_source text, p_idempotency_key text, p_params jsonb[], p_rate_per_minute integer,
    OUT outcome text, OUT run_id uuid, OUT retry_after double precision
)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_now timestamptz;
    v_count integer;
    v_oldest timestamptz;
BEGIN
    IF p_idempotency_key IS NOT NULL OR p_rate_per_minute IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(hashtextextended('triggered runs of ' || p_schedule_id::text, 0));
    END IF;
    v_now := clock_timestamp();  -- after the lock: a call that waited for it counts from when it goes on
    IF p_idempotency_key IS NOT NULL THEN
        SELECT t.id INTO run_id FROM triggered_runs t
        WHERE t.schedule_id = p_schedule_id AND t.idempotency_key = p_idempotency_key
          AND t.created_at > v_now - interval '24 hours'
        ORDER BY t.created_at DESC
        LIMIT 1;
        IF FOUND THEN
            outcome := 'existing';
            RETURN;
        END IF;
    END IF;
    IF p_rate_per_minute IS NOT NULL THEN
        SELECT count(*), min(recent.created_at) INTO v_count, v_oldest FROM (
            SELECT t.created_at FROM triggered_runs t
            WHERE t.schedule_id = p_schedule_id AND t.source = p_source AND t.created_at > v_now - interval '1 minute'
            ORDER BY t.created_at DESC
            LIMIT p_rate_per_minute
        ) AS recent;
        IF v_count >= p_rate_per_minute THEN
            outcome := 'limited';
            retry_after := extract(epoch FROM v_oldest + interval '1 minute' - v_now);
            RETURN;
        END IF;
    END IF;
    INSERT INTO triggered_runs (id, schedule_id, source, total, idempotency_key, created_at)
    VALUES (p_id, p_schedule_id, p_source, cardinality(p_params), p_idempotency_key, v_now);
    INSERT INTO runs (id, schedule_id, due_at, utc_offset_minutes, state, attempts, next_attempt_at, trigger_id,
                      trigger_item, params)
    SELECT gen_random_uuid(), p_schedule_id, v_now, 0, 'pending', 0, v_now, p_id, given.ordinality - 1, given.params
    FROM unnest(p_params) WITH ORDINALITY AS given (params, ordinality);
    PERFORM pg_notify('schedule_changes', 'runs');
    outcome := 'created';
    run_id := p_id;
END;
$$;

-- purge_ended_schedules (sql/0007) again: a task's triggered runs go after their runs and before the task
-- (both reference it). Same steps otherwise.
CREATE OR REPLACE FUNCTION purge_ended_schedules(
    p_cutoff timestamptz, p_tasks integer, p_runs integer, OUT schedules integer, OUT runs integer
)
LANGUAGE plpgsql VOLATILE SET enable_bitmapscan = off AS $$
DECLARE
    v_ids uuid[];
BEGIN
    SELECT array_agg(ended.id) INTO v_ids FROM (
        SELECT s.id FROM schedules s
        WHERE s.state IN ('deleted', 'expired')
          AND schedule_ended_at(s.state, s.updated_at, s.final_fire_at, s.stopped_reason) < p_cutoff
          AND NOT EXISTS (SELECT 1 FROM runs r
                          WHERE r.schedule_id = s.id AND r.state IN ('planned', 'pending', 'sending'))
        ORDER BY schedule_ended_at(s.state, s.updated_at, s.final_fire_at, s.stopped_reason)
        LIMIT p_tasks
        FOR UPDATE OF s SKIP LOCKED
    ) AS ended;
    schedules := 0;
    runs := 0;
    IF v_ids IS NULL THEN
        RETURN;
    END IF;
    WITH doomed AS (
        SELECT r.ctid FROM runs r
        WHERE r.schedule_id = ANY (v_ids) AND r.state IN ('sent', 'failed', 'missed', 'skipped', 'cancelled')
        ORDER BY r.schedule_id
        LIMIT p_runs
    )
    DELETE FROM runs r USING doomed WHERE r.ctid = doomed.ctid;
    GET DIAGNOSTICS runs = ROW_COUNT;
    DELETE FROM triggered_runs t
    WHERE t.schedule_id = ANY (v_ids) AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.trigger_id = t.id);
    DELETE FROM schedules s
    WHERE s.id = ANY (v_ids) AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.schedule_id = s.id)
      AND NOT EXISTS (SELECT 1 FROM triggered_runs t WHERE t.schedule_id = s.id);
    GET DIAGNOSTICS schedules = ROW_COUNT;
END;
$$;

-- update_schedule (sql/0008) again, writing the task's parameters (a PUT without them passes the current
-- ones) and answering them. Same steps otherwise.
DROP FUNCTION update_schedule(uuid, text, boolean, jsonb, jsonb, timestamptz, timestamptz, text, smallint,
                              timestamptz[], integer[], timestamptz, interval, text, text, integer, boolean);
CREATE FUNCTION update_schedule(
    p_id uuid,
    p_name text,
    p_enabled boolean,
    p_trigger jsonb,
    p_push jsonb,
    p_next_fire_at timestamptz,
    p_final_fire_at timestamptz,
    p_kind text,
    p_zone_type smallint,
    p_skipped_due_at timestamptz[],
    p_skipped_offsets integer[],
    p_now timestamptz,
    p_wake_horizon interval,
    p_time_zone text,
    p_description text,
    p_max_failures integer,
    p_enabled_set boolean,
    p_params jsonb
)
RETURNS TABLE (id uuid, app_key text, name text, enabled boolean, trigger jsonb, push jsonb,
               created_at timestamptz, final_fire_at timestamptz, time_zone text, description text,
               max_failures integer, consecutive_failures integer, disabled_reason text, next_run_at timestamptz,
               last_run_due_at timestamptz, last_run_state text, last_run_msg_id text, params jsonb)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_earliest_dropped timestamptz := drop_obsolete_runs(p_id, NOT p_enabled, p_now);
    v_next timestamptz := coalesce(p_next_fire_at, v_earliest_dropped);
BEGIN
    UPDATE schedules s
    SET name = p_name, enabled = p_enabled, trigger = p_trigger, push = p_push,
        next_fire_at = coalesce(v_next, s.next_fire_at), final_fire_at = coalesce(p_final_fire_at, s.final_fire_at),
        kind = p_kind, zone_type = p_zone_type, time_zone = p_time_zone, updated_at = clock_timestamp(),
        description = p_description, max_failures = p_max_failures,
        consecutive_failures = CASE WHEN p_enabled_set AND p_enabled THEN 0 ELSE s.consecutive_failures END,
        disabled_reason = CASE WHEN p_enabled_set THEN NULL ELSE s.disabled_reason END,
        params = p_params
    WHERE s.id = p_id;
    PERFORM record_skipped_waves(p_id, p_skipped_due_at, p_skipped_offsets);
    IF p_enabled AND v_next IS NOT NULL AND wakes_engines(v_next, p_now, p_wake_horizon) THEN
        PERFORM pg_notify('schedule_changes', extract(epoch FROM v_next)::text);
    END IF;
    RETURN QUERY
    SELECT s.id, s.app_key, s.name, s.enabled, s.trigger, s.push, s.created_at, s.final_fire_at, s.time_zone,
           s.description, s.max_failures, s.consecutive_failures, s.disabled_reason,
           schedule_next_run_at(s.enabled, s.next_fire_at, s.parked_fire_at), s.last_run_due_at, s.last_run_state,
           s.last_run_msg_id, s.params
    FROM schedules s WHERE s.id = p_id;
END;
$$;

-- create_schedule (sql/0008) again, writing the task's parameters. Same steps, same order.
DROP FUNCTION create_schedule(uuid, text, text, boolean, jsonb, jsonb, text, timestamptz, timestamptz,
                              timestamptz, timestamptz[], integer[], interval, text, smallint, text, text, integer);
CREATE FUNCTION create_schedule(
    p_id uuid,
    p_app_key text,
    p_name text,
    p_enabled boolean,
    p_trigger jsonb,
    p_push jsonb,
    p_cid text,
    p_next_fire_at timestamptz,
    p_final_fire_at timestamptz,
    p_now timestamptz,
    p_skipped_due_at timestamptz[],
    p_skipped_offsets integer[],
    p_wake_horizon interval,
    p_kind text,
    p_zone_type smallint,
    p_time_zone text,
    p_description text,
    p_max_failures integer,
    p_params jsonb,
    OUT outcome text,
    OUT id uuid,
    OUT name text,
    OUT valid bigint,
    OUT cap integer
)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    -- Serializes the creates of one app, so its cap and its cids hold under concurrent creates.
    SELECT a.max_schedules INTO cap FROM apps a
    WHERE a.app_key = p_app_key AND app_is_active(a.state) FOR UPDATE;
    IF NOT FOUND THEN
        outcome := 'no_app';
        RETURN;
    END IF;
    IF p_cid IS NOT NULL THEN
        SELECT s.id, s.name INTO id, name FROM schedules s WHERE s.app_key = p_app_key AND s.cid = p_cid;
        IF FOUND THEN
            outcome := 'existing';
            RETURN;
        END IF;
    END IF;
    SELECT count(*) INTO valid
    FROM schedules s
    WHERE s.app_key = p_app_key AND schedule_is_valid(s.state, s.final_fire_at, p_now);
    IF valid >= cap THEN
        outcome := 'full';
        RETURN;
    END IF;
    INSERT INTO schedules (id, app_key, name, enabled, trigger, push, cid, next_fire_at, final_fire_at, kind,
                           zone_type, time_zone, description, max_failures, params)
    VALUES (p_id, p_app_key, p_name, p_enabled, p_trigger, p_push, p_cid, p_next_fire_at, p_final_fire_at,
            p_kind, p_zone_type, p_time_zone, p_description, p_max_failures, p_params);
    PERFORM record_skipped_waves(p_id, p_skipped_due_at, p_skipped_offsets);
    -- Wakes every replica's engine on commit, unless its engines will see the fire anyway.
    IF wakes_engines(p_next_fire_at, p_now, p_wake_horizon) THEN
        PERFORM pg_notify('schedule_changes', extract(epoch FROM p_next_fire_at)::text);
    END IF;
    outcome := 'created';
    id := p_id;
    name := p_name;
END;
$$;

-- What the API reads of a task (sql/0009), with its parameters and whether it has a webhook (never the digest).
CREATE OR REPLACE VIEW schedules_as_shown AS
SELECT s.id, s.app_key, s.name, s.enabled, s.trigger, s.push, s.created_at, s.final_fire_at, s.time_zone,
       s.description, s.max_failures, s.consecutive_failures, s.disabled_reason,
       schedule_next_run_at(s.enabled, s.next_fire_at, s.parked_fire_at) AS next_run_at,
       s.last_run_due_at, s.last_run_state, s.last_run_msg_id, s.state, s.kind, s.params, s.webhook_created_at
FROM schedules s;
