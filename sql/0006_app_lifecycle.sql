-- The app lifecycle: disable, enable, delete, rotate the secret, change the zone or the cap, from the CLI.
--
-- An app that is not active sends nothing and is refused by the API. Every process caches app credentials for
-- a few seconds; every change here NOTIFYs `app_changes` with the app key, and each process forgets that app
-- at once (service.store.notices), so a revoked secret stops working everywhere within a second.

ALTER TABLE apps
    ADD COLUMN state text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'disabled', 'deleted')),
    ADD COLUMN state_changed_at timestamptz;

-- Each task keeps the zone its wall-clock times were read in when it was created (or its trigger replaced),
-- so changing the app's zone never moves a stored task's fires; see `apps update` in the README.
ALTER TABLE schedules ADD COLUMN time_zone text;
UPDATE schedules s SET time_zone = a.time_zone FROM apps a WHERE a.app_key = s.app_key;
ALTER TABLE schedules ALTER COLUMN time_zone SET NOT NULL;

-- A task's next fire, kept aside while its app is disabled. Its next_fire_at is NULL meanwhile, so the task
-- leaves the due index and the engine's statements never see it: a disabled app with a million tasks costs the
-- planner nothing (a filter on the app in the due scans would walk past every one of them on every wake-up).
ALTER TABLE schedules ADD COLUMN parked_fire_at timestamptz;

-- Whether an app's credentials open the API and its runs may be sent.
CREATE FUNCTION app_is_active(p_state text)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT p_state = 'active'
$$;

-- claim_due_runs (sql/0005) again: a run of an app that is not active is no longer wanted (the engine cancels
-- it instead of sending; sql/0005 already did so for a deleted or disabled task). Same steps, same order.
CREATE OR REPLACE FUNCTION claim_due_runs(
    p_limit integer, p_lease interval, p_grace interval, p_max_attempts integer, p_token uuid
)
RETURNS TABLE (
    outcome text, id uuid, schedule_id uuid, due_at timestamptz, utc_offset_minutes integer, attempts integer,
    error text, app_key text, push jsonb, zone_type smallint, push_key text, push_secret_encrypted bytea,
    still_wanted boolean
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
        RETURNING v.outcome, r.id, r.schedule_id, r.due_at, r.utc_offset_minutes, r.attempts, r.error
    )
    SELECT u.outcome, u.id, u.schedule_id, u.due_at, u.utc_offset_minutes, u.attempts, u.error,
           s.app_key, s.push, s.zone_type, a.push_key, a.push_secret_encrypted,
           (s.state <> 'deleted' AND s.enabled AND app_is_active(a.state)) AS still_wanted
    FROM updated u JOIN schedules s ON s.id = u.schedule_id JOIN apps a ON a.app_key = s.app_key;
END;
$$;

-- Tells every process to forget what it cached of an app (credentials, zone, state).
CREATE FUNCTION notify_app_changed(p_app_key text)
RETURNS void LANGUAGE sql VOLATILE AS $$
    SELECT pg_notify('app_changes', p_app_key)
$$;

-- Disable, enable or delete an app, in one transaction. Returns the app's state before, NULL for no such app.
-- - disabled: its tasks keep their own settings but nothing of them is planned or sent: each task's next fire
--   is parked (the earliest of the runs planned ahead, which go, as an update does; else its next_fire_at) and
--   queued retries are cancelled. A send already in flight finishes.
-- - deleted: every task still active is deleted as DELETE does, for the retention sweep to purge with its runs.
--   Final: a deleted app cannot be enabled again.
-- - active again: the engines are woken; fires that passed meanwhile follow the misfire rule, as after
--   downtime (sent within MISFIRE_GRACE, recorded missed after it).
CREATE FUNCTION set_app_state(p_app_key text, p_state text, p_now timestamptz)
RETURNS text LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_before text;
    v_next timestamptz;
