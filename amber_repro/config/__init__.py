"""The settings: schema, loading, cross-key checks, flags, jobs."""
