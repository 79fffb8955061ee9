-- A create in one round trip. The create transaction was six (BEGIN, lock the app, count, insert, NOTIFY,
-- COMMIT); under load the service spent most of its CPU on those round trips (bench/README.md). One
-- function call does the same work, in the same order, in one implicit transaction.
--
-- It must be a function, not one statement with CTEs: a statement reads one snapshot taken before it waits
-- for the app's lock, so two concurrent creates could both count below the cap. In a VOLATILE function
-- each statement takes a fresh snapshot, so the count after the lock sees every create committed before.
--
-- outcome: 'created'; 'existing' (the cid was used before: id and name are the first task's); 'full' (the
-- app reached its cap: valid and cap say how far); 'no_app' (the app row is gone).
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
    p_notify boolean,
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
    WHERE s.app_key = p_app_key AND s.state = 'active' AND s.final_fire_at > p_now;
    IF valid >= cap THEN
        outcome := 'full';
        RETURN;
    END IF;
    INSERT INTO schedules (id, app_key, name, enabled, trigger, push, cid, next_fire_at, final_fire_at)
    VALUES (p_id, p_app_key, p_name, p_enabled, p_trigger, p_push, p_cid, p_next_fire_at, p_final_fire_at);
    -- zone_type 2 waves already past at creation: recorded, never sent.
    IF cardinality(p_skipped_due_at) > 0 THEN
        INSERT INTO runs (id, schedule_id, due_at, utc_offset_minutes, state)
        SELECT gen_random_uuid(), p_id, wave.due_at, wave.utc_offset_minutes, 'skipped'
        FROM unnest(p_skipped_due_at, p_skipped_offsets) AS wave (due_at, utc_offset_minutes)
        ON CONFLICT (schedule_id, due_at, utc_offset_minutes) DO NOTHING;
    END IF;
    -- Wakes every replica's engine on commit; the caller skips it for fires its engines will see anyway.
    IF p_notify THEN
        PERFORM pg_notify('schedule_changes', extract(epoch FROM p_next_fire_at)::text);
    END IF;
    outcome := 'created';
    id := p_id;
    name := p_name;
END;
$$;
