-- One definition for each dispatch rule, the database's clock for every engine decision, and fenced writes.
--
-- Before this migration the rule "missed, sent now or planned" lived in four places and "valid" in five; the
-- engine compared rows with each replica's own clock, so a replica whose clock ran fast took over others'
-- runs and sent them early. Every rule below is a function that every statement calls, and every engine
-- statement reads the instant it decides by from clock_timestamp(), the one clock every replica shares.

-- What the engine reads of a trigger, written from the domain's reading of it (service.domain.triggers) on
-- every create and update; SQL never parses the trigger's JSON again. Existing rows are converted once here.
ALTER TABLE schedules
    ADD COLUMN kind text,
    ADD COLUMN zone_type smallint,
    -- Why the engine stopped a task it could not plan (it leaves the valid set at once, reason kept).
    ADD COLUMN stopped_reason text;
UPDATE schedules
SET kind = (SELECT key FROM jsonb_object_keys(trigger) AS key LIMIT 1),
    zone_type = coalesce((trigger -> (SELECT key FROM jsonb_object_keys(trigger) AS key LIMIT 1) ->> 'zone_type')::smallint, 1);
ALTER TABLE schedules
    ALTER COLUMN kind SET NOT NULL,
    ALTER COLUMN zone_type SET NOT NULL,
    ADD CONSTRAINT schedules_zone_type_check CHECK (zone_type IN (1, 2));

-- The claim that leased a run. A claim whose answer was lost (a connection cut after its commit) is asked
-- again with the same token, and the runs it leased come back instead of waiting out their lease.
ALTER TABLE runs ADD COLUMN claim_token uuid;
CREATE INDEX runs_sending_token_idx ON runs (claim_token) WHERE state = 'sending';

-- The valid set: a task counts against its app's cap, is listed and can be read, changed or deleted while it
-- is active and its last fire has not passed. Inlined by the planner, so the partial indexes on
-- `state = 'active'` still match every query that calls it.
CREATE FUNCTION schedule_is_valid(p_state text, p_final_fire_at timestamptz, p_at timestamptz)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT p_state = 'active' AND p_final_fire_at > p_at
$$;

-- The misfire rule: a fire found more than the grace after its instant is recorded missed, never sent.
-- Planning (single fires and every other trigger) and late resends after an outage all decide by this.
CREATE FUNCTION fire_is_too_late(p_due_at timestamptz, p_now timestamptz, p_grace interval)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT p_due_at < p_now - p_grace
$$;

-- Why a run was recorded missed, kept on the run for its tenant to see.
CREATE FUNCTION missed_reason(p_due_at timestamptz, p_now timestamptz, p_grace interval)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT format('missed: found %s s after its due instant, later than MISFIRE_GRACE (%s s)',
                  round(extract(epoch FROM p_now - p_due_at)::numeric, 3), extract(epoch FROM p_grace))
$$;

-- The only way runs are planned. Each fire becomes a run that is:
-- - 'missed': too late by the grace, or superseded (a later fire of the same wave is also past; after
--   downtime only the latest is sent);
-- - 'sending': due already and among the first p_lease_count of those (the places the planner's sender has
--   free), leased to it at once under claim p_token, which saves a claim's round trip and row write;
-- - 'planned': the rest, reserved to the planning engine until its instant plus the reservation, and sent only
--   through claim_planned_runs or, once the reservation ran out, claim_due_runs, both bounded by free places.
-- The unique key on (task, instant, wave) makes planning the same occurrence twice impossible.
CREATE FUNCTION insert_runs(
    p_schedule_ids uuid[],
    p_due_at timestamptz[],
    p_offsets integer[],
    p_superseded boolean[],
    p_now timestamptz,
    p_grace interval,
    p_reservation interval,
    p_lease interval,
    p_lease_count integer,
    p_token uuid
)
RETURNS TABLE (
    id uuid, schedule_id uuid, due_at timestamptz, utc_offset_minutes integer, state text, attempts integer,
    error text
)
LANGUAGE sql VOLATILE AS $$
    INSERT INTO runs AS r (id, schedule_id, due_at, utc_offset_minutes, state, attempts, lease_until,
                           dispatched_at, claim_token, finished_at, error)
    SELECT gen_random_uuid(), fire.schedule_id, fire.due_at, fire.utc_offset_minutes, fire.state,
           CASE WHEN fire.state = 'sending' THEN 1 ELSE 0 END,
           CASE fire.state WHEN 'planned' THEN greatest(fire.due_at, p_now) + p_reservation
                           WHEN 'sending' THEN p_now + p_lease END,
           CASE WHEN fire.state = 'sending' THEN p_now END,
           CASE WHEN fire.state = 'sending' THEN p_token END,
           CASE WHEN fire.state = 'missed' THEN p_now END,
           CASE WHEN fire.state = 'missed' THEN
               CASE WHEN fire.superseded AND NOT fire_is_too_late(fire.due_at, p_now, p_grace)
                    THEN 'missed: a later occurrence was also due; after downtime only the latest is sent'
                    ELSE missed_reason(fire.due_at, p_now, p_grace) END END
    FROM (
        SELECT due.*,
               CASE WHEN due.verdict = 'planned' AND due.due_at <= p_now
                         AND row_number() OVER (PARTITION BY due.verdict = 'planned' AND due.due_at <= p_now
                                                ORDER BY due.due_at) <= p_lease_count
                    THEN 'sending' ELSE due.verdict END AS state
        FROM (
            SELECT given.*,
                   CASE WHEN given.superseded OR fire_is_too_late(given.due_at, p_now, p_grace)
                        THEN 'missed' ELSE 'planned' END AS verdict
            FROM unnest(p_schedule_ids, p_due_at, p_offsets, p_superseded)
                 AS given (schedule_id, due_at, utc_offset_minutes, superseded)
        ) AS due
    ) AS fire
    ON CONFLICT ON CONSTRAINT runs_schedule_due_wave_key DO NOTHING
    RETURNING r.id, r.schedule_id, r.due_at, r.utc_offset_minutes, r.state, r.attempts, r.error