BEGIN
    -- Locks the app as a create does, so no task is created while its tasks are being stopped.
    SELECT a.state INTO v_before FROM apps a WHERE a.app_key = p_app_key FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF v_before = 'deleted' AND p_state <> 'deleted' THEN
        RAISE EXCEPTION 'app % is deleted', p_app_key USING ERRCODE = 'check_violation';
    END IF;
    IF v_before = p_state THEN
        RETURN v_before;
    END IF;
    UPDATE apps SET state = p_state, state_changed_at = p_now WHERE app_key = p_app_key;
    IF p_state = 'disabled' THEN
        UPDATE schedules s
        SET parked_fire_at = coalesce(drop_obsolete_runs(s.id, true, p_now), s.next_fire_at), next_fire_at = NULL
        WHERE s.app_key = p_app_key AND s.state = 'active';
    ELSIF p_state = 'deleted' THEN
        PERFORM drop_obsolete_runs(s.id, true, p_now) FROM schedules s
        WHERE s.app_key = p_app_key AND s.state = 'active';
        UPDATE schedules s SET state = 'deleted', next_fire_at = NULL, updated_at = clock_timestamp()
        WHERE s.app_key = p_app_key AND s.state = 'active';
    ELSE
        WITH unparked AS (
            UPDATE schedules s SET next_fire_at = s.parked_fire_at, parked_fire_at = NULL
            WHERE s.app_key = p_app_key AND s.state = 'active' AND s.parked_fire_at IS NOT NULL
            RETURNING s.next_fire_at, s.enabled
        )
        SELECT min(unparked.next_fire_at) FILTER (WHERE unparked.enabled) INTO v_next FROM unparked;
        IF v_next IS NOT NULL THEN
            PERFORM pg_notify('schedule_changes', extract(epoch FROM v_next)::text);
        END IF;
    END IF;
    PERFORM notify_app_changed(p_app_key);
    RETURN v_before;
END;
$$;

-- What `apps update` and `apps rotate-secret` change, each only when given (NULL: unchanged). A new zone
-- applies to tasks created, or whose trigger is replaced, from now on; a lower cap refuses creates until the
-- app is below it, and deletes nothing. False: no such app, or it is deleted.
CREATE FUNCTION update_app(
    p_app_key text, p_time_zone text, p_max_schedules integer, p_secret_sha256 bytea, p_push_key text,
    p_push_secret_encrypted bytea
)
RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    UPDATE apps a
    SET time_zone = coalesce(p_time_zone, a.time_zone),
        max_schedules = coalesce(p_max_schedules, a.max_schedules),
        secret_sha256 = coalesce(p_secret_sha256, a.secret_sha256),
        push_key = coalesce(p_push_key, a.push_key),
        push_secret_encrypted = coalesce(p_push_secret_encrypted, a.push_secret_encrypted)
    WHERE a.app_key = p_app_key AND a.state <> 'deleted';
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM notify_app_changed(p_app_key);
    RETURN true;
END;
$$;

-- update_schedule (sql/0005) again, writing the zone the task's values were computed in. Same steps.
DROP FUNCTION update_schedule(uuid, text, boolean, jsonb, jsonb, timestamptz, timestamptz, text, smallint,
                              timestamptz[], integer[], timestamptz, interval);
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
    p_time_zone text
)
RETURNS TABLE (id uuid, app_key text, name text, enabled boolean, trigger jsonb, push jsonb,
               created_at timestamptz, final_fire_at timestamptz, time_zone text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_earliest_dropped timestamptz := drop_obsolete_runs(p_id, NOT p_enabled, p_now);
    v_next timestamptz := coalesce(p_next_fire_at, v_earliest_dropped);
BEGIN
    UPDATE schedules s
    SET name = p_name, enabled = p_enabled, trigger = p_trigger, push = p_push,
        next_fire_at = coalesce(v_next, s.next_fire_at), final_fire_at = coalesce(p_final_fire_at, s.final_fire_at),
        kind = p_kind, zone_type = p_zone_type, time_zone = p_time_zone, updated_at = clock_timestamp()
    WHERE s.id = p_id;
    PERFORM record_skipped_waves(p_id, p_skipped_due_at, p_skipped_offsets);
    IF p_enabled AND v_next IS NOT NULL AND wakes_engines(v_next, p_now, p_wake_horizon) THEN
        PERFORM pg_notify('schedule_changes', extract(epoch FROM v_next)::text);
    END IF;
    RETURN QUERY
    SELECT s.id, s.app_key, s.name, s.enabled, s.trigger, s.push, s.created_at, s.final_fire_at, s.time_zone
    FROM schedules s WHERE s.id = p_id;
END;
$$;

-- create_schedule (sql/0005) again: writes the zone the values were computed in, and an app that is not
-- active creates nothing ('no_app': its credentials no longer open the API). Same steps, same order.
DROP FUNCTION create_schedule(uuid, text, text, boolean, jsonb, jsonb, text, timestamptz, timestamptz,
                              timestamptz, timestamptz[], integer[], interval, text, smallint);
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
                           zone_type, time_zone)
    VALUES (p_id, p_app_key, p_name, p_enabled, p_trigger, p_push, p_cid, p_next_fire_at, p_final_fire_at,
            p_kind, p_zone_type, p_time_zone);
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
