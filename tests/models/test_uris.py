"""Model URIs: parsing, pass-through resolution, and loading from s3:// (moto over HTTP)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tracking_plugin.entities import Stage
from tracking_plugin.errors import InvalidArgument, ModelLoadRefused, NotFound
from tracking_plugin.models import ModelUriKind, load_model, parse_model_uri, resolve_model_uri, save_model


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("models:/churn/3", {"kind": ModelUriKind.MODELS, "name": "churn", "version": 3}),
        ("models:/churn/Production", {"name": "churn", "stage": Stage.PRODUCTION}),
        ("models:/churn/staging", {"name": "churn", "stage": Stage.STAGING}),
        ("models:/churn/latest", {"name": "churn", "latest": True, "version": None}),
        ("models:/churn@champion", {"name": "churn", "alias": "champion"}),
        ("models:/my model.v2@prod-1", {"name": "my model.v2", "alias": "prod-1"}),
        ("runs:/0123abcd/model", {"kind": ModelUriKind.RUNS, "run_id": "0123abcd", "path": "model"}),
        ("runs:/0123abcd/nested/dir/model", {"run_id": "0123abcd", "path": "nested/dir/model"}),
        ("runs:/0123abcd", {"run_id": "0123abcd", "path": ""}),
        ("s3://bucket/prefix/model", {"kind": ModelUriKind.ARTIFACT}),
        ("file:///srv/model", {"kind": ModelUriKind.LOCAL}),
        ("relative/model", {"kind": ModelUriKind.LOCAL, "path": "relative/model"}),
    ],
)
def test_parse_model_uri(uri, expected):
    parsed = parse_model_uri(uri)
    assert parsed.uri == uri
    for key, value in expected.items():
        assert getattr(parsed, key) == value, key


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("models:/churn", "expected models:/<name>"),
        ("models:/churn/3/extra", "expected models:/<name>"),
        ("models:/churn/Prodution", "neither a version number"),
        ("models:/churn@latest", "reserved"),
        ("models:/a:b/1", "not allowed"),
        ("runs:/", "runs:/<run_id>"),
        ("runs:/bad id!/model", "Invalid run id"),
        ("runs:/abc/../other-run/model", "'..'"),
        ("", "Invalid model URI"),
    ],
)
def test_malformed_model_uris_are_refused_with_the_expected_shape(uri, fragment):
    with pytest.raises(InvalidArgument, match=fragment):
        parse_model_uri(uri)


def test_paths_and_artifact_uris_resolve_to_themselves():
    assert resolve_model_uri("s3://bucket/p/model") == "s3://bucket/p/model"
    assert resolve_model_uri("/srv/models/m") == "/srv/models/m"


def _upload(directory: Path, bucket: str, prefix: str, endpoint: str) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    for path in directory.rglob("*"):
        if path.is_file():
            s3.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(directory).as_posix()}")


def test_load_from_s3(tmp_path, s3_env, s3_bucket, classifier, numeric_frame):
    X, _, _ = numeric_frame
    save_model(classifier, tmp_path / "m", input_example=X.head(2))
    _upload(tmp_path / "m", s3_bucket, "models/churn", s3_env)

    loaded = load_model(f"s3://{s3_bucket}/models/churn")
    np.testing.assert_array_equal(loaded.predict(X), classifier.predict(X))
    assert loaded.metadata.verified is True
    assert loaded.model_uri == f"s3://{s3_bucket}/models/churn"

    dst = tmp_path / "downloads"
    dst.mkdir()
    again = load_model(f"s3://{s3_bucket}/models/churn", dst_path=dst)
    assert Path(again.local_path) == dst / "churn"
    assert (dst / "churn" / "MLmodel").is_file()


def test_tampered_model_in_s3_is_refused(tmp_path, s3_env, s3_bucket, classifier):
    import boto3

    save_model(classifier, tmp_path / "m")
    _upload(tmp_path / "m", s3_bucket, "models/m", s3_env)
    s3 = boto3.client("s3", endpoint_url=s3_env, region_name="us-east-1")
    s3.put_object(Bucket=s3_bucket, Key="models/m/requirements.txt", Body=b"evil-package==6.6.6\n")
    with pytest.raises(ModelLoadRefused, match="'requirements.txt'"):
        load_model(f"s3://{s3_bucket}/models/m")


def test_missing_s3_model_is_not_found(s3_env, s3_bucket):
    with pytest.raises(NotFound, match="No MLmodel file"):
        load_model(f"s3://{s3_bucket}/nothing/here")
