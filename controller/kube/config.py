"""Connect to the API server: an explicit kubeconfig, the in-cluster config, or $KUBECONFIG.

Every request has a deadline. The kubernetes client has none by default: a request whose
answer never comes (a half-open connection after a network partition, an API server that
accepted the connection and then stalled) would hold a worker, or the lease renewer, for ever.
A request that times out is `Unavailable`, retried with back-off like any other outage."""

from __future__ import annotations

from typing import Any

from kubernetes import client, config
from urllib3.util.retry import Retry

# (connect, read) seconds for one request. A watch passes its own read deadline (its
# server-side timeout plus a margin), the lease renewer its renew deadline.
REQUEST_TIMEOUT = (10.0, 30.0)


def api_client(kubeconfig: str | None = None, *, context: str | None = None) -> client.ApiClient:
    configuration = client.Configuration()
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
    else:
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            config.load_kube_config(context=context, client_configuration=configuration)
    # A refused or reset connection is tried again at once, twice (cheap, and common while an
    # API server restarts); a request that timed out is not: its deadline means what it says,
    # and the caller's own back-off decides when to ask again.
    configuration.retries = Retry(total=2, connect=2, read=0, status=0, other=0, redirect=0, backoff_factor=0.2)
    return with_deadline(client.ApiClient(configuration))


def with_deadline(api: client.ApiClient, timeout: tuple[float, float] = REQUEST_TIMEOUT) -> client.ApiClient:
    """Give every request of `api` that names no timeout of its own this (connect, read) one.

    Done on the client's REST layer, the one call every generated method (and `watch`) goes
    through, in each version of the kubernetes package we support."""
    rest = api.rest_client
    send = rest.request

    def request(*args: Any, **kwargs: Any) -> Any:
        if not kwargs.get("_request_timeout"):
            kwargs["_request_timeout"] = timeout
        return send(*args, **kwargs)

    rest.request = request  # type: ignore[method-assign]
    return api


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
