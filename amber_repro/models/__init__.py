"""Models built (the tiny embedded ones) or fetched (hub), and saved."""
