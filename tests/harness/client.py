"""A blocking client for ComfyUI's HTTP API (standard library only): queue a prompt, wait for its
/history entry, fetch outputs through /view, interrupt, free. Used by the tests, scripts/demo.py and
scripts/comfy_host.py; tests/harness/server.py starts the server it talks to.

    client = ComfyClient("http://127.0.0.1:8188")
    entry = client.run_prompt(api_prompt)                      # raises PromptRejected / ExecutionFailed
    data = client.fetch_output(client.output_files(entry)[0])  # the first output file's bytes
"""

import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid


class HostError(RuntimeError):
    """The server could not be started, died, or reported a failure of the pack."""


class PromptRejected(RuntimeError):
    """POST /prompt refused (part of) a prompt. `.response` is the server's JSON (error, node_errors)."""

    def __init__(self, status, response):
        self.status = status
        self.response = response if isinstance(response, dict) else {"error": response}
        self.error = self.response.get("error")
        self.node_errors = self.response.get("node_errors") or {}
        self.prompt_id = self.response.get("prompt_id")
        super().__init__(f"HTTP {status}: {json.dumps(self.response, indent=1)[:4000]}")


class ExecutionFailed(RuntimeError):
    """A queued prompt ended with status 'error'. `.entry` is its /history entry."""

    def __init__(self, prompt_id, entry):
        self.prompt_id = prompt_id
        self.entry = entry
        details = []
        for kind, data in entry.get("status", {}).get("messages", []):
            if kind in ("execution_error", "execution_interrupted"):
                details.append(f"{kind}: node {data.get('node_id')} ({data.get('node_type')}): "
                               f"{data.get('exception_type', '')} {data.get('exception_message', '')}".rstrip())
                if data.get("traceback"):
                    details.append("".join(data["traceback"])[-3000:])
        super().__init__(f"prompt {prompt_id} failed: " + ("\n".join(details) or json.dumps(entry.get("status"))))


# ------------------------------------------------------------------------------------------ client

