"""The built-in ``aws`` provider (boto3): networks, instances, buckets, IAM roles, DynamoDB
tables."""
