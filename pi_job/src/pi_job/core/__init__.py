"""Generic queue machinery: connections, envelopes, journal, master, worker, status."""
