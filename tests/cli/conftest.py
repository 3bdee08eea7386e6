from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.pipeline_campaign import write_campaign


@pytest.fixture(scope="session")
def shared_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic dataset for every fake-trainer campaign (download-data only checks it)."""
    from golfrun.data.synthetic import build_dataset

    root = tmp_path_factory.mktemp("data")
    build_dataset(root)
    return root


@pytest.fixture
def campaign(tmp_path: Path, shared_data: Path) -> Path:
    return write_campaign(tmp_path, shared_data)
