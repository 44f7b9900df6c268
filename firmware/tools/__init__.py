"""Host-side tooling of the MicroPython firmware: bundles, flashing, running the unix port."""
