-- What the API reads of a task, defined once. The detail, each of the eight list orders and the update's lock
-- used to repeat the same seventeen columns, next_run_at's expression among them; they select from this view
-- now. A plain view: the planner inlines it, so each list order still reads its own index from the app's first
-- entry (tests/integration/test_query_plans.py counts the rows page 1 reads) and FOR UPDATE still locks the
-- task's row. `state` and `kind` are there for the filters.
CREATE VIEW schedules_as_shown AS
SELECT s.id, s.app_key, s.name, s.enabled, s.trigger, s.push, s.created_at, s.final_fire_at, s.time_zone,
       s.description, s.max_failures, s.consecutive_failures, s.disabled_reason,
       schedule_next_run_at(s.enabled, s.next_fire_at, s.parked_fire_at) AS next_run_at,
       s.last_run_due_at, s.last_run_state, s.last_run_msg_id, s.state, s.kind
FROM schedules s;
