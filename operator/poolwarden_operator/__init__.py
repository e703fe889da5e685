"""poolwarden's kopf operator: keeps every pool of a ConnectionBudget sized on every scale event.

Modules: ``handlers`` (kopf registrations only), ``reconcile`` (one pass for one budget),
``desired`` (pure: planner inputs from objects, plan files from a plan), ``status`` (pure:
conditions, status and Event text), ``applied`` (pure: the Applied condition), ``ask``
(asks consumer pods for their plan generation), ``drift`` (the periodic drift check), ``kube``
(every Kubernetes API call), ``coalesce`` (per-budget serialization), ``metrics`` (the
Prometheus series: names, pure samples, the endpoint), ``names`` (every name, label and key),
``config`` (settings from the environment), ``__main__`` (the entry point).
"""
