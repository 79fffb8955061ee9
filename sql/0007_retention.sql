-- Data retention (RETENTION_DAYS): the engine's retention sweep (service/engine/retention.py) purges terminal
-- runs whose end is older than the retention, and tasks deleted or expired longer ago than that, with their
-- runs. It works in small batches, each its own short transaction, and never waits on a lock dispatch holds:
-- tasks are taken with SKIP LOCKED, and only runs in a final state go, which no engine statement writes.

-- The instant a task left the valid set, from which its retention counts; its msg-ids stay readable until
-- then. A delete (and an app's delete) writes updated_at, and so do, from this migration on, the sweep that
-- expires a task after its last fire and the engine when it stops a task it cannot plan (stopped_reason set).
-- A task the sweep expired before that counts from its last fire, the later of the two: its updated_at is an
-- older change. A stopped task counts from updated_at, never from its last fire, which may lie ahead or never
-- come (a cron or interval task without end: 'infinity').
CREATE FUNCTION schedule_ended_at(
    p_state text, p_updated_at timestamptz, p_final_fire_at timestamptz, p_stopped_reason text
)
RETURNS timestamptz LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p_state = 'expired' AND p_stopped_reason IS NULL THEN greatest(p_updated_at, p_final_fire_at)
                ELSE p_updated_at END
$$;

-- The tasks the sweep purges, oldest ended first. Partial: an active task is never in it, so creates and the
-- planner's updates (which never set a task deleted or expired) add nothing here.
CREATE INDEX schedules_ended_idx ON schedules (schedule_ended_at(state, updated_at, final_fire_at, stopped_reason))
    WHERE state IN ('deleted', 'expired');

-- The runs the sweep purges by age, oldest created first. Only runs in a final state are in it, so a run
-- adds one entry, at its final write (measured: an UPDATE of 100k runs to 'sent' touched 1.86M buffers with it,
-- 1.55M without: 3 more per run; the local 100k burst before and after is in bench/README.md "Retention").
-- Not a BRIN on created_at, although that costs inserts nothing: a BRIN range keeps the oldest value it ever
-- held, and the space a purge frees is refilled with new runs, so its ranges stop excluding anything. Measured
-- on 3M runs after purging the oldest 1M and writing 1M new ones: a batch finding nothing to purge read 9,536
-- pages (715,200 rows, 77 ms) through the BRIN, 3 buffers (0.03 ms) through this index.
CREATE INDEX runs_finished_created_idx ON runs (created_at)
    WHERE state IN ('sent', 'failed', 'missed', 'skipped', 'cancelled');

-- One batch of the task purge: up to p_tasks tasks ended before p_cutoff (locked SKIP LOCKED: a task an API
-- call or another replica's purge holds is left for a later batch), at most p_runs of their runs, then the
-- tasks left without runs (the runs reference their task). A task with runs left over is taken again by the
-- next batch. A task still holding an open run (a send in flight of a task deleted meanwhile) waits until that
-- run is settled. Its runs are not locked first: only runs in a final state go, which no engine statement
-- writes (see purge_old_runs in queries.sql).
-- The runs go in task order through the unique key's index (runs_schedule_due_wave_key), so the batch ends
-- at most one task short. The function's own SET rules out the bitmap scan the planner otherwise picks: it reads
-- and sorts every run of the batch's tasks before the LIMIT (200 tasks of 200 runs: 42 ms instead of 7 ms).
CREATE FUNCTION purge_ended_schedules(
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
    DELETE FROM schedules s
    WHERE s.id = ANY (v_ids) AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.schedule_id = s.id);
    GET DIAGNOSTICS schedules = ROW_COUNT;
END;
$$;
