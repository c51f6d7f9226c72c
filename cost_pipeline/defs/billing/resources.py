"""Clients for each billing source, from the Dagster integrations (dagster-aws, dagster-gcp)."""

from dagster_aws.s3 import S3Resource
from dagster_gcp import BigQueryResource, GCSResource

from cost_pipeline.config import BillingSource
from cost_pipeline.lib.storage import Storage, split_uri


def storage_for(source: BillingSource) -> Storage:
    """A Storage whose clients are created only for the scheme the source uses."""
    scheme = "bq" if source.uri.startswith("bq://") else split_uri(source.uri)[0]
    storage = Storage()
    if scheme == "s3":
        storage.s3_client = S3Resource(endpoint_url=source.endpoint_url, region_name=source.region).get_client()
    elif scheme == "gs":
        storage.gcs_client = GCSResource(project=source.gcp_project).get_client()
    elif scheme == "bq":
        with BigQueryResource(project=source.gcp_project).get_client() as client:
            storage.bq_client = client
    return storage
