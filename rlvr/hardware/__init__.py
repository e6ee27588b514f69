"""The `hardware` group: device, precision and threads (device.py), sharding (sharding.py), jobs of
several processes and jobs that stop and come back (distributed.py)."""
