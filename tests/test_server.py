"""nn-run against a real MLflow tracking server: a parallel sweep lands whole; a dead server fails fast."""

import http.server
import os
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import NN_RUN, runs_of
from servers import (
    free_port,
    mlflow_server,
    postgres_bin,
    postgres_database,
    postgres_user,
)

from runner.nn.network import predict
from runner.tracking import record

SWEEP_TIMEOUT = 300
FAIL_FAST_TIMEOUT = 30  # the check answers in well under 10 s; MLflow's own retries would take minutes


def nn_run(cwd, *args, timeout=SWEEP_TIMEOUT):
    return subprocess.run([*NN_RUN, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def postgres_missing():
    """Why PostgreSQL cannot be started here, or None when it can."""
    if postgres_bin() is None:
        return "PostgreSQL is not installed (initdb not found); .ci/run installs Debian's postgresql"
    if os.geteuid() == 0 and postgres_user() is None:
        return "running as root and there is no 'postgres' user to run PostgreSQL as"
    return None


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def tracking_server(request, tmp_path_factory):
    """A real `mlflow server` on loopback with a SQLite or a PostgreSQL backend store; yields (url, artifacts)."""
    folder = tmp_path_factory.mktemp(f"server-{request.param}")
    if request.param == "sqlite":
        with mlflow_server(f"sqlite:///{folder}/mlflow.db", folder) as server:
            yield server
        return
    reason = postgres_missing()
    if reason:
        pytest.skip(reason)
    with postgres_database() as database, mlflow_server(database, folder) as server:
        yield server


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "batched"])  # worker processes of their own; forked workers
def test_a_parallel_sweep_lands_every_run_on_the_server(tracking_server, tmp_path, experiment, launcher):
    import mlflow

    url, artifacts = tracking_server
    done = nn_run(tmp_path, "-m", f"hydra/launcher={launcher}", "hydra.launcher.n_jobs=2", "tracking=server",
                  f"tracking.uri={url}", f"tracking.experiment={experiment}", "train.lr=0.5,1.0",
                  "model.hidden=[3],[4]", "train.iterations=300", "train.log_every=100")
    assert done.returncode == 0, done.stderr[-3000:]
    if launcher == "batched":  # two batches of two (one per hidden size), their models saved once each
        assert done.stdout.count("Training 2 networks together") == 2 and done.stdout.count("(batched)") == 4

    client = mlflow.MlflowClient(url)
    everything = runs_of(client, experiment)
    (parent,) = [r for r in everything if record.SWEEP_ID_TAG in r.data.tags]
    runs = [r for r in everything if r is not parent]
    assert parent.info.status == "FINISHED" and parent.data.metrics[record.CHILDREN_FINISHED_METRIC] == 4
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in runs)
    assert sorted((r.data.params["train.lr"], r.data.params["model.hidden"]) for r in runs) == [
        ("0.5", "[3]"), ("0.5", "[4]"), ("1.0", "[3]"), ("1.0", "[4]")]
    for run in runs:
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, record.ERROR_METRIC)
        assert sorted(m.step for m in history) == [0, 100, 200, 300]
        assert {f.path for f in client.list_artifacts(run.info.run_id)} >= {
            record.WEIGHTS_DIR, record.PREDICTIONS_FILE, record.CONFIG_FILE, record.OVERRIDES_FILE}
        folder = client.download_artifacts(run.info.run_id, record.WEIGHTS_DIR, str(tmp_path / run.info.run_id))
        weights = record.read_weights(folder.rsplit("/", 1)[0])
        assert record.weights_sha256(weights) == run.data.tags[record.WEIGHTS_HASH_TAG]
    # the files went through the server into its artifact store, none to this machine's disk
    assert len(list(artifacts.rglob(record.PREDICTIONS_FILE))) >= 4
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()

    mlflow.set_tracking_uri(url)
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/{record.MODEL_NAME}")
    inputs = np.array([[0.0, 1.0, 1.0], [0.3, 0.6, 1.0]])
    assert np.array_equal(model.predict(inputs), predict(weights, inputs))


