"""Beat's reconcile passes and the evidence they read (queues, in-flight executions)."""
