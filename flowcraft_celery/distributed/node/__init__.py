"""The node task: one node message executed on a worker, its lease, and dead-lettering what a run does not expect."""