$$;

-- Plan step for single zone_type 1 tasks, the common case, in one round trip: such a task fires once, at its
-- next_fire_at, and then has nothing left, so there is no trigger to evaluate. Lock (SKIP LOCKED) the tasks
-- due within p_ahead, advance them and insert their runs through insert_runs (leasing up to p_lease_count of
-- those already due), then return what sending needs.
-- The function's own SET rules out the bitmap scan (see prefer_ordered_index_scans in queries.sql).
CREATE FUNCTION plan_single_fires(
    p_ahead interval, p_limit integer, p_grace interval, p_reservation interval, p_lease interval,
    p_lease_count integer, p_token uuid
)
RETURNS TABLE (
    id uuid, schedule_id uuid, due_at timestamptz, utc_offset_minutes integer, state text, attempts integer,
    error text,
    app_key text, push jsonb, zone_type smallint, push_key text, push_secret_encrypted bytea, planned_at timestamptz
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
           s.app_key, s.push, s.zone_type, a.push_key, a.push_secret_encrypted, v_now
    FROM insert_runs(v_ids, v_due, array_fill(0, ARRAY[cardinality(v_ids)]),
                     array_fill(false, ARRAY[cardinality(v_ids)]), v_now, p_grace, p_reservation,
                     p_lease, p_lease_count, p_token) AS run
    JOIN schedules s ON s.id = run.schedule_id
    JOIN apps a ON a.app_key = s.app_key;
END;
$$;

-- Retries that are due, sends whose holder's lease ran out and planned runs whose planner did not claim them
-- in time, leased to the caller: at most p_limit (its free send slots), with the lease counted from now, so no
-- lease runs out while its run waits for a slot. On the way, runs past their chance are settled instead of
-- sent: due longer ago than the grace (an outage outlasted it) -> 'missed'; a lease that ran out on the last
-- allowed attempt -> 'failed'. Those come back too (outcome 'missed' / 'failed'), for the engine to log.
-- p_token names the claim: asked again with the token of a claim whose answer was lost, the runs that claim
-- leased come back as claimed (once, not attempted again).
CREATE FUNCTION claim_due_runs(
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
           (s.state <> 'deleted' AND s.enabled) AS still_wanted
    FROM updated u JOIN schedules s ON s.id = u.schedule_id JOIN apps a ON a.app_key = s.app_key;
END;
$$;

-- Whether a change that makes a task fire at p_next_fire_at must NOTIFY the engines. Every engine looks at the
-- database again at least every p_horizon (its longest sleep plus how far ahead it plans; NULL: always
-- notify), so a later fire is found without one. NOTIFY is not free: on commit it takes a database-wide lock
-- that serializes every notifying transaction.
CREATE FUNCTION wakes_engines(p_next_fire_at timestamptz, p_now timestamptz, p_horizon interval)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT p_horizon IS NULL OR p_next_fire_at <= p_now + p_horizon
$$;

-- Runs a change to a task makes obsolete: the ones planned ahead from its old values go (never attempted, so
-- no history is lost; the engine holding them finds them gone when it claims them), and, once it is deleted or
-- disabled, its queued retries are cancelled. Returns the earliest planned instant dropped.
CREATE FUNCTION drop_obsolete_runs(p_schedule_id uuid, p_cancel_open boolean, p_now timestamptz)
RETURNS timestamptz LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_earliest timestamptz;
BEGIN
    WITH dropped AS (DELETE FROM runs WHERE schedule_id = p_schedule_id AND state = 'planned' RETURNING due_at)
    SELECT min(due_at) INTO v_earliest FROM dropped;
    IF p_cancel_open THEN
        UPDATE runs SET state = 'cancelled', finished_at = p_now, lease_until = NULL
        WHERE schedule_id = p_schedule_id AND state = 'pending';
    END IF;
    RETURN v_earliest;
END;
$$;

-- zone_type 2 waves already past when a task is created or its trigger changed: recorded, never sent.
CREATE FUNCTION record_skipped_waves(p_schedule_id uuid, p_due_at timestamptz[], p_offsets integer[])
RETURNS void LANGUAGE sql VOLATILE AS $$
    INSERT INTO runs (id, schedule_id, due_at, utc_offset_minutes, state)
    SELECT gen_random_uuid(), p_schedule_id, wave.due_at, wave.utc_offset_minutes, 'skipped'
    FROM unnest(p_due_at, p_offsets) AS wave (due_at, utc_offset_minutes)
    ON CONFLICT (schedule_id, due_at, utc_offset_minutes) DO NOTHING
$$;

-- An update, once the domain computed the new values from the locked row (service.domain.schedules): write
-- them, in one round trip. With the trigger unchanged (p_next_fire_at NULL), the task is planned again from the
-- earliest run dropped, so a changed push goes out at the instant the old one would have.
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
    p_wake_horizon interval
)
RETURNS TABLE (id uuid, app_key text, name text, enabled boolean, trigger jsonb, push jsonb,
               created_at timestamptz, final_fire_at timestamptz)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_earliest_dropped timestamptz := drop_obsolete_runs(p_id, NOT p_enabled, p_now);
    v_next timestamptz := coalesce(p_next_fire_at, v_earliest_dropped);
BEGIN
    UPDATE schedules s
    SET name = p_name, enabled = p_enabled, trigger = p_trigger, push = p_push,
        next_fire_at = coalesce(v_next, s.next_fire_at), final_fire_at = coalesce(p_final_fire_at, s.final_fire_at),
        kind = p_kind, zone_type = p_zone_type, updated_at = clock_timestamp()
    WHERE s.id = p_id;
    PERFORM record_skipped_waves(p_id, p_skipped_due_at, p_skipped_offsets);
    IF p_enabled AND v_next IS NOT NULL AND wakes_engines(v_next, p_now, p_wake_horizon) THEN
        PERFORM pg_notify('schedule_changes', extract(epoch FROM v_next)::text);
    END IF;
    RETURN QUERY
    SELECT s.id, s.app_key, s.name, s.enabled, s.trigger, s.push, s.created_at, s.final_fire_at
    FROM schedules s WHERE s.id = p_id;
END;
$$;

-- A delete, in one round trip: soft-delete the task if it is valid (the row stays for its runs' history, but
-- leaves every query of valid tasks and the engine's) and drop or cancel its runs still to go. False: no such
-- valid task of that app.
CREATE FUNCTION delete_schedule(p_id uuid, p_app_key text, p_now timestamptz)
RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    UPDATE schedules s SET state = 'deleted', next_fire_at = NULL, updated_at = clock_timestamp()
    WHERE s.id = p_id AND s.app_key = p_app_key AND schedule_is_valid(s.state, s.final_fire_at, p_now);
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM drop_obsolete_runs(p_id, true, p_now);
    RETURN true;
END;
$$;

-- create_schedule (sql/0003) again, with the trigger's kind and zone type as columns, the valid set from
-- schedule_is_valid and the wake rule from wakes_engines. Same steps, same order.
DROP FUNCTION create_schedule(uuid, text, text, boolean, jsonb, jsonb, text, timestamptz, timestamptz,
                              timestamptz, timestamptz[], integer[], boolean);
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
    OUT outcome text,
    OUT id uuid,
    OUT name text,
    OUT valid bigint,
    OUT cap integer
)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    -- Serializes the creates of one app, so its cap and its cids hold under concurrent creates.
    SELECT a.max_schedules INTO cap FROM apps a WHERE a.app_key = p_app_key FOR UPDATE;
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
    INSERT INTO schedules (id, app_key, name, enabled, trigger, push, cid, next_fire_at, final_fire_at, kind, zone_type)
    VALUES (p_id, p_app_key, p_name, p_enabled, p_trigger, p_push, p_cid, p_next_fire_at, p_final_fire_at,
            p_kind, p_zone_type);
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

-- The single-fire plan finds its tasks by kind and zone type.
CREATE INDEX schedules_due_single_idx ON schedules (next_fire_at)
    WHERE enabled AND state = 'active' AND next_fire_at IS NOT NULL AND kind = 'single' AND zone_type = 1;
