"""Artifact repositories: where run and model files live (local folder or S3).

>>> import tempfile
>>> from tracking_plugin.artifacts import get_artifact_repository, join_artifact_uri
>>> repo = get_artifact_repository(join_artifact_uri(tempfile.mkdtemp(), "1", "run-id", "artifacts"))
>>> repo.log_bytes(b"0.93", "metrics/accuracy.txt")
>>> [info.path for info in repo.list_artifacts("metrics")]
['metrics/accuracy.txt']

``get_artifact_repository`` picks the implementation by URI scheme: a plain path or
``file://`` URI (:class:`LocalArtifactRepository`), ``s3://bucket/prefix``
(:class:`S3ArtifactRepository`) or a tracking server's ``mlflow-artifacts:/...``
(:class:`~tracking_plugin.artifacts.http.HttpArtifactRepository`). This package imports neither Prefect nor FastAPI.
"""

from tracking_plugin.artifacts.base import ArtifactRepository, get_artifact_repository, join_artifact_uri
from tracking_plugin.artifacts.local import LocalArtifactRepository

__all__ = [
    "ArtifactRepository",
    "LocalArtifactRepository",
    "S3ArtifactRepository",
    "get_artifact_repository",
    "join_artifact_uri",
]


def __getattr__(name: str) -> object:
    # boto3 takes ~0.3 s to import: only load it when S3 is actually used.
    if name == "S3ArtifactRepository":
        from tracking_plugin.artifacts.s3 import S3ArtifactRepository

        return S3ArtifactRepository
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
