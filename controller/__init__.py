"""modelrollout: progressive delivery of ML models on Kubernetes.

The package is layered (arrows point down only): cli / main -> reconciler -> core, routers,
metrics -> kube -> api. `core` is pure: it imports no client library (a test enforces it).
"""

__version__ = "0.1.0"
