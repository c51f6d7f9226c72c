"""Which files make up the current delivery of each billing period, per export layout.

Providers re-deliver a period many times, and how they mark the current set differs:
- AWS Data Exports (CUR 2.0, AWS FOCUS): ``metadata/BILLING_PERIOD=YYYY-MM/[<executionId>/]<export>-Manifest.json``
  is written only after all data files of an execution are in place and lists them (``dataFiles``).
  In "overwrite" mode there is one manifest per period; in "create new" mode one per execution, each
  beside its own ``data/BILLING_PERIOD=YYYY-MM/<executionId>/`` folder. The newest manifest wins and
  only the files it names are read, so a half-uploaded next execution is invisible.
- Legacy CUR: ``<yyyymmdd-yyyymmdd>/<report>-Manifest.json`` names the current assembly (``reportKeys``).
- Azure cost exports: each run writes ``<period>/<runId>/manifest.json`` listing its ``blobs``; the
  newest run (``runInfo.submittedTime``) wins. Older exports without manifests: see below.
- Anything else (FOCUS or GCP extracts without a manifest): files are grouped by their period folder
  (``yyyymmdd-yyyymmdd``, ``BILLING_PERIOD=YYYY-MM``, ``YYYYMM`` or ``YYYY-MM``); when a period holds
  several run sub-folders, the one modified last is the current delivery. Files outside any period
  folder form one delivery together.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections import defaultdict
from dataclasses import dataclass

from cost_pipeline.lib.errors import InputError
from cost_pipeline.lib.storage import Storage, StoredFile


@dataclass(frozen=True)
class Delivery:
    """The current file set of one billing period of one source."""

    period: str  # "2026-09", "20180801-20180901", or "" for files outside any period folder
    files: tuple[StoredFile, ...]
    manifest: StoredFile | None = None

    @property
    def id(self) -> str:
        """Changes whenever the delivery's manifest or any of its files changes."""
        parts = [f"{f.uri}@{f.version}" for f in ([self.manifest] if self.manifest else []) + list(self.files)]
        return hashlib.sha256("\n".join([self.period, *parts]).encode()).hexdigest()[:16]


def _hidden(name: str) -> bool:
    return any(part.startswith((".", "_")) for part in name.split("/"))


def _data(files: list[StoredFile], suffixes: tuple[str, ...]) -> list[StoredFile]:
    return [f for f in files if f.name.lower().endswith(suffixes) and not _hidden(f.name)]


def _newest(files: list[StoredFile]) -> dt.datetime:
    return max(f.modified for f in files)


