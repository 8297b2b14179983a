"""Connect to the API server: an explicit kubeconfig, the in-cluster config, or $KUBECONFIG."""

from __future__ import annotations

from kubernetes import client, config


def api_client(kubeconfig: str | None = None, *, context: str | None = None) -> client.ApiClient:
    if kubeconfig:
        api: client.ApiClient = config.new_client_from_config(config_file=kubeconfig, context=context)
        return api
    try:
        config.load_incluster_config()
        return client.ApiClient()
    except config.ConfigException:
        fallback: client.ApiClient = config.new_client_from_config(context=context)
        return fallback


def current_namespace(kubeconfig: str | None = None, *, context: str | None = None) -> str:
    """The namespace of the kubeconfig context (kubectl's default), else the pod's, else default."""
    try:
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
        chosen = next((c for c in contexts if c["name"] == context), active) if context else active
        namespace = (chosen or {}).get("context", {}).get("namespace")
        if namespace:
            return str(namespace)
    except (config.ConfigException, OSError, TypeError):
        pass
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as handle:
            return handle.read().strip() or "default"
    except OSError:
        return "default"
