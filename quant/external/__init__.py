"""Scripts that run inside other runtimes' environments (no slimpack import there)."""
