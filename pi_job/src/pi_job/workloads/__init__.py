"""Workloads: what the cluster computes, found through the ``pi_job.workloads`` entry points."""