@pytest.mark.parametrize("sweep, prefix", [
    ((), "nn-run: "),
    (("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "train.lr=0.5,1.0"), "nn-run: the sweep cannot start: "),
])
def test_unreachable_server_fails_fast_with_one_line_and_no_run(tmp_path, sweep, prefix):
    port = free_port()  # nothing listens here
    done = nn_run(tmp_path, *sweep, "tracking=server", f"tracking.uri=http://127.0.0.1:{port}",
                  timeout=FAIL_FAST_TIMEOUT)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"{prefix}tracking.uri='http://127.0.0.1:{port}': no MLflow server answers there (Connection refused); "
        "start one with `make server` or choose another tracking.uri")
    assert "Launching" not in done.stdout  # a sweep stops before its first job
    assert not list(tmp_path.rglob("mlflow.db")) and not (tmp_path / "mlruns").exists()


def test_default_server_address_is_port_5000_on_loopback(tmp_path):
    done = nn_run(tmp_path, "tracking=server", "--cfg", "job", timeout=FAIL_FAST_TIMEOUT)
    assert done.returncode == 0
    assert "uri: http://127.0.0.1:5000" in done.stdout


class NotMlflow(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_error(404)

    def log_message(self, *args):
        pass


def test_a_server_that_is_not_mlflow_is_named_as_such(tmp_path):
    server = http.server.HTTPServer(("127.0.0.1", 0), NotMlflow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        done = nn_run(tmp_path, "tracking=server", f"tracking.uri={url}", timeout=FAIL_FAST_TIMEOUT)
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 2
    assert done.stderr.strip() == (f"nn-run: tracking.uri='{url}': the server answered GET /health with HTTP 404, "
                                   "not as an MLflow tracking server does (200)")


def test_credentials_in_the_uri_are_not_printed(tmp_path):
    port = free_port()
    done = nn_run(tmp_path, f"tracking.uri=http://alice:s3cret@127.0.0.1:{port}", timeout=FAIL_FAST_TIMEOUT)
    assert done.returncode == 2
    assert "s3cret" not in done.stderr and "alice" not in done.stderr
    assert f"tracking.uri='http://127.0.0.1:{port}'" in done.stderr


def test_tracking_uri_redacts_and_recognises_servers():
    from runner.tracking.uri import is_server, redact

    assert redact("http://u:p@host:5000/x") == "http://host:5000/x" and redact("sqlite:///a.db") == "sqlite:///a.db"
    assert is_server("https://mlflow.example") and not is_server("sqlite:///mlflow.db")
    assert redact("postgresql://u:p@db/x") == "postgresql://db/x"


class Healthy(http.server.BaseHTTPRequestHandler):
    """Answers GET /health as an MLflow server does."""

    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args):
        pass


def self_signed_certificate(folder):
    """A certificate and key for 127.0.0.1, signed by themselves; returns (cert path, key path)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = Path(folder, "cert.pem"), Path(folder, "key.pem")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_an_https_server_is_probed_with_mlflows_certificate_settings(tmp_path, monkeypatch):
    import ssl

    from runner.tracking.uri import ServerUnreachable, check_server

    cert, key = self_signed_certificate(tmp_path)
    server = http.server.HTTPServer(("127.0.0.1", 0), Healthy)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"https://127.0.0.1:{server.server_port}"
    try:
        for name in ("MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_TRACKING_SERVER_CERT_PATH",
                     "MLFLOW_TRACKING_CLIENT_CERT_PATH"):
            monkeypatch.delenv(name, raising=False)
        with pytest.raises(ServerUnreachable) as refused:
            check_server(url, timeout=5)  # a certificate nobody vouches for
        assert str(refused.value) == (f"tracking.uri='{url}': the server's certificate is not trusted (self-signed "
                                      "certificate); set MLFLOW_TRACKING_SERVER_CERT_PATH to its CA bundle, or "
                                      "MLFLOW_TRACKING_INSECURE_TLS=true to skip the check")
        monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(cert))
        check_server(url, timeout=5)  # trusted as MLflow's client would trust it
        monkeypatch.delenv("MLFLOW_TRACKING_SERVER_CERT_PATH")
        monkeypatch.setenv("MLFLOW_TRACKING_INSECURE_TLS", "true")
        check_server(url, timeout=5)
    finally:
        server.shutdown()
        server.server_close()
