-- Apps, schedules and runs: the whole state of the service. PostgreSQL is the source of truth.

CREATE TABLE apps (
    app_key        text PRIMARY KEY,
    name           text NOT NULL,
    -- SHA-256 of the master secret: the secret is 32 random bytes, so the digest cannot be reversed and a
    -- dump of this table does not let anyone call the API as the app.
    secret_sha256  bytea NOT NULL,
    time_zone      text NOT NULL DEFAULT 'UTC',
    max_schedules  integer NOT NULL DEFAULT 1000 CHECK (max_schedules >= 0),
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE schedules (
    id             uuid PRIMARY KEY,
    app_key        text NOT NULL REFERENCES apps (app_key),
    name           text NOT NULL,
    enabled        boolean NOT NULL,
    trigger        jsonb NOT NULL,
    push           jsonb NOT NULL,
    cid            text,
    state          text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'expired', 'deleted')),
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- The next instant the engine has to plan; NULL once everything is planned.
    next_fire_at   timestamptz,
    -- The last fire (or last wave): the task is valid while this lies in the future.
    final_fire_at  timestamptz NOT NULL,
    CONSTRAINT schedules_app_cid_key UNIQUE (app_key, cid)
);

-- List a valid page: oldest created first, per app.
CREATE INDEX schedules_app_created_idx ON schedules (app_key, created_at, id) WHERE state = 'active';
-- Count an app's valid tasks against its cap.
CREATE INDEX schedules_app_final_fire_idx ON schedules (app_key, final_fire_at) WHERE state = 'active';
-- The engine's due work.
CREATE INDEX schedules_due_idx ON schedules (next_fire_at) WHERE enabled AND state = 'active' AND next_fire_at IS NOT NULL;

-- One row per planned fire or zone_type 2 wave; a sent run's msg_id is what msg-ids lists.
CREATE TABLE runs (
    id                  uuid PRIMARY KEY,
    schedule_id         uuid NOT NULL REFERENCES schedules (id),
    due_at              timestamptz NOT NULL,
    -- zone_type 2: the wave's UTC offset; 0 for zone_type 1 (its due instant is unique on its own).
    utc_offset_minutes  integer NOT NULL DEFAULT 0,
    state               text NOT NULL CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'skipped', 'missed')),
    attempts            integer NOT NULL DEFAULT 0,
    lease_until         timestamptz,
    msg_id              text,
    error               text,
    created_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    sent_at             timestamptz,
    CONSTRAINT runs_schedule_due_wave_key UNIQUE (schedule_id, due_at, utc_offset_minutes)
);

CREATE INDEX runs_sent_idx ON runs (schedule_id, sent_at) WHERE state = 'sent';
