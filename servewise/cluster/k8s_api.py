"""The only place that calls the ``kubernetes`` client: one call wrapper, error translation, retries.

Every request goes through ``KubeApi.call(verb, resource, namespace, fn, ...)`` so that

- responses are read as plain JSON dicts (``_preload_content=False``), the same camelCase shape as
  manifests on disk, without the generated models' validation of every field;
- ``ApiException`` becomes a ``servewise.errors`` class (``raise ... from``): 403 names the verb,
  resource and namespace and the RBAC rule to add; 404 -> ``NotFoundError``; 409 -> ``ConflictError``;
  429/5xx and connection errors/timeouts -> ``BackendUnavailableError``;
- idempotent reads are retried (bounded, tenacity) on ``BackendUnavailableError``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from servewise.errors import (
    BackendUnavailableError,
    ConflictError,
    ForbiddenError,
    InputError,
    NotFoundError,
    ServewiseError,
)

log = logging.getLogger(__name__)

READ_VERBS = ("get", "list", "watch")
# resource -> API group, for the RBAC hint in 403 messages.
API_GROUPS = {
    "deployments": "apps",
    "statefulsets": "apps",
    "replicasets": "apps",
    "jobs": "batch",
    "inferenceservices": "serving.kserve.io",
}


def load_api_client(context: str | None = None) -> client.ApiClient:
    """An ApiClient from KUBECONFIG (``context`` picks one) or the in-cluster service account."""
    cfg = client.Configuration()
    try:
        # KUBECONFIG is read now, not at import time (the client caches it at import).
        config_file = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
        config.load_kube_config(config_file=config_file, context=context, client_configuration=cfg)
    except (ConfigException, FileNotFoundError, TypeError) as kube_exc:
        if context is not None:
            raise InputError(
                f"cannot load kubeconfig context {context!r} from {config_file}: {kube_exc}",
                field="kubeconfig context",
            ) from kube_exc
        try:
            config.load_incluster_config(client_configuration=cfg)
        except ConfigException as exc:
            where = os.environ.get("KUBECONFIG", "~/.kube/config")
            raise InputError(
                f"no Kubernetes configuration: kubeconfig {where} unusable ({kube_exc}) and not in a cluster ({exc})",
                source="KUBECONFIG",
            ) from exc
    cfg.retries = False  # retries are ours (bounded, on translated errors), not urllib3's
    return client.ApiClient(cfg)


def translate(
    exc: ApiException, verb: str, resource: str, namespace: str | None, name: str | None
) -> ServewiseError:
    """One servewise error for one failed API call, naming what was attempted."""
    where = f"namespace {namespace!r}" if namespace else "cluster scope"
    target = f"{resource}/{name}" if name else resource
    detail = _status_message(exc)
    status = exc.status or 0
    if status == 403:
        group = API_GROUPS.get(resource.split("/")[0], "")
        kind = "Role" if namespace else "ClusterRole"
        return ForbiddenError(
            f"forbidden: cannot {verb} {target} in {where} ({detail}); add to the servewise {kind}"
            f'{" in " + namespace if namespace else ""}: apiGroups: ["{group}"], resources: ["{resource}"], '
            f'verbs: ["{verb}"] (see k8s/rbac.yaml)'
        )
    if status == 404:
        return NotFoundError(f"{target} not found in {where} ({detail})")
    if status == 409:
        return ConflictError(f"conflict on {verb} {target} in {where}: {detail}")
    if status == 429 or status >= 500 or status == 0:
        return BackendUnavailableError(f"API server error {status} on {verb} {target} in {where}: {detail}")
    if status == 422 or status == 400:
        return InputError(
            f"API server rejected {verb} {target} in {where}: {detail}", source=f"{resource}/{name}"
        )
    return BackendUnavailableError(f"unexpected API status {status} on {verb} {target} in {where}: {detail}")


def _status_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body) if exc.body else {}
    except (TypeError, ValueError):
        body = {}
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return str(exc.reason or "no detail")


KSERVE = ("serving.kserve.io", "v1beta1", "inferenceservices")  # group, version, plural


class KubeApi:
    """Typed API groups plus the translating call wrapper."""

    def __init__(
        self, api_client: client.ApiClient, *, request_timeout_s: float = 30.0, read_attempts: int = 3
    ):
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.request_timeout_s = request_timeout_s
        self.read_attempts = read_attempts

    def call(
        self,
        verb: str,
        resource: str,
        namespace: str | None,
        fn: Callable[..., Any],
        *args: Any,
        name: str | None = None,
        raw: bool = False,
        idempotent: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Call ``fn`` and return the decoded JSON body (or text when ``raw``); reads, and writes the
        caller marks ``idempotent`` (a delete), are retried."""
        attempts = self.read_attempts if verb in READ_VERBS or idempotent else 1
        retrying = Retrying(
            retry=retry_if_exception_type(BackendUnavailableError),
            stop=stop_after_attempt(attempts),
            wait=wait_exponential(multiplier=0.2, max=2.0),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                return self._once(verb, resource, namespace, fn, args, name, raw, kwargs)
        raise AssertionError("unreachable")  # pragma: no cover

    def _once(
        self,
        verb: str,
        resource: str,
        namespace: str | None,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        name: str | None,
        raw: bool,
        kwargs: dict[str, Any],
    ) -> Any:
        try:
            response = fn(*args, _preload_content=False, _request_timeout=self.request_timeout_s, **kwargs)
            data = response.data
        except ApiException as exc:
            raise translate(exc, verb, resource, namespace, name) from exc
        except urllib3.exceptions.HTTPError as exc:  # timeouts, refused connections, protocol errors
            where = f"namespace {namespace!r}" if namespace else "cluster scope"
            raise BackendUnavailableError(
                f"Kubernetes API unreachable on {verb} {resource} in {where}: {type(exc).__name__}: {exc}"
            ) from exc
        text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else str(data)
        if raw:
            return text
        try:
            return json.loads(text) if text else {}
        except ValueError as exc:
            raise BackendUnavailableError(f"non-JSON answer on {verb} {resource}: {text[:200]!r}") from exc
