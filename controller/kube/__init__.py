"""The only package that imports the kubernetes client: objects, rollouts, events, leases.

Everything above it sees plain dicts and our own exceptions (controller.kube.errors).
"""
