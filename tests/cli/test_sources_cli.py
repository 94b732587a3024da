"""``h3pipe sources``: register, version history, list, show, deactivate, and what
pipelines see of it."""

from __future__ import annotations

import numpy as np

from tests.conftest import raster_source, write_project, write_raster, zonal_pipeline

BBOX = "29.02,-2.18,29.18,-2.02"


def _project(tmp_path):
    data = np.tile(np.arange(250, dtype="float32"), (250, 1))
    tif = write_raster(tmp_path / "data" / "grad.tif", data, west=29.0, north=-1.95, res=0.001)
    proj = write_project(tmp_path / "proj",
                         pipelines={"p": zonal_pipeline("p", "grad", ["mean"])})
    src = tmp_path / "elsewhere" / "grad.yaml"
    src.parent.mkdir()
    src.write_text(raster_source("grad", str(tif)))
    return proj, src


def test_register_list_show_and_versions(tmp_path, cli):
    proj, src = _project(tmp_path)
    r = cli("--project", proj, "sources", "register", src)
    assert r.exit_code == 0 and r.stdout.strip() == "grad: added (version 1)"
    assert cli("--project", proj, "sources", "register", src).stdout.strip() == \
        "grad: unchanged (version 1)"
    src.write_text(src.read_text() + "units: m\n")
    assert cli("--project", proj, "sources", "register", src).stdout.strip() == \
        "grad: updated (version 2)"
    listing = cli("--project", proj, "sources", "list").stdout
    assert "grad" in listing and "raster" in listing and " 2 " in listing
    assert "no sources registered for that theme" in cli(
        "--project", proj, "sources", "list", "--theme", "risk").stdout
    shown = cli("--project", proj, "sources", "show", "grad").stdout
    assert "units: m" in shown and "v1 register" in shown and "v2 register" in shown


def test_a_registered_source_serves_pipelines_without_its_file(tmp_path, cli):
    proj, src = _project(tmp_path)
    # Without registration the pipeline's source is unknown.
    r = cli("--project", proj, "validate")
    assert r.exit_code == 1 and "unknown source 'grad'" in r.stdout
    assert cli("--project", proj, "sources", "register", src).exit_code == 0
    assert cli("--project", proj, "validate").exit_code == 0
    r = cli("--project", proj, "run", "p", "--bbox", BBOX, "--workers", "1")
    assert r.exit_code == 0, r.stderr


def test_deactivated_source_fails_validation_and_runs(tmp_path, cli):
    proj, src = _project(tmp_path)
    cli("--project", proj, "sources", "register", src)
    r = cli("--project", proj, "sources", "deactivate", "grad")
    assert r.exit_code == 0 and "version 2" in r.stdout
    r = cli("--project", proj, "validate")
    assert r.exit_code == 1
    assert "pipelines/p.yaml:" in r.stdout and "source 'grad' is deactivated" in r.stdout
    r = cli("--project", proj, "run", "p", "--bbox", BBOX)
    assert r.exit_code == 2 and "deactivated" in r.stderr and "Traceback" not in r.stderr
    assert "grad" not in cli("--project", proj, "sources", "list").stdout
    assert "no" in cli("--project", proj, "sources", "list", "--all").stdout
    # Registering again brings it back, as a new version.
    assert "updated (version 3)" in cli("--project", proj, "sources", "register", src).stdout
    assert cli("--project", proj, "validate").exit_code == 0


def test_errors_are_one_line(tmp_path, cli):
    proj, src = _project(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: bad\nkind: raster\n")
    r = cli("--project", proj, "sources", "register", bad)
    assert r.exit_code == 2 and "'path' is a required property" in r.stderr
    r = cli("--project", proj, "sources", "show", "nope")
    assert r.exit_code == 2 and r.stderr.startswith("error: no source 'nope'")
    r = cli("--project", proj, "sources", "deactivate", "nope")
    assert r.exit_code == 2
    r = cli("--project", proj, "sources", "register", tmp_path / "missing.yaml")
    assert r.exit_code == 2 and "no such file" in r.stderr


def test_inspect_writes_a_source_that_registers_and_runs(tmp_path, cli):
    proj, src = _project(tmp_path)
    tif = tmp_path / "data" / "grad.tif"
    out = proj / "sources" / "grad.yaml"
    r = cli("--project", proj, "sources", "inspect", tif, "--id", "grad", "-o", out)
    assert r.exit_code == 0 and "sources register" in r.stdout
    assert "kind: raster" in out.read_text()
    assert cli("--project", proj, "validate").exit_code == 0
    assert cli("--project", proj, "sources", "register", out).exit_code == 0
    r = cli("--project", proj, "sources", "inspect", tif, "--format", "json")
    assert r.exit_code == 0 and '"dtype": "float32"' in r.stdout
    r = cli("--project", proj, "sources", "inspect", tmp_path / "nope.tif")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "nope.tif" in r.stderr
