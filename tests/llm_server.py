"""A small OpenAI-compatible (and Ollama /api/chat) HTTP server on 127.0.0.1 for tests: canned, slow,
malformed and 500 answers.

What it answers depends on markers in the chunk text inside the prompt: FAIL500 -> HTTP 500,
GARBAGE -> a body that is not JSON, SLOW -> the canned answer after 0.4 s. Everything else gets a
canned answer with a preamble, numbering, a duplicate and a one-word line, as real models write.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LlmServer:
    def __init__(self):
        self.requests: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.fail_all = False
        self.auth: set[str] = set()  # Authorization headers seen
        self.echo_auth_once = False  # first request: a 401 that quotes the key back, as some servers do
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path.startswith("/api/show"):  # Ollama asks for the model's context window first
                    return self._send(
                        200,
                        json.dumps(
                            {
                                "modelfile": "",
                                "parameters": "",
                                "template": "{{ .Prompt }}",
                                "capabilities": ["completion"],
                                "details": {"format": "gguf", "family": "llama", "parameter_size": "8B"},
                                "model_info": {"general.architecture": "llama", "llama.context_length": 8192},
                            }
                        ).encode(),
                    )
                prompt = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
                with server._lock:
                    server.requests.append(prompt)
                    server.auth.add(self.headers.get("Authorization", ""))
                    echo, server.echo_auth_once = server.echo_auth_once, False
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    if "SLOW" in prompt:
                        time.sleep(0.4)
                    if echo:
                        message = f"invalid key {self.headers.get('Authorization', '')}"
                        return self._send(401, json.dumps({"error": {"message": message}}).encode())
                    if server.fail_all or "FAIL500" in prompt:
                        return self._send(500, b'{"error": {"message": "boom"}}')
                    if "GARBAGE" in prompt:
                        return self._send(200, b"<html>not json</html>")
                    words = prompt.split("---------------------")[1].split()[:3]
                    text = (
                        f"Here are two questions:\n1. What does {' '.join(words)} mean?\n"
                        f"2) How is {words[-1]} used in practice?\n2) How is {words[-1]} used in practice?\nOk\n"
                    )
                    if self.path.startswith("/api/chat"):  # Ollama's own API
                        return self._send(
                            200,
                            json.dumps(
                                {
                                    "model": body.get("model", "m"),
                                    "created_at": "2026-01-01T00:00:00Z",
                                    "message": {"role": "assistant", "content": text},
                                    "done": True,
                                    "done_reason": "stop",
                                    "prompt_eval_count": 1,
                                    "eval_count": 1,
                                }
                            ).encode(),
                        )
                    return self._send(
                        200,
                        json.dumps(
                            {
                                "id": "x",
                                "object": "chat.completion",
                                "created": 0,
                                "model": body.get("model", "m"),
                                "choices": [
                                    {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
                                ],
                                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                            }
                        ).encode(),
                    )
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _send(self, status, payload):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"  # Ollama's base_url
        self.url = f"{self.base}/v1"  # OpenAI-compatible api_base
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
