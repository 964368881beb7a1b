"""Recipe -> trained run folder: preflight, the trl boundary (``upstream``, ``trainer``), speed levers, the
reference cache, the plan, checkpoints, and sweeps over many recipes."""
