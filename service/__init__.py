"""Push schedule service: a self-hosted scheduler of push notifications speaking the v4 schedules API."""
