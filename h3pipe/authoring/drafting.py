"""The source file drafted from an :class:`~h3pipe.authoring.inspect.Inspection`:
:func:`to_source_yaml` writes it and :func:`suggest_source_id` names it.

The YAML is written line by line rather than dumped, so every guessed value can carry an
``# inferred:`` comment and every unknown one a commented-out key to fill in.
"""

from __future__ import annotations

import math
import re
import textwrap
from typing import Any

from h3pipe.authoring.inspect import Inspection
from h3pipe.config.schemas import schema
from h3pipe.errors import UsageError


def suggest_source_id(insp: Inspection) -> str:
    """An id that source.v1.json accepts: the STAC collection id, else the file's name."""
    if insp.collection:
        base = insp.collection
    else:
        # The last path part that is not only a pattern: 'tiles/*.tif' gives 'tiles'.
        parts = [p.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0]
                 for p in insp.location.partition("#")[0].split("/")]
        base = next((p for p in reversed(parts) if p.strip("._-")), "")
        base = base.rsplit(".", 1)[0] if "." in base.strip(".") else base
    slug = re.sub(r"[^a-z0-9_.-]+", "-", base.lower()).strip("-_.")[:100]
    return slug or "source"


def check_source_id(source_id: str) -> None:
    """Refuse an id source.v1.json would refuse (before anything is read or written), with
    one it would take."""
    pattern = schema("source")["properties"]["id"]["pattern"]
    if not re.fullmatch(pattern, source_id):
        fixed = re.sub(r"[^a-z0-9_.-]+", "-", source_id.lower()).strip("-_.")[:100]
        raise UsageError(f"--id '{source_id}' is not a valid source id: lower case letters, "
                         "digits, '-', '_' and '.', starting with a letter or digit, at "
                         "most 100", hint=f"e.g. --id {fixed}" if fixed else None)


def to_source_yaml(insp: Inspection, *, source_id: str, location: str) -> str:
    """A source file for ``insp``, with ``# inferred:`` comments on every guessed value."""
    where = (_stac_lines if insp.kind == "stac" else _raster_lines)(insp, location)
    out = [*_preamble(insp, source_id, location), *where, *_value_lines(insp),
           *_provenance_lines(insp, location), *_recommended_lines(insp)]
    return "\n".join(out) + "\n"


def _q(value: Any) -> str:
    """``value`` as one YAML flow scalar."""
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, allow_unicode=True)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _one_line_text(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3].rstrip() + "..."


def _preamble(insp: Inspection, source_id: str, location: str) -> list[str]:
    return ["# Written by 'h3pipe sources inspect' from:", f"#   {location}",
            "# Values marked 'inferred' are guesses from the metadata and a sample of pixels:",
            "# check them before running.",
            "schema_version: 1",
            f"id: {_q(source_id)}",
            f"kind: {'stac' if insp.kind == 'stac' else 'raster'}",
            f"title: {_q(insp.title)}" if insp.title else "# title:",
            f"description: {_q(_one_line_text(insp.description))}" if insp.description
            else "# description:"]


def _stac_lines(insp: Inspection, location: str) -> list[str]:
    api_url = location.partition("#collection=")[0]
    signer = ("  signer: planetary_computer  # inferred: Planetary Computer assets are "
              "signed before reading" if "planetarycomputer.microsoft.com" in api_url
              else "  signer: none  # planetary_computer for Planetary Computer data")
    return ["stac:",
            f"  url: {_q(api_url)}",
            f"  collection: {_q(insp.collection or '')}",
            f"  asset: {_q(insp.asset or 'data')}"
            + ("" if insp.asset else "  # no data asset found: set the asset key"),
            signer]


def _raster_lines(insp: Inspection, location: str) -> list[str]:
    note = (f"  # the file has {insp.band_count} bands; a source reads one"
            if (insp.band_count or 1) > 1 else "")
    return [f"path: {_q(location)}", f"band: 1{note}"]


def _value_lines(insp: Inspection) -> list[str]:
    """Nodata, units, the guess and its reason, and the theme."""
    out = []
    if insp.nodata is not None:
        shown = "NaN" if math.isnan(insp.nodata) else f"{insp.nodata:g}"
        out.append(f"# nodata: {shown} is declared ({insp.dtype}) and used unless set here; "
                   f"NaN is never counted")
    elif insp.dtype:
        out.append(f"# nodata: none declared ({insp.dtype}); set one if a value marks "
                   f"missing data")
    out.append(f"units: {_q(insp.units)}  # inferred ({insp.guess})" if insp.units
               else "# units:")
    out += textwrap.wrap(f"inferred: {insp.guess}: {insp.reason}", width=92,
                         initial_indent="# ", subsequent_indent="#   ")
    out.append(f"measure: {insp.measure}  # inferred ({insp.guess}): what validate checks "
               "statistics against" if insp.measure
               else "# measure: intensive | extensive | categorical (not inferred)")
    out.append(f"theme: {insp.theme}")
    return out


def _provenance_lines(insp: Inspection, location: str) -> list[str]:
    out = [f"license: {_q(insp.license)}" if insp.license else "# license:"]
    prov = []
    if insp.providers:
        prov.append(f"  provider: {_q(', '.join(insp.providers))}")
    url = insp.provider_url or (location.partition("#")[0] if "://" in location else None)
    if url:
        prov.append(f"  url: {_q(url)}")
    out += (["provenance:", *prov] if prov
            else ["# provenance:", "#   provider:", "#   url:", "#   citation:"])
    return out


def _recommended_lines(insp: Inspection) -> list[str]:
    out = ["recommended:",
           f"  stats: [{', '.join(insp.stats)}]  # inferred: usual for {insp.guess}"]
    if insp.resolutions is not None and insp.resolution_m is not None:
        lo, hi = insp.resolutions
        pixel = max(insp.resolution_m)
        out += [f"  # finest: the finest H3 level whose average cell edge is >= 3 pixels "
                f"(3 x {pixel:.4g} m),",
                "  # so each cell holds ~20 pixels or more; coarsest: 5 levels up.",
                f"  resolutions: [{lo}, {hi}]"]
    else:
        out.append("  # resolutions: [MIN, MAX]  (pixel size unknown)")
    return out
