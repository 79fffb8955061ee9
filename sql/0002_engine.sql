-- The dispatch engine: run attempts, leases, retries, per-run timing, and the apps' push credentials.

ALTER TABLE apps
    ADD COLUMN push_key text,
    -- Fernet token (AES-128-CBC + HMAC) of the push secret, keyed by PUSH_CREDENTIALS_KEY; never plain text.
    ADD COLUMN push_secret_encrypted bytea;

ALTER TABLE runs DROP CONSTRAINT runs_state_check;
ALTER TABLE runs
    ADD CONSTRAINT runs_state_check
        CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'skipped', 'missed', 'cancelled')),
    -- When a pending run may be (re)tried.
    ADD COLUMN next_attempt_at timestamptz,
    -- When the run was first handed to the push backend, for lateness (dispatched_at - due_at).
    ADD COLUMN dispatched_at timestamptz,
    -- Terminal outcome instant (sent, failed, missed, cancelled).
    ADD COLUMN finished_at timestamptz,
    -- What the local backend "sent", kept so `serve` alone shows what would have gone out.
    ADD COLUMN payload jsonb;

-- Retries that are due.
CREATE INDEX runs_pending_idx ON runs (next_attempt_at) WHERE state = 'pending';
-- Sends whose lease may have run out (a crashed sender's work).
CREATE INDEX runs_sending_idx ON runs (lease_until) WHERE state = 'sending';
-- Runs of one schedule still open, for cancel-on-delete/disable.
CREATE INDEX runs_open_by_schedule_idx ON runs (schedule_id) WHERE state IN ('pending', 'sending');
-- Disabled tasks whose last fire has passed, for the sweep that expires them.
CREATE INDEX schedules_lapsed_idx ON schedules (final_fire_at) WHERE state = 'active' AND NOT enabled;
