"""The `logging` group and the run dir: what a run writes (outputs.py), the run-dir lock and its record
of starts (run_dir.py), what produced a run (provenance.py)."""
