"""The generic storage service: buckets, collections, groups and records, as ResourceSpecs."""

from nuages.api.resources import BUCKET, COLLECTION, GROUP, PERMISSION_TREE, RECORD, RESOURCES

__all__ = ["BUCKET", "COLLECTION", "GROUP", "PERMISSION_TREE", "RECORD", "RESOURCES"]
