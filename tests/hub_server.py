"""A small Hugging Face Hub-compatible HTTP server, and the `hub_server` pytest fixture that points the real
huggingface_hub, transformers, sentence-transformers and datasets code at it.

The server implements the part of the Hub's HTTP API that these libraries call (read from their installed
source, not guessed):

- `GET /api/whoami-v2`, `POST /api/repos/create`, `POST /api/validate-yaml`;
- `GET /api/{models,datasets}/{repo_id}[/revision/{rev}]` (`sha`, `siblings`, `cardData`, `model-index`, ...);
- `POST .../preupload/{rev}`, `POST .../commit/{rev}` (NDJSON body, base64 regular files, LFS pointers);
- the Git LFS batch API (`{repo}.git/info/lfs/objects/batch`), basic single-part uploads and `verify`;
- `GET .../tree/{rev}[/{path}]` (paginated with a `Link` header), `POST .../paths-info/{rev}`,
  `GET .../refs`, `GET .../commits/{rev}`, `POST .../branch/{name}`, `POST .../tag/{rev}`;
- `GET`/`HEAD /{repo_id}/resolve/{rev}/{path}` and `/datasets/{repo_id}/resolve/...` with `X-Repo-Commit`,
  `ETag`, `Range`; LFS files answer with a `302` to a content-addressed blob URL on another host name
  (`localhost` instead of `127.0.0.1`), carrying `X-Linked-Etag` and `X-Linked-Size`, as the Hub's CDN does.

Errors carry the Hub's `X-Error-Code` header (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`) so clients
raise their usual exception types. Writes need a valid token (`Authorization: Bearer ...`): a missing or unknown
token gets `401`. Storage lives in memory; a commit is a full snapshot of the repo identified by a 40-hex sha.
Requests can be made to fail on purpose with [`HubServer.fail_requests`]. Pull requests, deletions and Xet
storage are not implemented.

Tests get a fresh server per test from the `hub_server` fixture:

```python
from tests.hub_server import HubServer, hub_server_fixture  # noqa: F401 - registers the `hub_server` fixture

def test_upload(hub_server: HubServer):
    HfApi().create_repo("org/name")  # HF_ENDPOINT, HF_TOKEN, ... already point at the server
```
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest
import yaml

__all__ = ["HubServer", "hub_server_fixture", "patch_hub_environment"]

USER = "hf-kd-tester"
ORGS = ("org", "hf-kd")
WRITE_TOKEN = "hf_hubtest_write_0123456789abcdef"
READ_TOKEN = "hf_hubtest_read_0123456789abcdef"

# The Hub creates every repo with a `.gitattributes` that stores these patterns with Git LFS.
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z",
        "*.arrow",
        "*.bin",
        "*.bz2",
        "*.ckpt",
        "*.gz",
        "*.h5",
        "*.joblib",
        "*.model",
        "*.msgpack",
        "*.npy",
        "*.npz",
        "*.onnx",
        "*.ot",
        "*.parquet",
        "*.pb",
        "*.pickle",
        "*.pkl",
        "*.pt",
        "*.pth",
        "*.safetensors",
        "*.tar",
        "*.tflite",
        "*.tgz",
        "*.xz",
        "*.zip",
        "*.zst",
        "*tfevents*",
    )
)
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024  # files above 10 MB always go through LFS
REPO_TYPE_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
API_REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}


def git_blob_sha1(content: bytes) -> str:
    """The git object id of a blob, as the Hub reports it for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


# --------------------------------------------------------------------------------------------------------------------
# Storage
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredFile:
    """One file of a commit: regular files keep their bytes, LFS files point into the LFS store by sha256."""

    size: int
    blob_id: str
    content: bytes | None = None
    lfs_sha256: str | None = None

    def tree_entry(self, path: str) -> dict:
        entry = {"type": "file", "oid": self.blob_id, "size": self.size, "path": path}
        if self.lfs_sha256 is not None:
            pointer_size = len(lfs_pointer(self.lfs_sha256, self.size))
            entry["lfs"] = {"oid": self.lfs_sha256, "size": self.size, "pointerSize": pointer_size}
        return entry


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    message: str
    date: str
    files: dict[str, StoredFile]


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> str | None:
        """Commit sha of a branch, tag, full sha or unique sha prefix (at least 7 characters)."""
        if revision in self.branches:
            return self.branches[revision]
        if revision in self.tags:
            return self.tags[revision]
        if revision in self.commits:
            return revision
        if re.fullmatch(r"[0-9a-f]{7,39}", revision):
            matches = [oid for oid in self.commits if oid.startswith(revision)]
            if len(matches) == 1:
                return matches[0]
        return None

    def history(self, oid: str) -> Iterator[Commit]:
        current: str | None = oid
        while current is not None:
            commit = self.commits[current]
            yield commit
            current = commit.parent


