-- Issue 12, the rest: a description and a failure limit on each task, what it did last and does next, sorted and
-- filtered lists, and each task's runs. Every read on the list path is a column of `schedules` (no subquery
-- over `runs` per listed row); the engine keeps the columns where it already writes the outcome of a send.

ALTER TABLE schedules
    ADD COLUMN description text NOT NULL DEFAULT '',
    -- Consecutive failed runs after which the task disables itself; 0: never. The bound is the API's
    -- (service.domain.models.MAX_MAX_FAILURES), repeated here so no other writer can store more.
    ADD COLUMN max_failures integer NOT NULL DEFAULT 0
        CONSTRAINT schedules_max_failures_check CHECK (max_failures BETWEEN 0 AND 1000),
    ADD COLUMN consecutive_failures integer NOT NULL DEFAULT 0,
    -- Why the engine disabled the task (max_failures reached); cleared by a PUT that sets `enabled`.
    ADD COLUMN disabled_reason text,
    -- The task's latest run whose send finished (sent or failed), by due instant. Missed, skipped and cancelled
    -- runs were never sent and leave it (and the failure count) as it was.
    ADD COLUMN last_run_due_at timestamptz,
    ADD COLUMN last_run_state text CONSTRAINT schedules_last_run_state_check CHECK (last_run_state IN ('sent', 'failed')),
    ADD COLUMN last_run_msg_id text;

-- A task's next run, as the API shows it and sorts by: the next fire the engine has not yet taken up (for
-- zone_type 2, the next wave), kept aside while the app is disabled; NULL when the task is disabled or has no
-- fire left to plan. A fire the engine already planned (from ENGINE_PLAN_AHEAD_SECONDS before it) or whose
-- send waits for a retry is no longer "next": reading the runs for it would be a subquery per listed task.
CREATE FUNCTION schedule_next_run_at(p_enabled boolean, p_next_fire_at timestamptz, p_parked_fire_at timestamptz)
RETURNS timestamptz LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p_enabled THEN coalesce(p_next_fire_at, p_parked_fire_at) END
$$;

-- Which tasks a list shows: the valid ones, filtered. Names are compared byte-wise (COLLATE "C", the order
-- sort=name uses), as a range [p_name_from, p_name_below): the API turns name= and name_prefix= into one, so
-- the name index bounds the scan. Inlined by the planner (a plain SQL function), so the range is an index
-- condition and the partial indexes on state = 'active' still match.
CREATE FUNCTION schedule_is_listed(
    p_state text, p_final_fire_at timestamptz, p_name text, p_enabled boolean, p_kind text, p_at timestamptz,
    p_name_from text, p_name_below text, p_want_name text, p_want_enabled boolean, p_want_kind text
)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT schedule_is_valid(p_state, p_final_fire_at, p_at)
       AND (p_name COLLATE "C") >= p_name_from AND (p_name COLLATE "C") < p_name_below
       AND (p_want_name IS NULL OR p_name = p_want_name)
       AND (p_want_enabled IS NULL OR p_enabled = p_want_enabled)
       AND (p_want_kind IS NULL OR p_kind = p_want_kind)
$$;

-- One index per sort key, each after app_key and ending in id (the tie-breaker), so page 1 of any sort reads 50
-- index entries whatever the table holds; sort=created already has schedules_app_created_idx (sql/0001).
-- NULLs sit where the index puts them in both directions: next_run NULLS LAST (no next run: after every
-- instant), last_run NULLS FIRST (never ran: before every instant); a descending sort scans backwards.
-- Measured with bench.scale at 1M stored tasks (bench/README.md, "Sorted lists at 1M").
-- Each index costs every non-HOT update of an active task one more index insertion (the planner's advance of
-- next_fire_at, a recorded run): measured with bench.burst, see the README there.
CREATE INDEX schedules_app_name_idx ON schedules (app_key, name COLLATE "C", id) WHERE state = 'active';
CREATE INDEX schedules_app_next_run_idx
    ON schedules (app_key, schedule_next_run_at(enabled, next_fire_at, parked_fire_at), id) WHERE state = 'active';
