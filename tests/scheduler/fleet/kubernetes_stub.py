"""A small stand-in for the Kubernetes API server: real HTTP on 127.0.0.1, the few REST
paths the Kubernetes driver calls, objects kept in memory.

- POST/GET/PUT/DELETE /apis/apps/v1/namespaces/{ns}/deployments[/{name}]
- POST/GET/PUT/DELETE /api/v1/namespaces/{ns}/services[/{name}]
- GET /api/v1/namespaces/{ns}/pods (pods the test adds with `add_pod`)
- GET /api/v1/namespaces/{ns}/services/{name}:{port}/proxy/{path} (the service proxy)
- GET /api/v1/namespaces/{ns}/pods/{name}:{port}/proxy/{path} (the pod proxy)

Like the real server: create answers 409 AlreadyExists, replace with a stale
resourceVersion 409 Conflict, an unknown object 404 NotFound, all as Status objects;
list takes an equality labelSelector. A foreground delete of a Deployment only marks it
(deletionTimestamp) until `finish_deletions` — the time its pod takes to drain.
"""

import json
import re
import threading
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote

from kubernetes import client as k8s

ROUTES = [
    (re.compile(r"^/apis/apps/v1/namespaces/([^/]+)/deployments(?:/([^/]+))?$"), "deployments"),
    (re.compile(r"^/api/v1/namespaces/([^/]+)/services/([^/:]+):([^/]+)/proxy/(.*)$"), "proxy"),
    (re.compile(r"^/api/v1/namespaces/([^/]+)/services(?:/([^/]+))?$"), "services"),
    (re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/:]+):([^/]+)/proxy/(.*)$"), "pod_proxy"),
    (re.compile(r"^/api/v1/namespaces/([^/]+)/pods$"), "pods"),
]
KINDS = {"deployments": ("apps/v1", "Deployment"), "services": ("v1", "Service"), "pods": ("v1", "Pod")}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class StubKubernetes:
    def __init__(self):
        self.objects = {"deployments": {}, "services": {}, "pods": {}}  # kind → (ns, name) → object
        self.requests: list[tuple[str, str]] = []  # (method, path), in order
        self.metrics: dict[str, str] = {}  # replica (Service) name → /metrics body (absent: 503)
        self.fail_with: int | None = None  # answer every request with this status (e.g. 403)
        self._lock = threading.Lock()
        self._version = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    # --- test controls --------------------------------------------------------------------

    def start(self) -> "StubKubernetes":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def api_client(self) -> k8s.ApiClient:
        configuration = k8s.Configuration()
        configuration.host = self.url
        return k8s.ApiClient(configuration)

    def deployment(self, name: str, namespace: str = "switchyard") -> dict | None:
        return self.objects["deployments"].get((namespace, name))

    def service(self, name: str, namespace: str = "switchyard") -> dict | None:
        return self.objects["services"].get((namespace, name))

    def set_deployment_status(self, name: str, status: dict, namespace: str = "switchyard") -> None:
        self.objects["deployments"][(namespace, name)]["status"] = status

    def add_pod(self, replica_name: str, *, phase: str = "Running", ready: bool = False, scheduled: bool = True,
                unschedulable_message: str = "", container_state: dict | None = None, node: str = "eu1-a-0001",
                namespace: str = "switchyard") -> None:
        labels = dict(self.objects["deployments"][(namespace, replica_name)]["spec"]["template"]["metadata"]["labels"])
        conditions = [{"type": "PodScheduled", "status": "True" if scheduled else "False",
                       "reason": None if scheduled else "Unschedulable", "message": unschedulable_message or None,
                       "lastTransitionTime": _now()}]
        if scheduled:
            conditions.append({"type": "Ready", "status": "True" if ready else "False",
                               "lastTransitionTime": "2026-11-27T10:00:00Z"})
        name = f"{replica_name}-{uuid.uuid4().hex[:5]}"
        self.objects["pods"][(namespace, name)] = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels, "uid": str(uuid.uuid4())},
            "spec": {"nodeName": node if scheduled else None, "containers": [{"name": "vllm", "image": "x"}]},
            "status": {"phase": phase, "conditions": conditions, "podIP": "10.244.0.7" if scheduled else None,
                       "containerStatuses": [{"name": "vllm", "ready": ready, "restartCount": 0, "image": "x",
                                              "imageID": "", "state": container_state or {}}]
                       if scheduled else None},
        }

    def finish_deletions(self) -> None:
        """The drained pods are gone: objects marked for deletion disappear, with their pods."""
        for key, deployment in list(self.objects["deployments"].items()):
            if deployment["metadata"].get("deletionTimestamp"):
                del self.objects["deployments"][key]
                replica = deployment["metadata"]["labels"]["switchyard.io/replica"]
                for pod_key, pod in list(self.objects["pods"].items()):
                    if pod["metadata"]["labels"].get("switchyard.io/replica") == replica:
                        del self.objects["pods"][pod_key]

    # --- HTTP -----------------------------------------------------------------------------

    def _handler(self):
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, status: int, body, content_type="application/json"):
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _status(self, code: int, reason: str, message: str):
                self._send(code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                  "message": message, "reason": reason, "code": code})

            def _body(self) -> dict:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"{}")

            def _dispatch(self, method: str):
                path, _, query = self.path.partition("?")
                path = unquote(path)  # the client escapes "name:port" in proxy paths, as the server expects
                with stub._lock:
                    stub.requests.append((method, path))
                    if stub.fail_with:
                        return self._status(stub.fail_with, "Forbidden", "stub: refused")
                    for pattern, kind in ROUTES:
                        match = pattern.match(path)
                        if match:
                            return getattr(self, f"_{kind}")(method, match, query)
                    return self._status(404, "NotFound", f"stub: no route for {path}")

            def do_GET(self):
                self._dispatch("GET")

            def do_POST(self):
                self._dispatch("POST")

            def do_PUT(self):
                self._dispatch("PUT")

            def do_DELETE(self):
                self._dispatch("DELETE")

            def _deployments(self, method, match, query):
                self._objects("deployments", method, match.group(1), match.group(2), query)

            def _services(self, method, match, query):
                self._objects("services", method, match.group(1), match.group(2), query)

            def _pods(self, method, match, query):
                self._objects("pods", method, match.group(1), None, query)

            def _proxy(self, method, match, query):
                namespace, name, _port, target = match.groups()
                if (namespace, name) not in stub.objects["services"]:
                    return self._status(404, "NotFound", f'services "{name}" not found')
                if target != "metrics" or name not in stub.metrics:
                    return self._status(503, "ServiceUnavailable", f'no endpoints available for service "{name}"')
                self._send(200, stub.metrics[name], "text/plain; version=0.0.4; charset=utf-8")

            def _pod_proxy(self, method, match, query):
                namespace, name, _port, target = match.groups()
                pod = stub.objects["pods"].get((namespace, name))
                if pod is None:
                    return self._status(404, "NotFound", f'pods "{name}" not found')
                replica = pod["metadata"]["labels"].get("switchyard.io/replica")
                if target != "metrics" or replica not in stub.metrics or pod["status"]["phase"] != "Running":
                    return self._status(503, "ServiceUnavailable", "error trying to reach service: connection refused")
                self._send(200, stub.metrics[replica], "text/plain; version=0.0.4; charset=utf-8")

            def _objects(self, kind, method, namespace, name, query):
                store = stub.objects[kind]
                api_version, kind_name = KINDS[kind]
                if method == "GET" and name is None:
                    selector = dict(pair.split("=", 1) for pair in
                                    _query(query).get("labelSelector", "").split(",") if pair)
                    items = [o for (ns, _), o in sorted(store.items()) if ns == namespace and all(
                        o["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())]
                    return self._send(200, {"apiVersion": api_version, "kind": f"{kind_name}List",
                                            "metadata": {"resourceVersion": str(stub._version)}, "items": items})
                if method == "POST":
                    body = self._body()
                    key = (namespace, body["metadata"]["name"])
                    if key in store:
                        return self._status(409, "AlreadyExists", f'{kind} "{key[1]}" already exists')
                    stub._version += 1
                    body["metadata"].update(uid=str(uuid.uuid4()), resourceVersion=str(stub._version),
                                            creationTimestamp=_now(), namespace=namespace)
                    if kind == "services":
                        body["spec"]["clusterIP"] = f"10.96.0.{len(store) + 10}"
                        body["spec"]["clusterIPs"] = [body["spec"]["clusterIP"]]
                    body.setdefault("status", {})
                    store[key] = body
                    return self._send(201, body)
                key = (namespace, name)
                if key not in store:
                    return self._status(404, "NotFound", f'{kind} "{name}" not found')
                current = store[key]
                if method == "GET":
                    return self._send(200, current)
                if method == "PUT":
                    body = self._body()
                    version = body["metadata"].get("resourceVersion")
                    if version and version != current["metadata"]["resourceVersion"]:
                        return self._status(409, "Conflict", "the object has been modified")
                    if kind == "services" and body["spec"].get("clusterIP") not in (None, current["spec"]["clusterIP"]):
                        return self._status(422, "Invalid", "spec.clusterIP: field is immutable")
                    stub._version += 1
                    for field in ("uid", "creationTimestamp"):
                        body["metadata"][field] = current["metadata"][field]
                    body["metadata"]["resourceVersion"] = str(stub._version)
                    body["status"] = current.get("status", {})
                    store[key] = body
                    return self._send(200, body)
                if method == "DELETE":
                    options = self._body()
                    if kind == "deployments" and options.get("propagationPolicy") == "Foreground":
                        current["metadata"]["deletionTimestamp"] = _now()
                        return self._send(200, current)
                    del store[key]
                    return self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
                return self._status(405, "MethodNotAllowed", method)

        return Handler


def _query(query: str) -> dict:
    return {k: v[0] for k, v in parse_qs(query).items()}
