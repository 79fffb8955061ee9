-- Issue 15: the cap without counting the app on every create.
--
-- create_schedule (sql/0010) counted the app's valid tasks on every create, under the app's row lock: a scan of
-- every active task of the app, so a create's cost grew with the app and its creates queued behind the count
-- (bench/README, "The cap's count": 2.1 ms a create at 20,000 tasks, 0.5-1.0 ms without the count).
--
-- Instead each app keeps an upper bound of its valid tasks. A task becomes valid only by being inserted: an
-- update needs a valid task (lock_schedule answers 28100 for an expired one), and nothing sets a task back to
-- 'active'. Tasks leave the valid set by deletion, expiry or their last fire passing, with no write at all in the
-- last case, so the bound is not lowered when they leave; it only grows, with every insert. While the bound is
-- below the cap, the valid count is too, and the create needs no count. At or past the cap, the create counts
-- as before and sets the bound to the count, so a bound left high by tasks that left is corrected by the first
-- create that needs it. An app near its cap counts on every create, as every app did.
--
-- Kept in a table of its own, not on apps: a create writes a new version of the bound's row, and on apps that
-- version would carry the app's every column and index entries (the design dropped in bench/README). fillfactor
-- 50 leaves room on the page so the update is HOT: the primary key is not touched by it.
CREATE TABLE app_cap_bounds (
    app_key text PRIMARY KEY REFERENCES apps (app_key) ON DELETE CASCADE,
    -- At least the number of the app's valid tasks, at any instant from now on.
    bound   bigint NOT NULL
) WITH (fillfactor = 50);

-- Every insert into schedules raises its apps' bounds, whoever inserts (create_schedule, a bulk load, a test):
-- the one place the bound grows. A statement trigger, on INSERT only: the engine's updates do not run it, and a
-- bulk load pays one update per app, not per row. An app with no bound yet is counted by its next create.
CREATE FUNCTION raise_cap_bounds() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE app_cap_bounds b SET bound = b.bound + added.tasks
    FROM (SELECT i.app_key, count(*) AS tasks FROM inserted i GROUP BY i.app_key) added
    WHERE b.app_key = added.app_key;
    RETURN NULL;
END;
$$;

CREATE TRIGGER schedules_raise_cap_bounds
    AFTER INSERT ON schedules REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION raise_cap_bounds();

-- create_schedule (sql/0010) again, the same signature and steps, the count only when the bound reaches the cap.
-- Concurrent creates of one app are serialized by the app's row lock, so the bound they read is the one the
-- previous create left. Any other insert of the app's tasks holds the app's row too, until it commits (the
-- foreign key's KEY SHARE lock, which FOR UPDATE waits for), so a create never reads a bound, nor counts,
-- while such an insert is in flight (tests/integration/test_schedules_api.py, an insert still in flight).
CREATE OR REPLACE FUNCTION create_schedule(
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
DECLARE
    v_bound bigint;
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
    SELECT b.bound INTO v_bound FROM app_cap_bounds b WHERE b.app_key = p_app_key;
    IF v_bound IS NULL OR v_bound >= cap THEN
        SELECT count(*) INTO valid
        FROM schedules s
        WHERE s.app_key = p_app_key AND schedule_is_valid(s.state, s.final_fire_at, p_now);
        INSERT INTO app_cap_bounds (app_key, bound) VALUES (p_app_key, valid)
        ON CONFLICT (app_key) DO UPDATE SET bound = excluded.bound;
        IF valid >= cap THEN
            outcome := 'full';
            RETURN;
        END IF;
    END IF;
    -- The insert raises the bound (raise_cap_bounds).
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
