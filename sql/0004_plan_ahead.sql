-- Planning ahead: the engine plans fires shortly before they are due and holds them in memory, so the due
-- instant costs one claim instead of a whole plan. Such a run is 'planned': reserved to the engine that
-- planned it until lease_until (its due instant plus a short reservation); after that any engine takes it
-- over, as it does a 'sending' run whose lease ran out. A change to the task (update, disable, delete)
-- deletes its planned runs: they were never attempted, and the task is planned again from its new values.

ALTER TABLE runs DROP CONSTRAINT runs_state_check;
ALTER TABLE runs
    ADD CONSTRAINT runs_state_check
        CHECK (state IN ('planned', 'pending', 'sending', 'sent', 'failed', 'skipped', 'missed', 'cancelled'));

-- Reservations that ran out (the planner died or stopped), for takeover and for the engine's wake-up.
CREATE INDEX runs_planned_idx ON runs (lease_until) WHERE state = 'planned';

-- Runs of one schedule still open, for drop-on-change and cancel-on-delete/disable.
DROP INDEX runs_open_by_schedule_idx;
CREATE INDEX runs_open_by_schedule_idx ON runs (schedule_id) WHERE state IN ('planned', 'pending', 'sending');

-- A task whose every fire is planned keeps its state until its last fire has passed (it is still valid and
-- can still be changed or deleted meanwhile); the sweep then expires it.
CREATE INDEX schedules_fully_planned_idx ON schedules (final_fire_at) WHERE state = 'active' AND next_fire_at IS NULL;