def _load_json(manifest: StoredFile, storage: Storage, what: str) -> dict:
    try:
        body = json.loads(storage.fetch(manifest).read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(manifest.uri, f"not a readable {what}: {exc}") from None
    if not isinstance(body, dict):
        raise InputError(manifest.uri, f"not a {what}: expected a JSON object")
    return body


def _named(manifest: StoredFile, keys: list[str], listed: dict[str, StoredFile], anchor: str, what: str) -> tuple[StoredFile, ...]:
    """Map the manifest's object keys or URIs to listed files by the path from ``anchor`` on."""
    chosen, missing = [], []
    for key in keys:
        at = key.find(anchor)
        tail = key[at:] if at >= 0 else key.rsplit("/", 1)[-1]
        found = listed.get(tail) or next((f for n, f in listed.items() if n.endswith("/" + tail)), None)
        (chosen if found else missing).append(found or key)
    if missing:
        raise InputError(manifest.uri, f"{what} names missing file(s): {', '.join(missing[:5])}")
    if not chosen:
        raise InputError(manifest.uri, f"{what} names no data files")
    return tuple(chosen)


# --- AWS Data Exports (CUR 2.0, AWS FOCUS 1.x) ------------------------------------------------
_EXPORT_DATA = re.compile(r"(?:^|/)data/BILLING_PERIOD=(\d{4}-\d{2})/(.+)$")
_EXPORT_META = re.compile(r"(?:^|/)metadata/BILLING_PERIOD=(\d{4}-\d{2})/(?:[^/]+/)?[^/]*Manifest\.json$")


def data_export_deliveries(listed: list[StoredFile], storage: Storage, suffixes: tuple[str, ...]) -> list[Delivery]:
    data: dict[str, list[StoredFile]] = defaultdict(list)
    for f in _data(listed, suffixes):
        if match := _EXPORT_DATA.search(f.name):
            data[match.group(1)].append(f)
    manifests: dict[str, list[StoredFile]] = defaultdict(list)
    for f in listed:
        if match := _EXPORT_META.search(f.name):
            manifests[match.group(1)].append(f)
    deliveries = []
    for period in sorted(set(data) | set(manifests)):
        if manifests[period]:
            manifest = max(manifests[period], key=lambda f: (f.modified, f.name))
            body = _load_json(manifest, storage, "Data Exports manifest")
            keys = body.get("dataFiles")
            if not isinstance(keys, list):
                raise InputError(manifest.uri, "not a Data Exports manifest (needs dataFiles)")
            by_name = {f.name: f for f in data[period]}
            files = _named(manifest, [str(k) for k in keys], by_name, "data/BILLING_PERIOD=", "manifest")
            deliveries.append(Delivery(period, files, manifest))
            continue
        # no manifest (a copy of the data folder, or an export whose manifests were not kept)
        runs: dict[str, list[StoredFile]] = defaultdict(list)
        for f in data[period]:
            rest = _EXPORT_DATA.search(f.name).group(2)
            runs[rest.rsplit("/", 1)[0] if "/" in rest else ""].append(f)
        if len(runs) > 1:
            raise InputError(
                data[period][0].uri.rsplit("/", 1)[0],
                f"{len(runs)} deliveries of BILLING_PERIOD={period} ({', '.join(sorted(r or '(top level)' for r in runs))}) "
                "and no manifest under metadata/: cannot tell which one is current",
            )
        deliveries.append(Delivery(period, tuple(data[period])))
    return deliveries


# --- legacy CUR ---------------------------------------------------------------------------------
_LEGACY_PERIOD = re.compile(r"(?:^|/)(\d{8})-(\d{8})/")


def legacy_period(name: str) -> tuple[dt.date, dt.date, str] | None:
    match = _LEGACY_PERIOD.search(name)
    if not match:
        return None
    start, end = (dt.datetime.strptime(g, "%Y%m%d").date() for g in match.groups())
    return start, end, name[: match.end()].lstrip("/")


def legacy_cur_deliveries(listed: list[StoredFile], storage: Storage, suffixes: tuple[str, ...]) -> list[Delivery]:
    folders = sorted({p[2] for f in listed if (p := legacy_period(f.name))})
    if not folders:  # a bare folder of CUR files
        return [Delivery("", tuple(_data(listed, suffixes)))]
    deliveries = []
    for folder in folders:
        in_period = [f for f in listed if f.name.startswith(folder)]
        manifests = [f for f in in_period if "/" not in f.name[len(folder):] and f.name.endswith("Manifest.json")]
        data = _data(in_period, suffixes)
        period = folder.rstrip("/").rsplit("/", 1)[-1]
        if manifests:
            manifest = max(manifests, key=lambda f: (f.modified, f.name))
            body = _load_json(manifest, storage, "CUR manifest")
            keys = body.get("reportKeys")
            if not isinstance(keys, list):
                raise InputError(manifest.uri, "not a CUR manifest (needs reportKeys)")
            files = _named(manifest, [str(k) for k in keys], {f.name[len(folder) - len(period) - 1:]: f for f in data},
                           period + "/", f"manifest (assembly {body.get('assemblyId')})")
            deliveries.append(Delivery(period, files, manifest))
            continue
        assemblies = {f.name[len(folder):].split("/")[0] for f in data if "/" in f.name[len(folder):]}
        if len(assemblies) > 1:
            raise InputError(folder.rstrip("/"), f"{len(assemblies)} assemblies and no manifest: cannot tell which one is current")
        deliveries.append(Delivery(period, tuple(data)))
    return deliveries


# --- file exports: Azure run manifests, or the newest run folder per period -----------------------
_PERIOD_FOLDER = re.compile(r"^(?:\d{8}-\d{8}|BILLING_PERIOD=\d{4}-\d{2}|\d{6}|\d{4}-\d{2})$")


def _split_period(name: str) -> tuple[str, str, str] | None:
    """(path up to and including the period folder, period, run folder below it or "")."""
    parts = name.split("/")[:-1]
    for i in range(len(parts) - 1, -1, -1):
        if _PERIOD_FOLDER.match(parts[i]):
            return "/".join(parts[: i + 1]), parts[i].removeprefix("BILLING_PERIOD="), "/".join(parts[i + 1:])
    return None


def _azure_submitted(body: dict, manifest: StoredFile) -> str:
    run = body.get("runInfo") if isinstance(body.get("runInfo"), dict) else {}
    return str(run.get("submittedTime") or manifest.modified.isoformat())


def file_export_deliveries(listed: list[StoredFile], storage: Storage, suffixes: tuple[str, ...]) -> list[Delivery]:
    if any(_EXPORT_META.search(f.name) for f in listed):
        return data_export_deliveries(listed, storage, suffixes)
    data = _data(listed, suffixes)
    loose = [f for f in data if _split_period(f.name) is None]
    periods: dict[tuple[str, str], dict[str, list[StoredFile]]] = defaultdict(lambda: defaultdict(list))
    for f in data:
        if split := _split_period(f.name):
            periods[split[:2]][split[2]].append(f)
    manifests: dict[tuple[str, str], list[tuple[str, StoredFile]]] = defaultdict(list)
    for f in listed:
        if f.name.rsplit("/", 1)[-1].lower() == "manifest.json" and (split := _split_period(f.name)):
            manifests[split[:2]].append((split[2], f))
    deliveries = [Delivery("", tuple(loose))] if loose else []
    for key in sorted(set(periods) | set(manifests)):
        prefix, period = key
        if manifests[key]:
            bodies = [(run, m, _load_json(m, storage, "export manifest")) for run, m in manifests[key]]
            run, manifest, body = max(bodies, key=lambda b: (_azure_submitted(b[2], b[1]), b[1].name))
            blobs = body.get("blobs")
            if not isinstance(blobs, list) or not all(isinstance(b, dict) and "blobName" in b for b in blobs):
                raise InputError(manifest.uri, "not an export manifest (needs blobs[].blobName)")
            in_run = {f.name: f for f in periods[key].get(run, [])}
            anchor = f"{period}/{run}/" if run else f"{period}/"
            files = _named(manifest, [str(b["blobName"]) for b in blobs], {n[n.find(anchor):]: f for n, f in in_run.items()}, anchor, "manifest")
            deliveries.append(Delivery(period, files, manifest))
            continue
        runs = periods[key]
        current = max(runs, key=lambda r: (_newest(runs[r]), r))
        deliveries.append(Delivery(period, tuple(runs[current])))
    return deliveries