CREATE INDEX schedules_app_last_run_idx ON schedules (app_key, last_run_due_at NULLS FIRST, id) WHERE state = 'active';

-- The outcomes of a batch of sends (the statement record_run_results of queries.sql before), and what they do
-- to their tasks, in one round trip:
-- 1. each outcome written to its run, fenced on the attempt that produced it (as before);
-- 2. each task with a run that finished (sent or failed) gets its latest one as last_run, and its count of
--    consecutive failures: reset by a sent run, raised by each failed one after the last sent. The task's
--    final fire is left out: once it is sent or failed the task has expired, and nothing shows the row again,
--    so the common single-fire task costs this step one primary-key lookup and no row write;
-- 3. a task whose count reaches its max_failures (> 0) is disabled as a PUT `enabled: false` would (its
--    planned runs dropped, its queued retries cancelled: sql/0005 drop_obsolete_runs), with the reason kept.
-- The tasks disabled come back, for the engine's log line and metric. Locks its tasks in id order, so two
-- engines recording runs of the same tasks cannot deadlock.
CREATE FUNCTION record_run_results(
    p_ids uuid[], p_attempts integer[], p_states text[], p_msg_ids text[], p_errors text[],
    p_next_attempt_at timestamptz[], p_finished_at timestamptz[], p_payloads jsonb[]
)
RETURNS TABLE (schedule_id uuid, app_key text, consecutive_failures integer, max_failures integer, error text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_ids uuid[];
    v_app_keys text[];
    v_counts integer[];
    v_limits integer[];
    v_errors text[];
BEGIN
    WITH recorded AS (
        -- A retry's instant is its delay counted on the database's clock from this write (see queries.sql).
        UPDATE runs r
        SET state = result.state,
            msg_id = result.msg_id,
            error = result.error,
            next_attempt_at = clock_timestamp() + (result.next_attempt_at - result.finished_at),
            lease_until = NULL,
            sent_at = CASE WHEN result.state = 'sent' THEN result.finished_at END,
            finished_at = CASE WHEN result.state IN ('sent', 'failed', 'cancelled') THEN result.finished_at END,
            payload = result.payload
        FROM unnest(p_ids, p_attempts, p_states, p_msg_ids, p_errors, p_next_attempt_at, p_finished_at, p_payloads)
             AS result (id, attempts, state, msg_id, error, next_attempt_at, finished_at, payload)
        WHERE r.id = result.id AND r.state = 'sending' AND r.attempts = result.attempts
        RETURNING r.schedule_id, r.due_at, r.state, r.msg_id, r.error
    ), finished AS (
        SELECT rec.*, max(rec.due_at) FILTER (WHERE rec.state = 'sent') OVER (PARTITION BY rec.schedule_id) AS last_sent
        FROM recorded rec
        WHERE rec.state IN ('sent', 'failed')
    ), outcome AS (
        SELECT f.schedule_id,
               max(f.due_at) AS due_at,
               (array_agg(f.state ORDER BY f.due_at DESC))[1] AS state,
               (array_agg(f.msg_id ORDER BY f.due_at DESC))[1] AS msg_id,
               (array_agg(f.error ORDER BY f.due_at DESC) FILTER (WHERE f.state = 'failed'))[1] AS error,
               max(f.last_sent) AS last_sent,
               count(*) FILTER (WHERE f.state = 'failed' AND f.due_at > coalesce(f.last_sent, '-infinity')) AS failed
        FROM finished f
        GROUP BY f.schedule_id
    ), counted AS (
        SELECT s.id, s.app_key, s.max_failures, o.due_at, o.state, o.msg_id, o.error,
               (CASE WHEN o.last_sent IS NULL THEN s.consecutive_failures ELSE 0 END + o.failed)::integer AS failures,
               s.enabled AND s.max_failures > 0
                   AND (CASE WHEN o.last_sent IS NULL THEN s.consecutive_failures ELSE 0 END + o.failed) >= s.max_failures
                   AS trips
        FROM outcome o JOIN schedules s ON s.id = o.schedule_id
        WHERE s.state = 'active' AND o.due_at < s.final_fire_at
        ORDER BY s.id
        FOR UPDATE OF s
    ), updated AS (
        UPDATE schedules s
        SET last_run_due_at = greatest(s.last_run_due_at, c.due_at),
            last_run_state = CASE WHEN s.last_run_due_at > c.due_at THEN s.last_run_state ELSE c.state END,
            last_run_msg_id = CASE WHEN s.last_run_due_at > c.due_at THEN s.last_run_msg_id ELSE c.msg_id END,
            consecutive_failures = c.failures,
            enabled = s.enabled AND NOT c.trips,
            disabled_reason = CASE WHEN c.trips
                THEN format('disabled after %s consecutive failed runs (max_failures %s); last error: %s',
                            c.failures, c.max_failures, coalesce(c.error, 'none kept'))
                ELSE s.disabled_reason END,
            updated_at = CASE WHEN c.trips THEN clock_timestamp() ELSE s.updated_at END
        FROM counted c
        WHERE s.id = c.id
        RETURNING s.id, s.app_key, c.failures, c.max_failures, c.error, c.trips
    )
    SELECT array_agg(u.id), array_agg(u.app_key), array_agg(u.failures), array_agg(u.max_failures), array_agg(u.error)
    INTO v_ids, v_app_keys, v_counts, v_limits, v_errors
    FROM updated u
    WHERE u.trips;
    IF v_ids IS NULL THEN
        RETURN;
    END IF;
    -- After the statement above, not inside it: a statement must not change a run it already changed.
    PERFORM drop_obsolete_runs(tripped.id, true, clock_timestamp()) FROM unnest(v_ids) AS tripped (id);
    RETURN QUERY SELECT * FROM unnest(v_ids, v_app_keys, v_counts, v_limits, v_errors);
END;
$$;

-- update_schedule (sql/0006) again, writing the description and max_failures too; a PUT that sets `enabled`
-- clears the engine's reason for disabling the task, and `enabled: true` resets its count of failures. Answers
-- the task as the API shows it. Same steps otherwise.
DROP FUNCTION update_schedule(uuid, text, boolean, jsonb, jsonb, timestamptz, timestamptz, text, smallint,
                              timestamptz[], integer[], timestamptz, interval, text);
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
    p_enabled_set boolean
)
RETURNS TABLE (id uuid, app_key text, name text, enabled boolean, trigger jsonb, push jsonb,
               created_at timestamptz, final_fire_at timestamptz, time_zone text, description text,
               max_failures integer, consecutive_failures integer, disabled_reason text, next_run_at timestamptz,
               last_run_due_at timestamptz, last_run_state text, last_run_msg_id text)
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
        disabled_reason = CASE WHEN p_enabled_set THEN NULL ELSE s.disabled_reason END
    WHERE s.id = p_id;
    PERFORM record_skipped_waves(p_id, p_skipped_due_at, p_skipped_offsets);
    IF p_enabled AND v_next IS NOT NULL AND wakes_engines(v_next, p_now, p_wake_horizon) THEN
        PERFORM pg_notify('schedule_changes', extract(epoch FROM v_next)::text);
    END IF;
    RETURN QUERY
    SELECT s.id, s.app_key, s.name, s.enabled, s.trigger, s.push, s.created_at, s.final_fire_at, s.time_zone,
           s.description, s.max_failures, s.consecutive_failures, s.disabled_reason,
           schedule_next_run_at(s.enabled, s.next_fire_at, s.parked_fire_at), s.last_run_due_at, s.last_run_state,
           s.last_run_msg_id
    FROM schedules s WHERE s.id = p_id;
END;
$$;

-- create_schedule (sql/0006) again, writing the description and max_failures. Same steps, same order.
DROP FUNCTION create_schedule(uuid, text, text, boolean, jsonb, jsonb, text, timestamptz, timestamptz,
                              timestamptz, timestamptz[], integer[], interval, text, smallint, text);
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
                           zone_type, time_zone, description, max_failures)
    VALUES (p_id, p_app_key, p_name, p_enabled, p_trigger, p_push, p_cid, p_next_fire_at, p_final_fire_at,
            p_kind, p_zone_type, p_time_zone, p_description, p_max_failures);
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
