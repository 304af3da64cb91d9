"""app-stack's service: a small HTTP server (Python's standard library only).

GET / answers with the database role its DSN logs in as (``psql DSN -c 'select current_user'``),
so the page proves the whole chain: the password tectum generated, the role it made, the DSN
it kept in etcd and the configuration file it rendered from it. The configuration
(/etc/app-stack/app.json) is read at start: a new one needs a restart, which tectum does when
it changes the file.
"""

import json
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

with open(sys.argv[1], encoding="utf-8") as fh:
    CONFIG = json.load(fh)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        proc = subprocess.run(["psql", CONFIG["dsn"], "-tAc", "select current_user"],
                              capture_output=True, text=True, timeout=10, check=False)
        ok = proc.returncode == 0
        body = (f"{CONFIG['greeting']}: connected as {proc.stdout.strip()}\n" if ok
                else "database unreachable\n").encode()
        self.send_response(200 if ok else 503)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        return  # (quiet: the DSN holds a password)


ThreadingHTTPServer(("127.0.0.1", int(CONFIG["port"])), Handler).serve_forever()
