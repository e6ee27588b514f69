"""The few TRL subclasses rlvr needs; each overrides the smallest method that does the job."""
