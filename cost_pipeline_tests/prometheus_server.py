"""A real Prometheus (Debian package) on loopback, loaded from query_range extracts via promtool."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import requests


def extracts_to_openmetrics(folder: Path) -> str:
    """Each extract ``<name>.json`` becomes a gauge family ``<name>`` with the same labels and samples."""
    lines = []
    for path in sorted(folder.glob("*.json")):
        name = path.stem
        lines.append(f"# TYPE {name} gauge")
        for series in json.loads(path.read_text())["data"]["result"]:
            labels = ",".join(
                f'{k}="{v}"' for k, v in sorted(series["metric"].items()) if k != "__name__"
            )
            for ts, value in series["values"]:
                lines.append(f"{name}{{{labels}}} {value} {int(float(ts))}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def prometheus_from_extracts(extracts_day: Path, workdir: Path):
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if not prometheus or not promtool:
        raise RuntimeError("prometheus/promtool not installed: `make test` installs the Debian package")
    om = workdir / "usage.om"
    om.write_text(extracts_to_openmetrics(extracts_day))
    tsdb = workdir / "tsdb"
    subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(om), str(tsdb)], check=True, capture_output=True)
    config = workdir / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1h\nscrape_configs: []\n")
    port = _free_port()
    proc = subprocess.Popen(
        [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tsdb}", "--storage.tsdb.retention.time=100y",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=(workdir / "prometheus.log").open("w"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None:
                raise RuntimeError((workdir / "prometheus.log").read_text()[-2000:])
            time.sleep(0.3)
        else:
            raise RuntimeError("Prometheus did not become ready within 60 s")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
