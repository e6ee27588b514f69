"""The `hardware` group: device, precision and threads (device.py), sharding (sharding.py), jobs of
several processes (distributed.py), checkpoints a run resumes from (checkpoints.py) and the stop
signals that save one (stops.py)."""
