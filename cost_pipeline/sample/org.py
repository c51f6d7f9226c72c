"""The fictional ML organisation the sample data describes (teams, projects, accounts, platform)."""

from __future__ import annotations

PAYER_ACCOUNT = "100000000001"

TEAMS: dict[str, dict] = {
    "fraud-detection": {"account": "210000000001", "projects": ["txn-scoring", "graph-features"]},
    "personalization": {"account": "210000000002", "projects": ["recsys-ranker", "embeddings"]},
    "search-ranking": {"account": "210000000003", "projects": ["query-understanding", "ltr-models"]},
    "forecasting": {"account": "210000000004", "projects": ["demand-forecast", "capacity-planner"]},
    "platform": {"account": "210000000005", "projects": ["ml-tooling", "ci-runners"]},
}
WORKLOAD_TEAMS = list(TEAMS)
PLATFORM_ACCOUNT = TEAMS["platform"]["account"]
ENVIRONMENTS = ["dev", "staging", "prod"]
WORKLOADS = ["training", "inference", "data-processing", "notebook"]
EKS_CLUSTER = "ml-shared"
DATA_LAKE_BUCKET = "acme-ml-data-lake"

# service, usage type, resource prefix, median daily-line cost in USD, per workload type
WORKLOAD_SERVICES = {
    "training": [
        ("AmazonSageMaker", "USE1-ml.p4d.24xlarge-Training", "arn:aws:sagemaker:us-east-1:{acct}:training-job/", 38.0),
        ("AmazonEC2", "USE1-BoxUsage:p4d.24xlarge", "i-0train", 30.0),
    ],
    "inference": [
        ("AmazonSageMaker", "USE1-ml.g5.xlarge-Hosting", "arn:aws:sagemaker:us-east-1:{acct}:endpoint/", 1.4),
        ("AmazonEC2", "USE1-BoxUsage:g5.xlarge", "i-0infer", 1.0),
    ],
    "data-processing": [
        ("ElasticMapReduce", "USE1-BoxUsage:m5.4xlarge", "arn:aws:elasticmapreduce:us-east-1:{acct}:cluster/j-", 0.9),
        ("AWSGlue", "USE1-ETL-DPU-Hour", "arn:aws:glue:us-east-1:{acct}:job/", 0.44),
    ],
    "notebook": [
        ("AmazonSageMaker", "USE1-ml.t3.medium-Notebook", "arn:aws:sagemaker:us-east-1:{acct}:notebook-instance/", 0.05),
    ],
}

# Shared platform pools: (project tag, service, usage type, resource id, median cost, extra tags)
SHARED_LINES = {
    "eks-shared": [
        ("AmazonEC2", "USE1-BoxUsage:m5.4xlarge", "i-0eksnode", 0.77, {"aws_eks_cluster_name": EKS_CLUSTER}),
        ("AmazonEC2", "USE1-BoxUsage:g5.12xlarge", "i-0eksgpu", 5.67, {"aws_eks_cluster_name": EKS_CLUSTER}),
        ("AmazonEC2", "USE1-EBS:VolumeUsage.gp3", "vol-0eks", 0.11, {"aws_eks_cluster_name": EKS_CLUSTER}),
        ("AmazonEKS", "USE1-AmazonEKS-Hours:perCluster", f"arn:aws:eks:us-east-1:{PLATFORM_ACCOUNT}:cluster/{EKS_CLUSTER}", 0.10, {}),
    ],
    "monitoring": [
        ("AmazonEC2", "USE1-BoxUsage:r6i.2xlarge", "i-0mimir", 0.50, {}),
        ("AmazonCloudWatch", "USE1-TimedStorage-ByteHrs", "arn:aws:logs:us-east-1:{acct}:log-group:mimir", 0.08, {}),
    ],
    "feature-store": [
        ("AmazonDynamoDB", "USE1-ReadRequestUnits", "arn:aws:dynamodb:us-east-1:{acct}:table/features", 0.35, {}),
        ("AmazonElastiCache", "USE1-NodeUsage:cache.r6g.xlarge", "arn:aws:elasticache:us-east-1:{acct}:cluster:features", 0.41, {}),
    ],
    "data-lake": [
        ("AmazonS3", "USE1-TimedStorage-ByteHrs", DATA_LAKE_BUCKET, 0.30, {}),
        ("AmazonS3", "USE1-Requests-Tier1", DATA_LAKE_BUCKET, 0.02, {}),
    ],
}

