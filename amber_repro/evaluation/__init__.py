"""Evaluation: eval.json, generations, the safety judge, sweeps and the report's figures."""
