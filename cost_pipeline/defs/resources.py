"""Resources injected into assets, checks and sensors: the config, the lake, and billing clients.

``build_defs`` creates them once from the settings the definitions were loaded with, so a run uses
exactly the rules whose hash the UI shows as code version; a config edited since then fails the
run with a message asking to reload the code location instead of silently writing other rules.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from dagster_aws.s3 import S3Resource
from dagster_gcp import BigQueryResource, GCSResource
from pydantic import PrivateAttr

from cost_pipeline.config import BillingSource, ConfigError, Settings, load_settings
from cost_pipeline.lib.lake import Lake
from cost_pipeline.lib.storage import Storage, split_uri


class PipelineConfig(dg.ConfigurableResource):
    """Points at the YAML config; empty means ``$COST_PIPELINE_CONFIG`` or the bundled demo config.

    ``rules_version``: the rules' hash when the definitions were loaded (empty: do not compare)."""

    config_path: str = ""
    rules_version: str = ""
    _settings: Settings | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._settings = self._load()

    def _load(self) -> Settings:
        try:
            settings = load_settings(self.config_path or None)
        except ConfigError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        if self.rules_version and settings.rules_version != self.rules_version:
            raise dg.Failure(
                description=f"{settings.source_path}: the tagging/allocation rules changed since the code location was loaded "
                f"(loaded {self.rules_version}, file now {settings.rules_version}); reload the code location, then run again",
                allow_retries=False,
            )
        return settings

    def settings(self) -> Settings:
        """The settings read once for this run (or sensor tick)."""
        if self._settings is None:
            self._settings = self._load()
        return self._settings


class LakeResource(dg.ConfigurableResource):
    """The cost lake: a local folder, ``s3://bucket/prefix`` (any S3-compatible endpoint) or ``gs://bucket/prefix``."""

    uri: str
    endpoint_url: str | None = None
    region: str | None = None
    gcp_project: str | None = None
    _lake: Lake | None = PrivateAttr(default=None)

    def lake(self) -> Lake:
        if self._lake is None:
            self._lake = Lake.from_uri(self.uri, self.endpoint_url, self.region, self.gcp_project)
        return self._lake

    @classmethod
    def from_settings(cls, settings: Settings) -> "LakeResource":
        return cls(uri=settings.lake_uri, endpoint_url=settings.lake_endpoint_url, region=settings.lake_region, gcp_project=settings.lake_gcp_project)


class BillingStorage(dg.ConfigurableResource):
    """Clients for billing sources and usage extracts, from dagster-aws and dagster-gcp.

    A source's own ``endpoint_url`` / ``region`` / ``gcp_project`` override the resource's for that
    source (e.g. a CUR bucket in another region than the lake)."""

    s3: S3Resource
    gcs: GCSResource
    bigquery: BigQueryResource

    def for_uri(self, uri: str, endpoint_url: str | None = None, region: str | None = None, gcp_project: str | None = None) -> Storage:
        """A Storage whose clients are created only for the scheme the URI uses."""
        scheme = "bq" if uri.startswith("bq://") else split_uri(uri)[0]
        storage = Storage()
        if scheme == "s3":
            storage.s3_client = self._s3(endpoint_url, region).get_client()
        elif scheme == "gs":
            storage.gcs_client = (GCSResource(project=gcp_project) if gcp_project else self.gcs).get_client()
        elif scheme == "bq":
            with (BigQueryResource(project=gcp_project) if gcp_project else self.bigquery).get_client() as client:
                storage.bq_client = client
        return storage

    def _s3(self, endpoint_url: str | None, region: str | None) -> S3Resource:
        if not endpoint_url and not region:
            return self.s3
        fields: dict[str, Any] = {k: v for k, v in self.s3._get_non_default_public_field_values().items()}  # noqa: SLF001
        return S3Resource(**{**fields, "endpoint_url": endpoint_url or self.s3.endpoint_url, "region_name": region or self.s3.region_name})

    def for_source(self, source: BillingSource) -> Storage:
        return self.for_uri(source.uri, source.endpoint_url, source.region, source.gcp_project)


def resources_for(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """The resources the definitions bind: one config snapshot, one lake, one set of clients."""
    return {
        "pipeline": PipelineConfig(config_path=settings.source_path or "", rules_version=settings.rules_version),
        "cost_lake": LakeResource.from_settings(settings),
        "billing": BillingStorage(s3=S3Resource(), gcs=GCSResource(), bigquery=BigQueryResource()),
    }



__all__ = ["BillingStorage", "LakeResource", "PipelineConfig", "resources_for"]
