"""The engine: shared segment, worker loop, fork server and supervisor."""