class HubError(Exception):
    """An HTTP error answer, with the Hub's `X-Error-Code` where the Hub sends one."""

    def __init__(
        self,
        status: int,
        message: str,
        error_code: str | None = None,
        headers: dict | None = None,
        extra: dict | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code
        self.headers = headers or {}
        self.extra = extra or {}


@dataclass
class FailureRule:
    """Makes matching requests fail: with `status` (a JSON error body), or by closing the connection."""

    method: str
    path_pattern: str
    status: int | None
    message: str
    times: int


@dataclass
class LoggedRequest:
    method: str
    path: str
    status: int
    authorized_as: str | None


class HubState:
    """In-memory repos, commits, LFS objects and tokens; all access under one lock."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self.lock = threading.RLock()
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.tokens: dict[str, tuple[str, str]] = {WRITE_TOKEN: (USER, "write"), READ_TOKEN: (USER, "read")}
        self.namespaces: set[str] = {USER, *ORGS}
        self._counter = 0

    def repo_url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.endpoint}/{REPO_TYPE_PREFIXES[repo_type]}{repo_id}"

    def new_oid(self, *parts: str) -> str:
        self._counter += 1
        return hashlib.sha1("\0".join((*parts, str(self._counter), str(time.time_ns()))).encode()).hexdigest()

    def get_repo(self, repo_type: str, repo_id: str, user: str | None) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not self._can_access(repo, user)):
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _can_access(self, repo: Repo, user: str | None) -> bool:
        return user is not None and repo.repo_id.split("/")[0] in self.namespaces

    def create_repo(self, repo_type: str, repo_id: str, private: bool) -> Repo:
        if (repo_type, repo_id) in self.repos:
            raise HubError(
                409,
                f"You already created this {repo_type} repo",
                extra={"url": self.repo_url(repo_type, repo_id)},
            )
        namespace = repo_id.split("/")[0]
        if namespace not in self.namespaces:
            raise HubError(403, f"You don't have the rights to create a {repo_type} under the namespace '{namespace}'")
        repo = Repo(repo_type=repo_type, repo_id=repo_id, private=private, created_at=_now())
        attributes = DEFAULT_GITATTRIBUTES.encode()
        files = {".gitattributes": StoredFile(len(attributes), git_blob_sha1(attributes), content=attributes)}
        oid = self.new_oid(repo_type, repo_id, "initial commit")
        repo.commits[oid] = Commit(oid, None, "initial commit", "", _now(), files)
        repo.branches["main"] = oid
        self.repos[(repo_type, repo_id)] = repo
        return repo


def _lfs_patterns(files: dict[str, StoredFile]) -> list[str]:
    attributes = files.get(".gitattributes")
    if attributes is None or attributes.content is None:
        return []
    return [
        line.split()[0]
        for line in attributes.content.decode(errors="replace").splitlines()
        if "filter=lfs" in line.split()[1:]
    ]


def _matches_any(path: str, patterns: list[str]) -> bool:
    name = path.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(path, p) for p in patterns)


def split_front_matter(text: str) -> tuple[str | None, str]:
    """YAML block of a README (None when it has none) and the text after it."""
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, flags=re.DOTALL)
    if match is None:
        return None, text
    return match.group(1), text[match.end() :]


def validate_card_metadata(text: str) -> list[str]:
    """Errors the Hub reports for a README's YAML metadata (parse errors, wrong types, a malformed model-index)."""
    block, _ = split_front_matter(text)
    if block is None:
        return []
    try:
        metadata = yaml.safe_load(block)
    except yaml.YAMLError as e:
        return [f"YAML metadata could not be parsed: {e}"]
    if metadata is None:
        return []
    if not isinstance(metadata, dict):
        return ["YAML metadata must be a mapping"]
    errors = []
    for key in ("tags", "datasets", "language"):
        if key in metadata and not isinstance(metadata[key], (str, list)):
            errors.append(f'"{key}" must be a string or a list of strings')
    if "license" in metadata and not isinstance(metadata["license"], str):
        errors.append('"license" must be a string')
    if "model-index" in metadata:
        errors.extend(_validate_model_index(metadata["model-index"]))
    return errors


def _validate_model_index(model_index) -> list[str]:
    if not isinstance(model_index, list):
        return ['"model-index" must be a list']
    errors = []
    for i, model in enumerate(model_index):
        if not isinstance(model, dict) or not isinstance(model.get("name"), str):
            errors.append(f'"model-index[{i}].name" is required')
            continue
        for j, result in enumerate(model.get("results") or []):
            where = f"model-index[{i}].results[{j}]"
            task, dataset = result.get("task"), result.get("dataset")
            if not isinstance(task, dict) or not isinstance(task.get("type"), str):
                errors.append(f'"{where}.task.type" is required')
            if not isinstance(dataset, dict) or not all(isinstance(dataset.get(k), str) for k in ("name", "type")):
                errors.append(f'"{where}.dataset.name" and "{where}.dataset.type" are required')
            metrics = result.get("metrics")
            if not isinstance(metrics, list) or not metrics:
                errors.append(f'"{where}.metrics" must be a non-empty list')
                continue
            for k, metric in enumerate(metrics):
                if not isinstance(metric, dict) or "type" not in metric or "value" not in metric:
                    errors.append(f'"{where}.metrics[{k}]" needs "type" and "value"')
    return errors


# --------------------------------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------------------------------

_REPO = r"(?P<repo_id>[^/]+/[^/]+)"
_API_REPO = rf"/api/(?P<api_type>models|datasets|spaces)/{_REPO}"
ROUTES: list[tuple[str, re.Pattern, str]] = [
    (method, re.compile(pattern + r"$"), handler)
    for method, pattern, handler in [
        ("GET", r"/api/whoami-v2", "whoami"),
        ("POST", r"/api/repos/create", "create_repo"),
        ("POST", r"/api/validate-yaml", "validate_yaml"),
        ("GET", _API_REPO, "repo_info"),
        ("GET", _API_REPO + r"/revision/(?P<rev>[^/]+)", "repo_info"),
        ("POST", _API_REPO + r"/preupload/(?P<rev>[^/]+)", "preupload"),
        ("POST", _API_REPO + r"/commit/(?P<rev>[^/]+)", "commit"),
        ("GET", _API_REPO + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", "tree"),
        ("POST", _API_REPO + r"/paths-info/(?P<rev>[^/]+)", "paths_info"),
        ("GET", _API_REPO + r"/refs", "refs"),
        ("GET", _API_REPO + r"/commits/(?P<rev>[^/]+)", "commits"),
        ("POST", _API_REPO + r"/branch/(?P<branch>[^/]+)", "create_branch"),
        ("POST", _API_REPO + r"/tag/(?P<rev>[^/]+)", "create_tag"),
        ("POST", rf"/(?P<url_type>datasets/|spaces/)?{_REPO}\.git/info/lfs/objects/batch", "lfs_batch"),
        ("POST", rf"/(?P<url_type>datasets/|spaces/)?{_REPO}\.git/info/lfs/objects/verify", "lfs_verify"),
        ("PUT", r"/lfs-storage/(?P<sha256>[0-9a-f]{64})", "lfs_upload"),
        ("GET", r"/lfs-storage/(?P<sha256>[0-9a-f]{64})", "lfs_download"),
        ("HEAD", r"/lfs-storage/(?P<sha256>[0-9a-f]{64})", "lfs_download"),
        ("GET", rf"/(?P<url_type>datasets/|spaces/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
        ("HEAD", rf"/(?P<url_type>datasets/|spaces/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
    ]
]


class HubRequestHandler(BaseHTTPRequestHandler):
    """Routes one request to a `_handle_*` method; answers `HubError`s in the Hub's error shape."""

    protocol_version = "HTTP/1.1"
    server: _HubHTTPServer

    def log_message(self, format, *args):
        pass  # keep the test output quiet

    def do_GET(self):
        self._dispatch()

    def do_HEAD(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def do_PUT(self):
        self._dispatch()

    # ---- plumbing -------------------------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        hub: HubServer = self.server.hub
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        self.user: str | None = None
        self.role: str | None = None
        self._status = 500
        try:
            self._body = self._read_body()
            self._authenticate()
            rule = hub._take_failure(self.command, url.path)
            if rule is not None:
                if rule.status is None:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self._status = 0
                    return
                raise HubError(rule.status, rule.message)
            for method, pattern, name in ROUTES:
                match = pattern.match(url.path)
                if match and method == self.command:
                    params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                    with hub.state.lock:
                        getattr(self, f"_handle_{name}")(**params)
                    return
            raise HubError(404, f"Not found: {self.command} {url.path}")
        except HubError as e:
            self._send_error(e)
        finally:
            hub.requests.append(LoggedRequest(self.command, self.path, self._status, self.user))

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _authenticate(self) -> None:
        authorization = self.headers.get("Authorization")
        if authorization is None:
            return
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or token not in self.server.hub.state.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        self.user, self.role = self.server.hub.state.tokens[token]

    def _require_write(self) -> None:
        if self.user is None:
            raise HubError(401, "Authentication required: send a write token as 'Authorization: Bearer <token>'")
        if self.role != "write":
            raise HubError(403, "This token has read access only; a write token is needed")

    def _json_body(self) -> dict:
        try:
            return json.loads(self._body or b"{}")
        except json.JSONDecodeError as e:
            raise HubError(400, f"Request body is not valid JSON: {e}") from e

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type: str | None = None):
        self._status = status
        self.send_response(status)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            self.send_header(key, str(value))
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _send_json(
        self, payload, status: int = 200, headers: dict | None = None, content_type: str = "application/json"
    ):
        self._send(status, json.dumps(payload).encode(), headers, content_type=content_type)

    def _send_error(self, error: HubError) -> None:
        headers = {"X-Error-Message": error.message, **error.headers}
        if error.error_code is not None:
            headers["X-Error-Code"] = error.error_code
        self._send_json({"error": error.message, **error.extra}, status=error.status, headers=headers)

    def _repo(self, api_type: str | None = None, url_type: str | None = None, repo_id: str = "") -> Repo:
        repo_type = (
            API_REPO_TYPES[api_type]
            if api_type
            else {"datasets/": "dataset", "spaces/": "space"}.get(url_type or "", "model")
        )
        return self.server.hub.state.get_repo(repo_type, repo_id, self.user)

    def _resolve(self, repo: Repo, rev: str) -> Commit:
        oid = repo.resolve(rev)
        if oid is None:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return repo.commits[oid]

    def _repo_url(self, repo: Repo) -> str:
        return self.server.hub.state.repo_url(repo.repo_type, repo.repo_id)

    # ---- account and repos ----------------------------------------------------------------------------------------

    def _handle_whoami(self) -> None:
        if self.user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        self._send_json(
            {
                "type": "user",
                "id": hashlib.sha1(self.user.encode()).hexdigest()[:24],
                "name": self.user,
                "fullname": "hf-kd test user",
                "email": f"{self.user}@example.org",
                "emailVerified": True,
                "isPro": False,
                "orgs": [{"type": "org", "name": org, "fullname": org, "roleInOrg": "admin"} for org in ORGS],
                "auth": {"type": "access_token", "accessToken": {"displayName": "tests", "role": self.role}},
            }
        )

    def _handle_create_repo(self) -> None:
        self._require_write()
        payload = self._json_body()
        name, organization = payload.get("name"), payload.get("organization") or self.user
        if not name or not re.fullmatch(r"[\w.\-]{1,96}", name):
            raise HubError(400, f"Invalid repo name: {name!r}")
        repo_type = payload.get("type") or "model"
        private = payload.get("private", False) or payload.get("visibility") == "private"
        repo = self.server.hub.state.create_repo(repo_type, f"{organization}/{name}", bool(private))
        self._send_json({"url": self._repo_url(repo), "name": repo.repo_id, "id": repo.repo_id})

    def _handle_validate_yaml(self) -> None:
        errors = validate_card_metadata(self._json_body().get("content", ""))
        status = 400 if errors else 200
        self._send_json({"errors": [{"message": e} for e in errors], "warnings": []}, status=status)

    def _handle_repo_info(self, api_type: str, repo_id: str, rev: str = "main") -> None:
        repo = self._repo(api_type=api_type, repo_id=repo_id)
        commit = self._resolve(repo, rev)
        with_blobs = self.query.get("blobs", ["false"])[0].lower() == "true"
        siblings = []
        for path in sorted(commit.files):
            sibling = {"rfilename": path}
            if with_blobs:
                entry = commit.files[path].tree_entry(path)
                sibling.update(size=entry["size"], blobId=entry["oid"])
                if "lfs" in entry:
                    lfs = entry["lfs"]
                    sibling["lfs"] = {
                        "size": lfs["size"],
                        "sha256": lfs["oid"],
                        "pointerSize": lfs["pointerSize"],
                    }
            siblings.append(sibling)
        card_data = self._card_data(commit)
        info = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.oid,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": self._tags(card_data, repo.repo_type),
            "siblings": siblings,
            "usedStorage": sum(f.size for f in commit.files.values()),
        }
        if card_data:
            info["cardData"] = card_data
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
            info["library_name"] = card_data.get("library_name")
            info["pipeline_tag"] = card_data.get("pipeline_tag")
            if "model-index" in card_data:
                info["model-index"] = card_data["model-index"]
            config = self._json_file(commit, "config.json")
            if isinstance(config, dict):
                info["config"] = {k: config[k] for k in ("architectures", "model_type", "auto_map") if k in config}
        self._send_json({k: v for k, v in info.items() if v is not None})

    def _card_data(self, commit: Commit) -> dict:
        readme = commit.files.get("README.md")
        if readme is None or readme.content is None:
            return {}
        block, _ = split_front_matter(readme.content.decode(errors="replace"))
        data = yaml.safe_load(block) if block else None
        return data if isinstance(data, dict) else {}

    @staticmethod
    def _tags(card_data: dict, repo_type: str) -> list[str]:
        tags = card_data.get("tags") or []
        tags = [tags] if isinstance(tags, str) else list(tags)
        if repo_type == "model" and card_data.get("library_name"):
            tags.append(card_data["library_name"])
        if card_data.get("license"):
            tags.append(f"license:{card_data['license']}")
        datasets = card_data.get("datasets") or []
        tags.extend(f"dataset:{d}" for d in ([datasets] if isinstance(datasets, str) else datasets))
        base_models = card_data.get("base_model") or []
        tags.extend(f"base_model:{b}" for b in ([base_models] if isinstance(base_models, str) else base_models))
        return list(dict.fromkeys(str(t) for t in tags))

    def _json_file(self, commit: Commit, path: str):
        stored = commit.files.get(path)
        if stored is None or stored.content is None:
            return None
        try:
            return json.loads(stored.content)
        except json.JSONDecodeError:
            return None

    # ---- uploads ---------------------------------------------------------------------------------------------------

    def _handle_preupload(self, api_type: str, repo_id: str, rev: str) -> None:
        self._require_write()
        repo = self._repo(api_type=api_type, repo_id=repo_id)
        files = self._resolve(repo, rev).files
        payload = self._json_body()
        lfs_patterns = _lfs_patterns(files)
        ignore_patterns = [
            line.strip()
            for line in (payload.get("gitIgnore") or self._text(files.get(".gitignore"))).splitlines()
            if line.strip() and not line.startswith("#")
        ]
        answer = []
        for item in payload.get("files", []):
            path, size = item["path"], int(item["size"])
            sample = base64.b64decode(item.get("sample", ""))
            is_lfs = size > LFS_SIZE_THRESHOLD or b"\0" in sample or _matches_any(path, lfs_patterns)
            existing = files.get(path)
            oid = None if existing is None else (existing.lfs_sha256 or existing.blob_id)
            answer.append(
                {
                    "path": path,
                    "uploadMode": "lfs" if is_lfs else "regular",
                    "shouldIgnore": _matches_any(path, ignore_patterns),
                    "oid": oid,
                }
            )
        self._send_json({"files": answer, "commitOid": self._resolve(repo, rev).oid})

    @staticmethod
    def _text(stored: StoredFile | None) -> str:
        return "" if stored is None or stored.content is None else stored.content.decode(errors="replace")

    def _handle_commit(self, api_type: str, repo_id: str, rev: str) -> None:
        self._require_write()
        hub = self.server.hub
        repo = self._repo(api_type=api_type, repo_id=repo_id)
        if self.query.get("create_pr"):
            raise HubError(400, "Pull requests are not supported by this server")
        if rev not in repo.branches:
            raise HubError(404, f"Invalid rev id: {rev} is not a branch", "RevisionNotFound")
        lines = [json.loads(line) for line in self._body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "The first line of a commit must be its header")
        header = lines[0]["value"]
        parent_oid = repo.branches[rev]
        if header.get("parentCommit") and header["parentCommit"] != parent_oid:
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(repo.commits[parent_oid].files)
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            path = value["path"]
            if key == "file":
                content = base64.b64decode(value["content"])
                files[path] = StoredFile(len(content), git_blob_sha1(content), content=content)
            elif key == "lfsFile":
                sha256 = value["oid"]
                if sha256 not in hub.state.lfs_objects:
                    raise HubError(422, f"LFS pointer for {path} points to an object that was never uploaded")
                size = len(hub.state.lfs_objects[sha256])
                files[path] = StoredFile(size, git_blob_sha1(lfs_pointer(sha256, size)), lfs_sha256=sha256)
            elif key == "deletedFile":
                if files.pop(path, None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            elif key == "deletedFolder":
                prefix = path.rstrip("/") + "/"
                for name in [name for name in files if name.startswith(prefix)]:
                    del files[name]
            else:
                raise HubError(400, f"Unknown commit operation: {key}")
        readme = files.get("README.md")
        errors = validate_card_metadata(self._text(readme))
        if errors:
            raise HubError(400, "Invalid metadata in README.md: " + "; ".join(errors))
        oid = hub.state.new_oid(repo.repo_id, parent_oid, header.get("summary", ""))
        repo.commits[oid] = Commit(
            oid, parent_oid, header.get("summary", ""), header.get("description", ""), _now(), files
        )
        repo.branches[rev] = oid
        answer = {"success": True, "commitOid": oid, "commitUrl": f"{self._repo_url(repo)}/commit/{oid}"}
        self._send_json(answer)

    def _handle_lfs_batch(self, repo_id: str, url_type: str | None = None) -> None:
        self._require_write()
        self._repo(url_type=url_type, repo_id=repo_id)
        payload = self._json_body()
        if payload.get("operation") != "upload":
            raise HubError(400, "Only the 'upload' operation is supported")
        verify_href = f"{self.server.hub.endpoint}/{url_type or ''}{repo_id}.git/info/lfs/objects/verify"
        objects = []
        for obj in payload.get("objects", []):
            answer = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.server.hub.state.lfs_objects:
                answer["actions"] = {
                    "upload": {
                        "href": f"{self.server.hub.storage_url}/lfs-storage/{obj['oid']}",
                        "header": {},
                    },
                    "verify": {"href": verify_href, "header": {}},
                }
            objects.append(answer)
        self._send_json({"transfer": "basic", "objects": objects}, content_type="application/vnd.git-lfs+json")

    def _handle_lfs_upload(self, sha256: str) -> None:
        if hashlib.sha256(self._body).hexdigest() != sha256:
            raise HubError(400, f"Uploaded content does not match its sha256 {sha256}")
        self.server.hub.state.lfs_objects[sha256] = self._body
        self._send(200, headers={"ETag": f'"{hashlib.md5(self._body).hexdigest()}"'})

    def _handle_lfs_verify(self, repo_id: str, url_type: str | None = None) -> None:
        self._require_write()
        payload = self._json_body()
        stored = self.server.hub.state.lfs_objects.get(payload.get("oid", ""))
        if stored is None or len(stored) != payload.get("size"):
            raise HubError(404, f"LFS object {payload.get('oid')} was not uploaded")
        self._send_json({"success": True})

    # ---- listing ---------------------------------------------------------------------------------------------------

    def _handle_tree(self, api_type: str, repo_id: str, rev: str, path: str = "") -> None:
        repo = self._repo(api_type=api_type, repo_id=repo_id)
        commit = self._resolve(repo, rev)
        path = path.strip("/")
        recursive = self.query.get("recursive", ["false"])[0].lower() == "true"
        expand = self.query.get("expand", ["false"])[0].lower() == "true"
        prefix = f"{path}/" if path else ""
        if path and path not in self._folders(commit) and path not in commit.files:
            raise HubError(404, f"{path} does not exist on {rev}", "EntryNotFound")
        entries = [
            self._path_info(repo, commit, name, expand)
            for name in sorted(self._folders(commit) | set(commit.files))
            if name.startswith(prefix) and (recursive or "/" not in name[len(prefix) :])
        ]
        page_size = self.server.hub.tree_page_size
        start = int(self.query.get("cursor", ["0"])[0])
        headers = {}
        if start + page_size < len(entries):
            base = f"{self.server.hub.endpoint}{urlsplit(self.path).path}"
            next_url = f"{base}?recursive={recursive}&expand={expand}&cursor={start + page_size}"
            headers["Link"] = f'<{next_url}>; rel="next"'
        self._send_json(entries[start : start + page_size], headers=headers)

    @staticmethod
    def _folders(commit: Commit) -> set[str]:
        folders = set()
        for name in commit.files:
            parts = name.split("/")[:-1]
            folders.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        return folders

    def _path_info(self, repo: Repo, commit: Commit, path: str, expand: bool) -> dict:
        if path in commit.files:
            entry = commit.files[path].tree_entry(path)
        else:
            listing = sorted((name, f.blob_id) for name, f in commit.files.items() if name.startswith(path + "/"))
            entry = {
                "type": "directory",
                "oid": hashlib.sha1(repr(listing).encode()).hexdigest(),
                "size": 0,
                "path": path,
            }
        if expand:
            last = self._last_commit_touching(repo, commit, path)
            entry["lastCommit"] = {"id": last.oid, "title": last.title, "date": last.date}
        return entry

    @staticmethod
    def _last_commit_touching(repo: Repo, commit: Commit, path: str) -> Commit:
        def snapshot(c: Commit):
            return sorted((n, f.blob_id) for n, f in c.files.items() if n == path or n.startswith(path + "/"))

        last = commit
        for older in repo.history(commit.oid):
            if snapshot(older) != snapshot(commit):
                break
            last = older
        return last

    def _handle_paths_info(self, api_type: str, repo_id: str, rev: str) -> None:
        repo = self._repo(api_type=api_type, repo_id=repo_id)
        commit = self._resolve(repo, rev)
        content_type = self.headers.get("Content-Type", "")
        if "json" in content_type:
            form = self._json_body()
            paths, expand = form.get("paths", []), bool(form.get("expand"))
        else:
            form = parse_qs(self._body.decode())
            paths, expand = form.get("paths", []), form.get("expand", ["False"])[0].lower() == "true"
        folders = self._folders(commit)
        infos = [
            self._path_info(repo, commit, p.strip("/"), expand)
            for p in paths
            if p.strip("/") in commit.files or p.strip("/") in folders
        ]
        self._send_json(infos)

    def _handle_refs(self, api_type: str, repo_id: str) -> None:
        repo = self._repo(api_type=api_type, repo_id=repo_id)

        def refs(items, prefix):
            return [{"name": n, "ref": f"{prefix}{n}", "targetCommit": oid} for n, oid in sorted(items.items())]

        answer = {"branches": refs(repo.branches, "refs/heads/"), "converts": [], "tags": refs(repo.tags, "refs/tags/")}
        if self.query.get("include_prs"):
            answer["pullRequests"] = []
        self._send_json(answer)

    def _handle_commits(self, api_type: str, repo_id: str, rev: str) -> None:
        repo = self._repo(api_type=api_type, repo_id=repo_id)
        commit = self._resolve(repo, rev)
        self._send_json(
            [
                {
                    "id": c.oid,
                    "title": c.title,
                    "message": c.message,
                    "date": c.date,
                    "authors": [{"user": repo.repo_id.split("/")[0]}],
                }
                for c in repo.history(commit.oid)
            ]
        )

    def _handle_create_branch(self, api_type: str, repo_id: str, branch: str) -> None:
        self._require_write()
        repo = self._repo(api_type=api_type, repo_id=repo_id)
        if branch in repo.branches:
            raise HubError(409, f"Branch {branch} already exists")
        start = self._json_body().get("startingPoint") or "main"
        repo.branches[branch] = self._resolve(repo, start).oid
        self._send_json({})

    def _handle_create_tag(self, api_type: str, repo_id: str, rev: str) -> None:
        self._require_write()
        repo = self._repo(api_type=api_type, repo_id=repo_id)
        tag = self._json_body().get("tag")
        if not tag or tag in repo.tags:
            raise HubError(409, f"Tag {tag!r} already exists or is empty")
        repo.tags[tag] = self._resolve(repo, rev).oid
        self._send_json({})

    # ---- downloads -------------------------------------------------------------------------------------------------

    def _handle_resolve(self, repo_id: str, rev: str, path: str, url_type: str | None = None) -> None:
        repo = self._repo(url_type=url_type, repo_id=repo_id)
        commit = self._resolve(repo, rev)
        stored = commit.files.get(path)
        if stored is None:
            raise HubError(404, "Entry not found", "EntryNotFound", headers={"X-Repo-Commit": commit.oid})
        headers = {"X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes"}
        if stored.lfs_sha256 is not None:
            location = f"{self.server.hub.storage_url}/lfs-storage/{stored.lfs_sha256}"
            headers.update(
                {
                    "Location": location,
                    "X-Linked-Etag": f'"{stored.lfs_sha256}"',
                    "X-Linked-Size": stored.size,
                    "ETag": f'"{stored.blob_id}"',
                }
            )
            self._send(302, headers=headers)
            return
        headers["ETag"] = f'"{stored.blob_id}"'
        headers["Content-Disposition"] = f"inline; filename*=UTF-8''{quote(path.rsplit('/', 1)[-1])}"
        self._send_bytes(stored.content or b"", headers)

    def _handle_lfs_download(self, sha256: str) -> None:
        content = self.server.hub.state.lfs_objects.get(sha256)
        if content is None:
            raise HubError(404, "Object not found")
        self._send_bytes(content, {"ETag": f'"{sha256}"', "Accept-Ranges": "bytes"})

    def _send_bytes(self, content: bytes, headers: dict) -> None:
        """Answer with the whole content, or the `Range` asked for (206), as the Hub and its CDN do."""
        range_header = self.headers.get("Range")
        if range_header is None:
            self._send(200, content, headers, content_type="application/octet-stream")
            return
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", range_header.strip())
        if match is None or match.groups() == ("", ""):
            raise HubError(400, f"Malformed Range header: {range_header}")
        first, last = match.groups()
        if first == "":
            start, end = max(len(content) - int(last), 0), len(content) - 1
        else:
            start, end = int(first), min(int(last) if last else len(content) - 1, len(content) - 1)
        if start >= len(content) or start > end:
            raise HubError(416, "Requested range not satisfiable", headers={"Content-Range": f"bytes */{len(content)}"})
        headers = {**headers, "Content-Range": f"bytes {start}-{end}/{len(content)}"}
        self._send(206, content[start : end + 1], headers, content_type="application/octet-stream")


class _HubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    hub: HubServer


class HubServer:
    """A running Hub-compatible server on 127.0.0.1.

    Attributes:
        endpoint (`str`): base URL to use as `HF_ENDPOINT` (`http://127.0.0.1:<port>`).
        storage_url (`str`): base URL of the LFS object storage; the same server under the host name
            `localhost`, so clients treat it as another host (like the Hub's CDN) and drop the token.
        token (`str`): a write token of the user `hf-kd-tester`, who can write to its own namespace and to
            the organisations `org` and `hf-kd`. `read_token` has read access only.
        requests (`list[LoggedRequest]`): every request answered, in order.
        tree_page_size (`int`): entries per page of `/tree` listings (the Hub uses 1000).
    """

    def __init__(self, tree_page_size: int = 1000):
        self.requests: list[LoggedRequest] = []
        self.tree_page_size = tree_page_size
        self.token = WRITE_TOKEN
        self.read_token = READ_TOKEN
        self.user = USER
        self._failures: list[FailureRule] = []
        self._httpd = _HubHTTPServer(("127.0.0.1", 0), HubRequestHandler)
        self._httpd.hub = self
        port = self._httpd.server_address[1]
        self.endpoint = f"http://127.0.0.1:{port}"
        self.state = HubState(self.endpoint)
        self.storage_url = f"http://localhost:{port}" if _localhost_is_loopback() else self.endpoint
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def fail_requests(
        self,
        method: str,
        path_pattern: str,
        status: int | None = 500,
        message: str = "Internal Error - We're working hard to fix this as soon as possible!",
        times: int = 1,
    ) -> None:
        """Make the next `times` requests whose method matches and whose URL path matches `path_pattern` (a
        regular expression, searched) fail with `status`, or, with `status=None`, by closing the connection
        without an answer (a network failure in the middle of an upload)."""
        with self.state.lock:
            self._failures.append(FailureRule(method.upper(), path_pattern, status, message, times))

    def _take_failure(self, method: str, path: str) -> FailureRule | None:
        with self.state.lock:
            for rule in self._failures:
                if rule.method == method and re.search(rule.path_pattern, path) and rule.times > 0:
                    rule.times -= 1
                    return rule
        return None

    def repo_files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> dict[str, bytes]:
        """The files of a repo at a revision, read straight from storage (for assertions)."""
        with self.state.lock:
            repo = self.state.repos[(repo_type, repo_id)]
            commit = repo.commits[repo.resolve(revision)]
            return {
                path: stored.content if stored.lfs_sha256 is None else self.state.lfs_objects[stored.lfs_sha256]
                for path, stored in commit.files.items()
            }

    def commit_count(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> int:
        with self.state.lock:
            repo = self.state.repos[(repo_type, repo_id)]
            return len(list(repo.history(repo.resolve(revision))))


def _localhost_is_loopback() -> bool:
    try:
        return any(info[4][0] == "127.0.0.1" for info in socket.getaddrinfo("localhost", None, socket.AF_INET))
    except OSError:
        return False


# --------------------------------------------------------------------------------------------------------------------
# Pointing the libraries at the server
# --------------------------------------------------------------------------------------------------------------------


def patch_hub_environment(monkeypatch: pytest.MonkeyPatch, endpoint: str, token: str, hf_home: Path) -> None:
    """Point huggingface_hub, transformers and datasets at `endpoint`, online, with a fresh cache in `hf_home`.

    Environment variables cover code imported later and subprocesses. The libraries also copy some of them
    into module constants when first imported, so those constants are patched too:

    - `huggingface_hub.constants`: `ENDPOINT`, `HUGGINGFACE_CO_URL_TEMPLATE` (used by `hf_hub_url`),
      `HF_HUB_OFFLINE`, `HF_HUB_DISABLE_XET`, and the cache and token paths under `HF_HOME`;
    - `huggingface_hub.hf_api.api`: the module-level `HfApi` behind `huggingface_hub.model_info`,
      `create_repo`, ... (its `endpoint` is fixed when it is built);
    - `transformers.utils.hub._hf_api`: transformers' shared `HfApi`, dropped so it is rebuilt on the endpoint;
    - `transformers.dynamic_module_utils.HF_MODULES_CACHE`: where remote code is copied for `trust_remote_code`;
    - `datasets.config`: `HF_ENDPOINT`, `HUB_DATASETS_URL`, `HF_HUB_OFFLINE`, its cache paths, and it turns off
      the dataset-viewer Parquet export lookup and download counting, two services on other hosts.
    """
    from huggingface_hub import constants, hf_api
    from huggingface_hub.utils import _http

    hub_cache, assets_cache = hf_home / "hub", hf_home / "assets"
    for name, value in {
        "HF_ENDPOINT": endpoint,
        "HF_TOKEN": token,
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hub_cache),
        "HF_HUB_OFFLINE": "0",
        "HF_DATASETS_OFFLINE": "0",
        "TRANSFORMERS_OFFLINE": "0",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        "HF_UPDATE_DOWNLOAD_COUNTS": "0",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HUGGINGFACE_HUB_CACHE", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)

    for name, value in {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_URL_HOSTS": constants.HF_URL_HOSTS | {"127.0.0.1"},
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": False,
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hub_cache),
        "HUGGINGFACE_HUB_CACHE": str(hub_cache),
        "HF_ASSETS_CACHE": str(assets_cache),
        "HUGGINGFACE_ASSETS_CACHE": str(assets_cache),
        "HF_XET_CACHE": str(hf_home / "xet"),
        "HF_TOKEN_PATH": str(hf_home / "token"),
        "HF_STORED_TOKENS_PATH": str(hf_home / "stored_tokens"),
        "AGENT_HARNESSES_PATH": str(hf_home / ".agent_harnesses.json"),
        "CHECK_FOR_UPDATE_DONE_PATH": str(hf_home / ".check_for_update_done"),
        "CHECK_FOR_SKILL_UPDATE_DONE_PATH": str(hf_home / ".check_for_skill_update_done"),
    }.items():
        monkeypatch.setattr(constants, name, value)
    monkeypatch.setattr(hf_api.api, "endpoint", endpoint)
    monkeypatch.setattr(_http, "_HUB_ORIGINS", _http._HUB_ORIGINS | {_http._url_origin(endpoint)})

    import transformers.dynamic_module_utils
    import transformers.utils.hub

    monkeypatch.setattr(transformers.utils.hub, "_hf_api", None)
    modules_cache = str(hf_home / "modules")
    monkeypatch.setattr(transformers.dynamic_module_utils, "HF_MODULES_CACHE", modules_cache)
    monkeypatch.setattr(transformers.utils.hub, "HF_MODULES_CACHE", modules_cache)
    _isolate_transformers_modules(monkeypatch, modules_cache)

    import datasets.config

    for name, value in {
        "HF_ENDPOINT": endpoint,
        "HUB_DATASETS_URL": endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}",
        "HF_HUB_OFFLINE": False,
        "HF_DATASETS_OFFLINE": False,
        "HF_CACHE_HOME": str(hf_home),
        "HF_DATASETS_CACHE": hf_home / "datasets",
        "HF_MODULES_CACHE": hf_home / "modules",
        "DOWNLOADED_DATASETS_PATH": hf_home / "datasets" / "downloads",
        "EXTRACTED_DATASETS_PATH": hf_home / "datasets" / "downloads" / "extracted",
        "USE_PARQUET_EXPORT": False,
        "HF_UPDATE_DOWNLOAD_COUNTS": False,
    }.items():
        monkeypatch.setattr(datasets.config, name, value)


def _isolate_transformers_modules(monkeypatch: pytest.MonkeyPatch, modules_cache: str) -> None:
    """Remote code is imported as the package `transformers_modules`, found through `sys.path`. An earlier test
    may have imported it from another cache folder: forget those modules for this test and put this test's
    cache first on `sys.path`, so the code downloaded here is the code imported here."""
    import importlib
    import sys

    for name in [m for m in sys.modules if m == "transformers_modules" or m.startswith("transformers_modules.")]:
        monkeypatch.delitem(sys.modules, name)
    Path(modules_cache).mkdir(parents=True, exist_ok=True)
    monkeypatch.syspath_prepend(modules_cache)
    importlib.invalidate_caches()


@pytest.fixture(name="hub_server")
def hub_server_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """A fresh, empty Hub server for one test, with every library pointed at it.

    Sets `HF_ENDPOINT`, `HF_TOKEN` (the server's write token), `HF_HUB_OFFLINE=0`, `HF_HUB_DISABLE_XET=1` and a
    fresh `HF_HOME` under the test's `tmp_path`, and patches the constants the libraries read at import time
    (see `patch_hub_environment`). Everything is restored after the test, and the shared HTTP client of
    huggingface_hub is closed so no connection to the stopped server is reused.
    """
    from huggingface_hub.utils import close_session

    with HubServer() as server:
        patch_hub_environment(monkeypatch, server.endpoint, server.token, tmp_path / "hf_home")
        try:
            yield server
        finally:
            close_session()
