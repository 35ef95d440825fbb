"""Infrastructure: settings and configuration, provenance, storage, crates and archives."""
