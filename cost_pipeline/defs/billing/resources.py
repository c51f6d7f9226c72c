"""Clients for each billing source, from the Dagster integrations (dagster-aws, dagster-gcp)."""

from dagster_aws.s3 import S3Resource
from dagster_gcp import BigQueryResource, GCSResource

from cost_pipeline.config import BillingSource
from cost_pipeline.lib.storage import Storage, split_uri


def storage_for_uri(uri: str, endpoint_url: str | None = None, region: str | None = None, gcp_project: str | None = None) -> Storage:
    """A Storage whose clients are created only for the scheme the URI uses."""
    scheme = "bq" if uri.startswith("bq://") else split_uri(uri)[0]
    storage = Storage()
    if scheme == "s3":
        storage.s3_client = S3Resource(endpoint_url=endpoint_url, region_name=region).get_client()
    elif scheme == "gs":
        storage.gcs_client = GCSResource(project=gcp_project).get_client()
    elif scheme == "bq":
        with BigQueryResource(project=gcp_project).get_client() as client:
            storage.bq_client = client
    return storage


def storage_for(source: BillingSource) -> Storage:
    return storage_for_uri(source.uri, source.endpoint_url, source.region, source.gcp_project)
