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
