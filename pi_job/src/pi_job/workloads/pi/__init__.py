"""Monte-Carlo pi ("throwing darts"): the first workload."""
