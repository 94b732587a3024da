"""The FATHOM-like stand-in: 39 scenarios x 6 tiles, 8 bands each, where the repository's
source template looks for them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio

from h3pipe.config.project import ProjectConfig
from h3pipe.demo import fathom
from h3pipe.planning.prepare import scenario_source

ROOT = Path(__file__).resolve().parents[2]


def test_the_stand_in_has_every_scenario_the_source_declares(tmp_path, monkeypatch):
    paths = fathom.generate(tmp_path / "fathom", (28.86, -2.84, 30.90, -1.05))
    assert len(paths) == 39 * 6 and all(p.exists() for p in paths)
    monkeypatch.setenv("FATHOM", str(tmp_path / "fathom"))
    sources, _, _ = ProjectConfig(ROOT).load()
    source = sources["fathom-flood"]
    scenarios = source.dimensions.scenarios()
    assert len(scenarios) == 39
    assert {sc.id for sc in scenarios} == {fathom.scenario_id(*s) for s in fathom.scenarios()}
    for sc in scenarios:  # the template finds exactly the 6 tiles of each scenario
        found = sorted((tmp_path / "fathom").glob(
            scenario_source(source, sc).location.split("fathom/", 1)[1]))
        assert len(found) == 6, sc.id
    undefended = next(p for p in paths if p.parent.name == "fluvial_undefended-2080-ssp585"
                      and p.name == "S02E029.tif")
    with rasterio.open(undefended) as ds:
        assert ds.count == 8 and ds.nodata == fathom.NODATA
        data = ds.read(masked=True)
    # Deeper with the return period wherever it is wet at 1-in-5.
    wet = data[0] > 0
    assert wet.any() and np.all(np.diff(data[:, wet], axis=0) >= 0)


def test_existing_files_are_kept(tmp_path):
    first = fathom.generate(tmp_path, (29.1, -1.9, 29.2, -1.8))
    stamp = first[0].stat().st_mtime_ns
    fathom.generate(tmp_path, (29.1, -1.9, 29.2, -1.8))
    assert first[0].stat().st_mtime_ns == stamp
