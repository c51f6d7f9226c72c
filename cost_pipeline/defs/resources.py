"""The configuration resource: which YAML file drives the pipeline."""

from __future__ import annotations

import dagster as dg

from cost_pipeline.config import ConfigError, Settings, load_settings
from cost_pipeline.lib.lake import Lake


class PipelineConfig(dg.ConfigurableResource):
    """Points at the YAML config; empty means ``$COST_PIPELINE_CONFIG`` or the bundled demo config."""

    config_path: str = ""

    def settings(self) -> Settings:
        try:
            return load_settings(self.config_path or None)
        except ConfigError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None

    def lake(self) -> Lake:
        settings = self.settings()
        return Lake.from_uri(settings.lake_uri, settings.lake_endpoint_url, settings.lake_region)
