"""The simulated fleet: trackers driving bundled routes, reporting as devices would."""
