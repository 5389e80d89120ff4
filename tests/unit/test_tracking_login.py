"""The login paperline's own preflight request sends to an MLflow server is the one the MLflow client sends:
the variables, else the credentials file ~/.mlflow/credentials (what a docker pool's container is given)."""

from __future__ import annotations

import base64
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from paperline.ops.tracking.client import TrackingError, check_access

GOOD = "Basic " + base64.b64encode(b"carol:s3cret").decode()


class _BasicAuthOnly(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200 if self.headers.get("Authorization") == GOOD else 401)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _BasicAuthOnly)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


@pytest.fixture
def home(tmp_path, monkeypatch):
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_the_credentials_file_logs_in_as_the_mlflow_client_would(server, home):
    (home / ".mlflow").mkdir()
    (home / ".mlflow" / "credentials").write_text(
        "[mlflow]\nmlflow_tracking_username = carol\nmlflow_tracking_password = s3cret\n")
    check_access(server)  # 401 before: only the variables were read


def test_no_login_at_all_is_still_one_line_naming_both_ways(server, home):
    with pytest.raises(TrackingError, match=r"requires a login \(401 Unauthorized\).*~/.mlflow/credentials"):
        check_access(server)
