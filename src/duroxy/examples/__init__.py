"""Example applications shipped with duroxy (run one with ``duroxy demo``)."""