class ComfyClient:
    """Blocking JSON client for the ComfyUI HTTP API (urllib only)."""

    def __init__(self, base_url, client_id=None):
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id or uuid.uuid4().hex

    # -- plumbing
    def request(self, method, path, body=None, timeout=30, raw=False):
        """(status, decoded JSON or bytes). HTTP errors come back as a status, not as an exception."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data is not None else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, payload = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, payload = e.code, e.read()
        if raw:
            return status, payload
        try:
            return status, json.loads(payload) if payload else None
        except ValueError:
            return status, payload.decode("utf-8", "replace")

    def get_json(self, path, timeout=30):
        status, payload = self.request("GET", path, timeout=timeout)
        if status != 200:
            raise HostError(f"GET {path}: HTTP {status}: {str(payload)[:2000]}")
        return payload

    # -- API
    def system_stats(self, timeout=5):
        return self.get_json("/system_stats", timeout=timeout)

    def object_info(self, node=None):
        """All node definitions ({class_type: info}), or one node's info (None when it does not exist)."""
        if node is None:
            return self.get_json("/object_info", timeout=120)
        return self.get_json("/object_info/" + urllib.parse.quote(node, safe="")).get(node)

    def models(self, folder=None):
        """Model folder names (GET /models), or the files the host lists in one folder."""
        return self.get_json("/models" + ("" if folder is None else "/" + urllib.parse.quote(folder, safe="")))

    def queue(self):
        return self.get_json("/queue")

    def history(self, prompt_id=None, max_items=None):
        if prompt_id is not None:
            return self.get_json("/history/" + urllib.parse.quote(prompt_id, safe=""))
        return self.get_json("/history" + (f"?max_items={max_items}" if max_items else ""))

    def queue_prompt(self, prompt, workflow=None, extra_data=None, allow_partial=False):
        """POST /prompt with an API-format prompt -> prompt_id.

        workflow: the UI-format graph to embed in outputs (extra_pnginfo.workflow), as the UI does.
        Raises PromptRejected (with .node_errors) on HTTP 400, and also when the server queued only part
        of the prompt because some outputs failed validation, unless allow_partial.
        """
        extra = dict(extra_data or {})
        if workflow is not None:
            extra.setdefault("extra_pnginfo", {})["workflow"] = workflow
        body = {"prompt": prompt, "client_id": self.client_id, "extra_data": extra}
        status, payload = self.request("POST", "/prompt", body)
        if status != 200 or not isinstance(payload, dict) or "prompt_id" not in payload:
            raise PromptRejected(status, payload)
        if payload.get("node_errors") and not allow_partial:
            raise PromptRejected(status, payload)
        return payload["prompt_id"]

    def wait_for_history(self, prompt_id, timeout=120, poll=0.2):
        """Wait until the prompt is in /history (finished, either way) and return its entry.

        entry["status"]["status_str"] is "success" or "error"; entry["outputs"] maps node ids to ui data.
        """
        deadline = time.monotonic() + timeout
        while True:
            entry = self.history(prompt_id).get(prompt_id)
            if entry is not None and entry.get("status", {}).get("completed") is not None:
                return entry
            if time.monotonic() > deadline:
                raise TimeoutError(f"prompt {prompt_id} not finished after {timeout} s; queue: "
                                   f"{json.dumps(self.queue())[:1000]}")
            time.sleep(poll)

    def run_prompt(self, prompt, workflow=None, timeout=300):
        """Queue, wait, and return the history entry; raises ExecutionFailed unless status is success."""
        prompt_id = self.queue_prompt(prompt, workflow=workflow)
        entry = self.wait_for_history(prompt_id, timeout=timeout)
        if status_str(entry) != "success":
            raise ExecutionFailed(prompt_id, entry)
        return entry

    def wait_until_running(self, prompt_id, timeout=60, poll=0.05):
        """Wait until the prompt is the one executing (in /queue's queue_running)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(item[1] == prompt_id for item in self.queue().get("queue_running", [])):
                return
            if prompt_id in self.history(prompt_id):
                raise HostError(f"prompt {prompt_id} finished before it was seen running")
            time.sleep(poll)
        raise TimeoutError(f"prompt {prompt_id} did not start within {timeout} s")

    def interrupt(self, prompt_id=None):
        """POST /interrupt: stop the running prompt (only that one when prompt_id is given)."""
        status, payload = self.request("POST", "/interrupt", {} if prompt_id is None else {"prompt_id": prompt_id})
        if status != 200:
            raise HostError(f"POST /interrupt: HTTP {status}: {payload}")

    def free(self, unload_models=True, free_memory=True):
        self.request("POST", "/free", {"unload_models": unload_models, "free_memory": free_memory})

    @staticmethod
    def output_files(entry, node_id=None):
        """File entries ({filename, subfolder, type}) in a history entry's outputs, in node order."""
        files = []
        for nid, ui in entry.get("outputs", {}).items():
            if node_id is not None and str(nid) != str(node_id):
                continue
            for value in ui.values():
                if isinstance(value, list):
                    files += [v for v in value if isinstance(v, dict) and "filename" in v]
        return files

    def fetch_output(self, file_entry):
        """The bytes of an output/temp/input file through GET /view."""
        query = urllib.parse.urlencode({"filename": file_entry["filename"],
                                        "subfolder": file_entry.get("subfolder", ""),
                                        "type": file_entry.get("type", "output")})
        status, payload = self.request("GET", "/view?" + query, timeout=120, raw=True)
        if status != 200:
            raise HostError(f"GET /view?{query}: HTTP {status}")
        return payload


def status_str(entry):
    return entry.get("status", {}).get("status_str")


def status_messages(entry):
    """The event names in a history entry's status (execution_start, execution_error, ...)."""
    return [kind for kind, _ in entry.get("status", {}).get("messages", [])]
